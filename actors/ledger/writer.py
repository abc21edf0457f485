"""The ledger's writer: the only actor that writes, in group commits.

Every write waiting in the mailbox goes into one transaction, which is
committed before any of them is acknowledged; other messages are served in
their mailbox order between batches, so a `SumWindows` counts exactly the
writes sent before it. Persistence is the `Store`'s; this actor only orders,
batches and answers.
"""

import logging
import time
from typing import Any, Awaitable, Callable

import anyio

from actors.bus import Publish
from actors.ledger.messages import (
    AckAlert,
    ApplyPrices,
    CloseHold,
    Compact,
    DeleteBudget,
    ExpireKeys,
    FollowTotals,
    GetTotals,
    LoadBudgets,
    LoadHolds,
    LoadPrices,
    PriceHistory,
    Denial,
    Refused,
    ReleaseElsewhere,
    Repeat,
    ReplaySpool,
    SaveAlert,
    SaveBudget,
    Settled,
    SourcePrice,
    SumWindows,
    Write,
    WriteHold,
    WriteUsage,
)
from actors.ledger.store import Store, StoreBroken, StoreFull, StoreUnreachable, totals_of
from actors.runtime import Actor, Mailbox, Ref, fail_reply
from budgetd.clock import SYSTEM, Clock
from budgetd.debug import debug_log
from budgetd.periods import from_us
from budgetd.protocol import OpError

log = logging.getLogger("budgetd.ledger")

MAX_BATCH = 1024
WRITES = (WriteUsage, WriteHold, CloseHold)  # batched into one transaction
_REOPENING = "the ledger is reopening its database; nothing was recorded, retry"
_BROKE = "the connection to the ledger's database broke while it committed, so this write may or may not have "


def _ambiguous(w: Write) -> str:
    """What to do about a write whose commit nobody can confirm."""
    if type(w) is CloseHold:
        return _BROKE + "been applied; nothing needs retrying"
    key = w.row.idempotency_key if type(w) is WriteUsage else w.idempotency_key
    if key is not None:
        return _BROKE + "been recorded; retry with the same idempotency key (a recorded one is recognised)"
    return (_BROKE + "been recorded, and it carried no idempotency key: look for it (`budget usage`) before "
            "you send it again, or it may be counted twice")
_FULL = ("the ledger's disk is full (or daemon.max_ledger_mb is reached): nothing was recorded; "
         "retry once space is freed")


class Ledger(Actor):
    name = "ledger"

    def __init__(self, store: Store, bus: Ref | None = None, clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.store = store
        self.bus = bus
        self.clock = clock
        s = store
        # Everything but writes and totals: one store call each, answered in mailbox order.
        self.handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            LoadBudgets: lambda m: s.load_budgets(),
            SaveBudget: lambda m: s.save_budget(m.name, m.spec, m.origin, self.clock.now_us()),
            DeleteBudget: lambda m: s.delete_budget(m.name),
            SumWindows: lambda m: s.window_sums(m.sums),
            Compact: lambda m: s.compact(m.before),
            ExpireKeys: lambda m: s.expire_keys(m.before),
            LoadPrices: lambda m: s.load_prices(),
            ApplyPrices: lambda m: s.apply_prices(m),
            PriceHistory: lambda m: s.price_history(m.model),
            SourcePrice: lambda m: s.source_price(m.model),
            SaveAlert: lambda m: s.save_alert(m),
            AckAlert: lambda m: s.ack_alert(m.alert_id, m.by, m.at),
            LoadHolds: lambda m: s.load_holds(m.now),
            ReplaySpool: lambda m: s.replay(m.records),
            ReleaseElsewhere: lambda m: s.release_elsewhere(m.ids, m.components, m.now),
        }

    async def started(self) -> None:
        await self.store.open()

    async def stopped(self) -> None:
        await self.store.close()

    async def run(self, mailbox: Mailbox) -> None:
        while True:
            try:
                first = await mailbox.receive()
            except anyio.EndOfStream:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(mailbox.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            started = time.perf_counter()
            await self._process(batch)
            debug_log("ledger", "batch of %d in %.2f ms", len(batch), (time.perf_counter() - started) * 1e3)

    async def _process(self, batch: list[Any]) -> None:
        """Writes go in one transaction; other messages are served in their mailbox order. If the store
        breaks, what the batch still holds is refused (`unavailable`, settled as failed) before the
        supervisor reopens it: taken from the mailbox, it would otherwise never be answered."""
        writes: list[Write] = []
        for at, message in enumerate(batch):
            kind = type(message)
            if kind in WRITES:
                writes.append(message)
                continue
            if kind is GetTotals:
                message.reply.set(totals_of(self.store.totals()))
                continue
            if kind is FollowTotals:
                self.store.follow(message.others, message.mine)
                continue
            if writes:
                try:
                    await self._write(writes)  # answers its writes, whatever happens
                except BaseException:
                    self._refuse(batch[at:], OpError("unavailable", _REOPENING))
                    raise
                writes = []
            handler = self.handlers.get(kind)
            if handler is None:
                fail_reply(message, OpError("internal", f"the ledger does not handle {kind.__name__}"))
                continue
            try:
                message.reply.set(await handler(message))
            except StoreFull:
                fail_reply(message, OpError("unavailable", _FULL))
            except StoreUnreachable as exc:
                fail_reply(message, OpError("unavailable", f"the ledger could not answer ({exc})"
                                            + ("" if exc.lasting else "; retry shortly")))
            except StoreBroken as exc:
                fail_reply(message, OpError("unavailable", f"the ledger could not answer ({exc}); retry"))
                self._refuse(batch[at + 1:], OpError("unavailable", _REOPENING))
                raise  # the supervisor reopens the database
            except Exception as exc:
                fail_reply(message, exc)
        if writes:
            await self._write(writes)

    def _refuse(self, messages: list[Any], error: OpError) -> None:
        """Answer messages the ledger will not serve with `error`; writes are settled as failed."""
        writes = [m for m in messages if type(m) in WRITES]
        for message in messages:
            fail_reply(message, error)
        self._settle(writes, [error] * len(writes), ["failed"] * len(writes))

    async def _write(self, writes: list[Write]) -> None:
        try:
            answers = await self.store.append(writes, self.clock.now_us())
        except StoreUnreachable as exc:
            if exc.committing:
                # Committed or not, nobody can say: the writes stay charged (a budget counts them until the
                # ledger is read again at a restart, which errs on the side of the limit), and a retry with
                # the same key is recognised if they were committed.
                for w in writes:
                    fail_reply(w, OpError("unavailable", f"{_ambiguous(w)} ({exc})"))
                self._settle(writes, [None] * len(writes), ["unsure"] * len(writes))
            else:
                self._refuse(writes, OpError("unavailable", f"the ledger could not write ({exc}); nothing was "
                                                            "recorded" + ("" if exc.lasting else ", retry shortly")))
            log.warning("ledger unreachable: %d writes refused (%s)", len(writes), exc)
            return  # the store reconnects at its next call: no restart
        except BaseException as exc:
            full = isinstance(exc, StoreFull)
            error = OpError("unavailable", _FULL if full else
                            f"the ledger could not write ({exc}); nothing was recorded, retry")
            self._refuse(writes, error)
            if full:
                # The transaction was rolled back and the connection is fine: the next batch simply tries
                # again, and succeeds once space returns. No restart, no lost acknowledgement.
                log.warning("ledger full: %d writes refused", len(writes))
                return
            raise  # the supervisor reopens the database
        outcomes = [_outcome(a) for a in answers]
        answers = [a.denial if type(a) is Refused else a for a in answers]
        if self.bus is not None:
            self._publish_recorded(writes, answers, outcomes)
        self._settle(writes, answers, outcomes)
        for w, answer, outcome in zip(writes, answers, outcomes):
            if w.reply is None or (outcome == "duplicate" and w.write_id is not None and w.settle is not None):
                continue  # answered by its settler
            if isinstance(answer, OpError):
                w.reply.fail(answer)
            else:
                w.reply.set(answer)

    @staticmethod
    def _settle(writes: list[Write], answers: list[Any], outcomes: list[str]) -> None:
        """One `Settled` per sender of the batch, naming its writes applied, duplicate (with their first
        answers, which the sender gives), failed, refused, and unsure (lost in their commit)."""
        by_sender: dict[int, tuple[Ref, Settled]] = {}
        for w, answer, outcome in zip(writes, answers, outcomes):
            if w.write_id is None or w.settle is None:
                continue
            entry = by_sender.get(id(w.settle))
            if entry is None:
                entry = by_sender[id(w.settle)] = (
                    w.settle, Settled(applied=[], duplicates=[], failed=[], refused=[], unsure=[]))
            settled = entry[1]
            if outcome == "applied":
                settled.applied.append(w.write_id)
            elif outcome == "duplicate":
                settled.duplicates.append(Repeat(w.write_id, answer, w.reply))
            elif outcome == "refused":
                settled.refused.append(Denial(w.write_id, answer))
            elif outcome == "unsure":
                settled.unsure.append(w.write_id)
            else:
                settled.failed.append(w.write_id)
        for ref, settled in by_sender.values():
            try:
                ref.deliver(settled)  # never refused as busy: charges of writes not applied must be taken back
            except OpError:  # shutting down: the allocator rebuilds its state from the ledger at start
                for repeat in settled.duplicates:
                    if repeat.reply is not None:
                        repeat.reply.set(repeat.answer)

    def _publish_recorded(self, writes: list[Write], answers: list, outcomes: list[str]) -> None:
        """`usage.recorded` for every new record, once it is committed."""
        events = []
        for w, answer, outcome in zip(writes, answers, outcomes):
            if outcome != "applied" or type(w) is not WriteUsage:
                continue
            r = w.row
            events.append(("usage.recorded", {
                "record_id": answer.record_id, "ts": from_us(r.ts), "component": r.component, "model": r.model,
                "provider": r.provider, "tier": r.tier, "context_id": r.context_id, "task_type": r.task_type,
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                "cache_read_tokens": r.cache_read_tokens, "cache_write_tokens": r.cache_write_tokens,
                "cache_write_1h_tokens": r.cache_write_1h_tokens, "reasoning_tokens": r.reasoning_tokens,
                "audio_input_tokens": r.audio_input_tokens, "audio_output_tokens": r.audio_output_tokens,
                "service_tier": r.service_tier, "web_search_requests": r.web_search_requests,
                "cost_usd": answer.cost_usd, "priced": r.priced,
            }))
        if not events:
            return
        try:
            self.bus.tell(Publish(events=events))  # type: ignore[union-attr]
        except OpError:
            pass  # a full or closed bus loses events, never records


def _outcome(answer: Any) -> str:
    if isinstance(answer, OpError):
        return "failed"
    if type(answer) is Refused:
        return "refused"
    return "duplicate" if getattr(answer, "duplicate", False) else "applied"
