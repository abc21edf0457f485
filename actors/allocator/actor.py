"""The allocator: budgets, window counters, holds, admission and routing.

Decisions are pure CPU on the allocator's own state: nothing awaits between
reading a counter and updating it, so check-then-reserve is atomic without
locks. Every write passes through here on its way to the ledger: the
allocator prices it, charges every matching budget at once (so a concurrent
reserve sees it), and hands the row to the ledger, which answers the client
once the row is committed and then tells the allocator which writes of its
batch were not applied (duplicates, failures), whose charges it takes back.

The allocator awaits the ledger only to change budgets (rare, admin ops):
while it does, its mailbox holds every other message, so a budget's counters
are loaded from exactly the writes sent before it and charged with every
write after it.
"""

import collections
import itertools
import secrets
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import anyio
import msgspec

from actors.allocator import routing
from actors.allocator.admission import Admission, AdmissionRules, Assessment, call_time, decision
from actors.allocator.budgets import Attrs, Budget, Budgets
from actors.allocator.forecast import forecast
from actors.allocator.holds import Charge, Hold, Holds
from actors.allocator.messages import (
    BudgetDeleteMsg,
    BudgetsNow,
    BudgetGetMsg,
    BudgetListMsg,
    BudgetSetMsg,
    CheckMsg,
    CommitMsg,
    CountHolds,
    FleetView,
    Following,
    ModelKeyMsg,
    ForecastsMsg,
    RecordUsage,
    ReleaseMsg,
    ReserveMsg,
    RouteMsg,
    StatesMsg,
)
from actors.allocator.signals import Signals
from actors.ledger import (
    ALL_TIME,
    CloseHold,
    Counted,
    DeleteBudget,
    HardCharge,
    HoldRow,
    LoadBudgets,
    LoadHolds,
    ReleaseElsewhere,
    SaveBudget,
    Settled,
    SumWindows,
    UsageRow,
    WindowSum,
    WriteHold,
    WriteUsage,
    counter_key,
    window_start,
)
from actors.prices import GetBook, NewBook
from actors.runtime import Actor, Mailbox, Ref, ReplyTo, answering
from budgetd.clock import SYSTEM, Clock, HeldClock
from budgetd.model import (
    BudgetInvalid,
    BudgetSpec,
    BudgetState,
    Decision,
    Estimate,
    PriceEntry,
    Suggestion,
    Usage,
    check_budget,
    nanos,
    parts_problem,
)
from budgetd.periods import from_us
from budgetd.pricing import Billed, TierRules, UnpricedPolicy, price_call
from budgetd.protocol import BudgetGetResult, OpError, Released, RouteResult

_json = msgspec.json.Encoder()
_spec_decoder = msgspec.json.Decoder(BudgetSpec)
_estimate_decoder = msgspec.json.Decoder(Estimate)
_attrs_decoder = msgspec.json.Decoder(dict[str, str | None])
_key_decoder = msgspec.json.Decoder(list[str])
MAX_REMEMBERED = 100_000
_KEEP_WINDOWS_US = 2 * 86_400_000_000  # counters of windows that ended longer ago are forgotten


class Allocator(Actor):
    name = "allocator"

    def __init__(
        self,
        ledger: Ref,
        prices: Ref,
        tiers: TierRules,
        unpriced: UnpricedPolicy,
        rules: AdmissionRules = AdmissionRules(),
        config_budgets: list[BudgetSpec] | None = None,
        timeout: float = 10.0,
        bus: Ref | None = None,
        anomaly_factor: float = 3.0,
        clock: Clock = SYSTEM,
        fleet: Ref | None = None,
    ) -> None:
        super().__init__()
        self.clock = HeldClock(clock)  # held at one instant while a message is handled (see `handle`)
        clock = self.clock
        self.ledger = ledger
        self.prices = prices
        self.tiers = tiers
        self.unpriced = unpriced
        self.rules = rules
        self.config_budgets = list(config_budgets or [])
        self.timeout = timeout
        self.budgets = Budgets()
        self.admission = Admission(self.budgets, tiers, unpriced, rules, clock)
        self.signals = Signals(bus, anomaly_factor, clock)
        self.holds = Holds()
        # A denial holds nothing and is not written: its key answers the same denial while the daemon runs.
        self._denied_keys: collections.OrderedDict[str, tuple[bytes | None, Decision]] = collections.OrderedDict()
        self._committed: collections.OrderedDict[str, tuple[str, Usage]] = collections.OrderedDict()
        # Keyed denials the ledger has not yet said were the key's first answer (see `_ask_ledger_first`).
        self._pending_denials: dict[str, tuple[bytes | None, Decision]] = {}
        self._unsettled: dict[int, _Pending] = {}  # what to undo when the ledger says a write was not applied
        # Counters charged since the last drain, and the records' states to fill from them (see `drained`).
        self._touched: dict[int, _Touched] = {}
        self._unfilled: list[tuple[list[BudgetState], list[tuple[Budget, tuple[str, ...], Any, Any]]]] = []
        self._next_window_end: int | None = None  # when holds next move to a budget's new window
        self._counters: dict[tuple, _Found] = {}  # see `_counters_of`
        self._chat: list[PriceEntry] | None = None
        self._candidates: routing.Candidates | None = None  # of the current book, built on its first denial
        # On a fleet (`fleet`: the node's FleetSync, told the budgets' version this node binds by): what the
        # other nodes spent (as last counted in, by counter and window) and hold (as added to the counters of
        # the current windows), and the budgets' version this node has.
        self.fleet = fleet
        self._others_spent: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._others_held: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._budgets_version: int | None = None
        self._recount = False  # a write was lost in its commit: the counters are read again when the ledger can
        self.handlers: dict[type, Callable[[Any], Any]] = {
            RecordUsage: self._record,
            ReserveMsg: self._reserve,
            CheckMsg: lambda m: m.reply.set(self._check(m.estimate)),
            CommitMsg: self._commit,
            ReleaseMsg: self._release,
            Settled: self._settled,
            StatesMsg: lambda m: m.reply.set(self._now(m.per_budget)),
            ForecastsMsg: lambda m: m.reply.set(self._now(m.per_budget).forecasts),
            CountHolds: lambda m: m.reply.set(len(self.holds)),
            ModelKeyMsg: lambda m: m.reply.set(self._model_key(m.name)),
            RouteMsg: lambda m: m.reply.set(self._route(m)),
            BudgetGetMsg: self._budget_get,
            BudgetListMsg: lambda m: m.reply.set([b.spec for _, b in sorted(self.budgets.items())]),
            NewBook: self._new_book,
            FleetView: self._fleet_view,
            # These await the ledger: the mailbox waits meanwhile (see above).
            BudgetSetMsg: answering(self._budget_set),
            BudgetDeleteMsg: answering(self._budget_delete),
        }
        # What only reads: sent to an idle allocator, it is answered in the sender's own call. Writes go through
        # the mailbox even then: a drain charges many at once and judges each counter they touched once.
        self.immediate = frozenset({CheckMsg, RouteMsg, StatesMsg, ForecastsMsg, CountHolds, ModelKeyMsg,
                                    BudgetGetMsg, BudgetListMsg})

    @property
    def book(self) -> Any:
        return self.admission.book

    def chat_models(self) -> list[PriceEntry]:
        if self._chat is None:
            self._chat = self.book.chat_models()
        return self._chat

    def candidates(self) -> routing.Candidates:
        if self._candidates is None:
            self._candidates = routing.Candidates(self.book, self.chat_models())
        return self._candidates

    # -- life ---------------------------------------------------------------------

    async def started(self) -> None:
        self.admission.book = await self.prices.ask(lambda reply: GetBook(reply=reply), self.timeout)
        rows = await self.ledger.ask(lambda reply: LoadBudgets(reply=reply), self.timeout)
        specs = {spec.name: spec for spec in (_spec_decoder.decode(row.spec) for row in rows)}
        for spec in self.config_budgets:
            if specs.get(spec.name) != spec:
                await self._save(spec, "config")
            specs[spec.name] = spec
        budgets = {name: Budget.of(spec, self._model_key, self.rules.max_counters_per_budget)
                   for name, spec in specs.items()}
        await self._load_counters(list(budgets.values()))
        self.budgets.update(budgets)
        now = self.clock.now_us()
        for row in await self.ledger.ask(lambda reply: LoadHolds(now=now, reply=reply), self.timeout):
            self._reopen(row)

    def _reopen(self, row: HoldRow) -> None:
        """A hold the ledger keeps, charged again on the current window of every budget that covers it."""
        attrs = _attrs_decoder.decode(row.attrs)
        now = self.clock.now_us()
        charges = [Charge(budget.counter(key, budget.window_at(now), capped=False), row.cost_nanos, row.tokens,
                          budget, key) for budget, key in self.budgets.matching(attrs)]
        self.holds.add(Hold(row.id, charges, row.expires_at, _estimate_decoder.decode(row.estimate), attrs,
                            row.cost_nanos, row.tokens))

    def _roll_windows(self, now_us: int) -> None:
        """Once a budget's window has ended, the open holds counted in it count in its next one (they may still
        be spent, and are charged where they are spent). Looked at again when the next window of any budget
        ends."""
        if self._next_window_end is not None and now_us < self._next_window_end:
            return
        self.holds.roll(lambda c: c.budget.counter(c.key, c.budget.window_at(now_us), capped=False))
        ends = [end for b in self.budgets.values() if (end := b.window_at(now_us).end_us) is not None]
        self._next_window_end = min(ends, default=None)
        if self._next_window_end is None:
            self._next_window_end = now_us + 3_600_000_000  # only total budgets: look again in an hour

    async def run(self, mailbox: Mailbox) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick)
            await super().run(mailbox)
            tg.cancel_scope.cancel()

    async def _tick(self) -> None:
        """Expire holds even when nothing else happens, and forget old windows."""
        while True:
            await anyio.sleep(1.0)
            now = self.clock.now_us()
            self._expire(now)
            self._roll_windows(now)  # before pruning: a counter still holding is never forgotten
            for budget in self.budgets.values():
                budget.prune(now, _KEEP_WINDOWS_US)
            self._counters.clear()  # it may hold counters just forgotten
            self.signals.prune(now)

    async def handle(self, message: Any) -> None:
        # One instant for the whole message: holds expired and rolled into new windows by it are those the
        # decision sees (else a window could end between the roll and the weighing).
        try:
            self._hold_clock()
            await super().handle(message)
        finally:
            self.clock.held = None

    def handle_sync(self, message: Any) -> None:
        try:
            self._hold_clock()
            super().handle_sync(message)
        finally:
            self.clock.held = None

    def _hold_clock(self) -> None:
        clock = self.clock
        clock.held = None
        now = clock.held = clock.now_us()
        self._expire(now)
        self._roll_windows(now)

    def awaiting(self) -> None:
        self.clock.held = None  # time goes on while the handler awaits
        self.drained()  # before anything else runs: the writes told so far carry their budget states

    def drained(self) -> None:
        """The budget states of the records charged and the reserves held since the last drain, once per
        counter however many it took: each answer gets them (as they are after its whole batch), and the
        signals judge each charged counter once. The ledger reads a write's states only once it has taken
        the write from its mailbox, which it cannot do before this actor yields: here, or above."""
        if not self._unfilled:
            return
        now_states: dict[int, BudgetState] = {}
        for key, t in self._touched.items():
            state = now_states[key] = t.budget.state(t.key, t.window, t.counter)
            self.signals.charged(t.budget, t.key, state, t.before, t.window, t.counter, t.latest_us)
        for states, found in self._unfilled:
            for budget, key, win, counter in found:
                state = now_states.get(id(counter))
                if state is None:
                    state = now_states[id(counter)] = budget.state(key, win, counter)
                states.append(state)
        self._touched.clear()
        self._unfilled.clear()

    def _expire(self, now_us: int) -> None:
        """Holds whose time is up are released; the ledger forgets them too (and never rebuilds an expired
        one, so a lost close is harmless)."""
        gone = self.holds.expire(now_us)
        if gone:
            try:
                self.ledger.tell(CloseHold(ids=[hold.id for hold in gone]))
            except OpError:
                pass

    def _new_book(self, message: NewBook) -> None:
        self.admission.book = message.book
        self._chat = self._candidates = None
        self._counters.clear()  # the models' price keys (what scopes match on) may have changed

    # -- budgets --------------------------------------------------------------------

    async def _save(self, spec: BudgetSpec, origin: str) -> None:
        await self.ledger.ask(
            lambda reply: SaveBudget(spec=_json.encode(spec), name=spec.name, origin=origin, reply=reply),
            self.timeout,
        )

    async def _load_counters(self, budgets: list[Budget]) -> None:
        """Counters of each budget's current window, from the ledger's sums."""
        now = self.clock.now_us()
        sums = []
        for budget in budgets:
            win = budget.window_at(now)
            sums.append(WindowSum(budget=budget.name, exact=budget.exact, star=budget.star,
                                  start=win.start_us, end=win.end_us))
        if not sums:
            return
        found = await self.ledger.ask(lambda reply: SumWindows(sums=sums, reply=reply), self.timeout)
        for budget in budgets:
            win = budget.window_at(now)
            if self.fleet is not None:
                self._forget_others(budget.name)
            for total in found.get(budget.name, ()):
                if total.nanos or total.tokens:
                    counter = budget.counter(tuple(total.key), win, capped=False)
                    counter.spent_nanos += total.nanos
                    counter.spent_tokens += total.tokens
                if self.fleet is not None:  # the others' spend is in the records summed: what they add later is not
                    self._others_spent[(budget.name, counter_key(tuple(total.key)), window_start(win.start_us))] = (
                        total.others_nanos, total.others_tokens)

    def _forget_others(self, name: str) -> None:
        for seen in (self._others_spent, self._others_held):
            for slot in [slot for slot in seen if slot[0] == name]:
                del seen[slot]

    def _model_key(self, name: str) -> str:
        resolved = self.book.resolve(name)
        return name if resolved is None else resolved.entry.model

    def _budget(self, name: str) -> Budget:
        budget = self.budgets.get(name)
        if budget is None:
            raise OpError("not_found", f"no budget named {name!r}; see `budget budgets list`", "$.name")
        return budget

    def _budget_get(self, message: BudgetGetMsg) -> None:
        budget = self._budget(message.name)
        states, more = budget.current_states(self.clock.now_us(), message.limit, message.after)
        message.reply.set(BudgetGetResult(budget=budget.spec, states=states,
                                          next=None if more is None else _json.encode(list(more)).decode()))

    async def _budget_set(self, message: BudgetSetMsg) -> BudgetSpec:
        spec = message.spec
        try:
            check_budget(spec)
        except BudgetInvalid as exc:
            raise OpError("invalid", str(exc), exc.field) from None
        await self._save(spec, "api")
        await self._install(spec)
        return spec

    async def _install(self, spec: BudgetSpec) -> None:
        """A budget set or replaced, its counters loaded from the ledger."""
        budget = Budget.of(spec, self._model_key, self.rules.max_counters_per_budget)
        await self._load_counters([budget])
        old = self.budgets.get(spec.name)
        if old is not None:
            self.holds.drop(old.counters.values())
        self._hold_in(budget)
        self.budgets[spec.name] = budget
        self._counters.clear()
        self._next_window_end = None  # its windows may end sooner than any other's

    def _hold_in(self, budget: Budget) -> None:
        """Every open hold `budget` covers counts in its current window: a budget set (or replaced) while
        reservations are open holds them as every other budget does."""
        win = budget.window_at(self.clock.now_us())
        for hold in self.holds:
            key = budget.key_of(hold.attrs)
            if key is not None:
                self.holds.charge(hold, budget.counter(key, win, capped=False), budget, key)

    async def _budget_delete(self, message: BudgetDeleteMsg) -> bool:
        name = message.name
        deleted = await self.ledger.ask(lambda reply: DeleteBudget(name=name, reply=reply), self.timeout)
        return self._remove(name) or bool(deleted)

    def _remove(self, name: str) -> bool:
        budget = self.budgets.pop(name, None)
        self._counters.clear()
        self._forget_others(name)
        if budget is not None:
            self.holds.drop(budget.counters.values())
        return budget is not None

    # -- the fleet ------------------------------------------------------------------

    async def _fleet_view(self, m: FleetView) -> None:
        """What the other nodes did: budgets they changed are read again, what they spent since this node
        last looked is added to the counters, and what they hold replaces what they held."""
        if m.budgets_version != self._budgets_version:  # always at the first view: a change may be in between
            try:
                await self._reload_budgets()
            except OpError:
                return  # the ledger could not answer: the next view tries again
            self._budgets_version = m.budgets_version
            try:
                self.fleet.tell(Following(budgets_version=m.budgets_version))  # type: ignore[union-attr]
            except OpError:
                pass  # the next view tells it again
        if self._recount:
            try:
                for spec in [b.spec for b in self.budgets.values()]:
                    await self._install(spec)
            except OpError:
                return
            self._recount = False
        for rid in m.released:  # released on another node: the database has let them go already
            self.holds.release(rid)
        now = self.clock.now_us()
        for c in m.spent:
            budget = self.budgets.get(c.budget)
            if budget is None:
                continue
            win = budget.window_at(now)
            slot = (c.budget, c.key, c.window_start)
            seen_nanos, seen_tokens = self._others_spent.get(slot, (0, 0))
            if c.window_start != window_start(win.start_us) or (c.nanos <= seen_nanos and c.tokens <= seen_tokens):
                continue
            counter = budget.counter(tuple(_key_decoder.decode(c.key)), win, capped=False)
            counter.spent_nanos += max(0, c.nanos - seen_nanos)
            counter.spent_tokens += max(0, c.tokens - seen_tokens)
            self._others_spent[slot] = (max(c.nanos, seen_nanos), max(c.tokens, seen_tokens))
        held: dict[tuple[str, str, int], tuple[int, int]] = {}
        for c in m.held:
            budget = self.budgets.get(c.budget)
            if budget is not None:
                held[(c.budget, c.key, window_start(budget.window_at(now).start_us))] = (c.nanos, c.tokens)
        for slot in held.keys() | self._others_held.keys():
            nanos, tokens = held.get(slot, (0, 0))
            was_nanos, was_tokens = self._others_held.get(slot, (0, 0))
            budget = self.budgets.get(slot[0])
            if (nanos, tokens) == (was_nanos, was_tokens) or budget is None:
                continue
            key = tuple(_key_decoder.decode(slot[1]))
            start = None if slot[2] == ALL_TIME else slot[2]
            counter = budget.counters.get((key, start))
            if counter is None:
                if slot not in held:
                    continue  # forgotten with its window
                counter = budget.counter(key, budget.window_at(now), capped=False)
            counter.reserved_nanos += nanos - was_nanos
            counter.reserved_tokens += tokens - was_tokens
        self._others_held = held

    async def _reload_budgets(self) -> None:
        """The budgets as the ledger has them now: those another node set, replaced or deleted follow."""
        rows = await self.ledger.ask(lambda reply: LoadBudgets(reply=reply), self.timeout)
        specs = {spec.name: spec for spec in (_spec_decoder.decode(row.spec) for row in rows)}
        for name in [name for name in self.budgets if name not in specs]:
            self._remove(name)
        for spec in specs.values():
            old = self.budgets.get(spec.name)
            if old is None or old.spec != spec:
                await self._install(spec)

    def _now(self, per_budget: int) -> BudgetsNow:
        """Each budget's current window: its `per_budget` most used keys, their forecasts (budgets with a
        limit), and how many keys were left out. Bounded work and answers, however many keys there are."""
        now = self.clock.now_us()
        states, forecasts, omitted = [], [], 0
        for name, budget in sorted(self.budgets.items()):
            win, keys, left_out = budget.busiest(now, per_budget)
            omitted += left_out
            limited = (budget.limit_nanos is not None or budget.limit_tokens is not None) and budget.spec.enabled
            for key in keys:
                counter = budget.peek(key, win)
                states.append(budget.state(key, win, counter))
                if limited:
                    forecasts.append(forecast(budget, key, win, counter, self.signals.burn.get((name, key)), now))
        return BudgetsNow(states=states, forecasts=forecasts, omitted=omitted)

    # -- admission ------------------------------------------------------------------

    def _verdict(self, est: Estimate, a: Assessment) -> tuple[str, Suggestion | None]:
        """The final action, with a suggestion where a cheaper capable model fits."""
        action = a.action
        suggestion = None
        if action in ("downgrade", "deny") and a.reasons:
            suggestion = routing.suggest(self.admission, est, a, self.candidates())
            if action == "downgrade" and suggestion is None:
                action = "warn"
                a.reasons.append("no cheaper model with the same capabilities fits; proceed with care")
        return action, suggestion

    def _check(self, est: Estimate) -> Decision:
        a = self.admission.assess(est)
        result = decision(a, *self._verdict(est, a))
        self.signals.decided(est, result)
        return result

    def _reserve(self, message: ReserveMsg) -> None:
        key = message.idempotency_key
        if key is not None:
            known = self._denied_keys.get(key) or self._pending_denials.get(key)
            if known is not None:
                digest, first = known
                if digest != message.payload_hash:
                    raise OpError("idempotency_conflict", f"idempotency key {key!r} was used before for a "
                                  "different request", "$.idempotency_key")
                again = msgspec.structs.replace(first, duplicate=True)
                if key in self._denied_keys:
                    message.reply.set(again)
                else:  # the ledger has yet to say whether the key's first answer was that denial
                    self._ask_ledger_first(message, again)
                return
        est = message.estimate
        a = self.admission.assess(est, for_hold=True)
        action, suggestion = self._verdict(est, a)
        if action == "deny":
            result = decision(a, action, suggestion)
            self.signals.decided(est, result)
            if key is None:
                message.reply.set(result)
                return
            self._pending_denials[key] = (message.payload_hash, result)
            self._ask_ledger_first(message, result, denied=key)
            return
        # Anything but a plain allow (a warning, a downgrade, a critical call past a hard limit) holds one
        # call, as a reserve does: a lease is for calls every budget has room for.
        try:
            calls = self._room_for(a, est.component, message.calls if action == "allow" else 1)
        except OpError as full:
            if key is None:
                raise
            self._ask_ledger_first(message, full)  # a repeat gets its first holds, whatever the caps say now
            return
        now = self.clock.now_us()
        expires = now + int((message.ttl_s or self.rules.default_ttl_s) * 1e6)
        base = "r-" + secrets.token_hex(8)
        ids = [base] if calls == 1 and message.calls == 1 else [f"{base}.{n}" for n in range(calls)]
        opened = [Hold(i, [Charge(m.counter, a.cost_nanos, a.tokens, m.budget, m.key) for m in a.matches], expires,
                       est, a.attrs, a.cost_nanos, a.tokens) for i in ids]
        # A plain allow tells no signal: its budget states are built once the drain ends, with the others'.
        later: list[BudgetState] | None = [] if action == "allow" else None
        result = decision(a, action, suggestion, later, reservation_id=ids[0], expires_at=from_us(expires),
                          reservation_ids=ids if message.calls > 1 else [])
        if later is None:
            self.signals.decided(est, result)
        else:
            self._unfilled.append((later, a.matches))
        estimate, attrs = _json.encode(est), _json.encode(a.attrs)
        rows = [HoldRow(id=i, created_at=now, expires_at=expires, component=est.component, estimate=estimate,
                        attrs=attrs, cost_nanos=a.cost_nanos, tokens=a.tokens) for i in ids]
        hard = self._hard(a, calls) if self.fleet is not None else []  # before the holds count on the counters
        for hold in opened:
            self.holds.add(hold)
        self._send(lambda write_id, settle: WriteHold(
            holds=rows, decision=result, idempotency_key=key, payload_hash=message.payload_hash, reply=message.reply,
            write_id=write_id, settle=settle, hard=hard),
            _Pending(opened=opened, key=None if key is None else (key, message.payload_hash)))

    @staticmethod
    def _hard(a: Assessment, calls: int) -> list[HardCharge]:
        """What each hold of a reserve puts on hard budgets, for the fleet's database to admit against every
        node: bounded where this node saw room for all `calls` (a call it admits past a limit is counted)."""
        charges = []
        for m in a.matches:
            b = m.budget
            if b.spec.policy != "hard" or (b.limit_nanos is None and b.limit_tokens is None):
                continue
            room = b.fits(m.counter, a.cost_nanos * calls, a.tokens * calls)
            charges.append(HardCharge(b.name, counter_key(m.key), window_start(m.window.start_us), room))
        return charges

    def _ask_ledger_first(self, message: ReserveMsg, answer: Any, denied: str | None = None) -> None:
        """A keyed reserve this actor would not hold: the room (or a cap) may be taken by the key's own first
        reserve, whose answer was lost. The ledger answers that first decision when it knows the key, else
        `answer` (a denial, or a refusal), which it does not keep. `denied`: the key of a new denial, kept
        (while the daemon runs) once the ledger says the key was new."""
        self._send(lambda write_id, settle: WriteHold(
            holds=[], decision=answer, idempotency_key=message.idempotency_key, payload_hash=message.payload_hash,
            reply=message.reply, write_id=write_id, settle=settle), _Pending(denied=denied))

    def _room_for(self, a: Assessment, component: str, wanted: int) -> int:
        """How many calls of the assessed estimate to hold, at most `wanted`: as many as every limiting budget
        still has room for (so a call admitted against a lease gets the verdict the first one got), within the
        caps on open holds; `busy` when not even one may be held."""
        calls = wanted
        for m in a.matches:
            budget, counter = m.budget, m.counter
            if budget.spec.policy == "ignore" or not budget.fits(counter, a.cost_nanos, a.tokens):
                continue  # a budget that never refuses, or one over already: its verdict is in the decision
            if budget.limit_nanos is not None and a.cost_nanos > 0:
                calls = min(calls, (budget.limit_nanos - counter.spent_nanos - counter.reserved_nanos)
                            // a.cost_nanos)
            if budget.limit_tokens is not None and a.tokens > 0:
                calls = min(calls, (budget.limit_tokens - counter.spent_tokens - counter.reserved_tokens)
                            // a.tokens)
        open_room = self.rules.max_open_holds - len(self.holds)
        if open_room < 1:
            raise OpError("busy", f"{len(self.holds):,} reservations are open, the most admission.max_open_holds "
                          "allows: commit or release some (or let them expire), then retry")
        component_room = self.rules.max_holds_per_component - self.holds.by_component.get(component, 0)
        if component_room < 1:
            raise OpError("busy", f"component {component!r} has {self.rules.max_holds_per_component:,} open "
                          "reservations, the most admission.max_holds_per_component allows: commit or release "
                          "some, then retry")
        return max(1, min(calls, open_room, component_room))

    def _owned(self, hold: Hold | None, components: frozenset[str] | None) -> None:
        """A token limited to components may close only their reservations."""
        if hold is not None and components is not None and hold.estimate.component not in components:
            raise OpError("forbidden", f"reservation {hold.id} belongs to component {hold.estimate.component!r}, "
                          "which this token may not spend for", "$.reservation_id")

    def _release(self, message: ReleaseMsg) -> None:
        for rid in message.reservation_ids:
            self._owned(self.holds.get(rid), message.components)
        closed = [hold for rid in message.reservation_ids if (hold := self.holds.release(rid)) is not None]
        if not closed:
            if self.fleet is None:
                message.reply.set(Released(released=False, count=0))
            else:  # another node's, perhaps: the fleet's database lets them go
                self.ledger.tell(ReleaseElsewhere(ids=message.reservation_ids, components=message.components,
                                                  now=self.clock.now_us(), reply=message.reply))
            return
        answer = Released(released=True, count=len(closed))
        self._send(lambda write_id, settle: CloseHold(ids=[h.id for h in closed], reply=message.reply,
                                                      answer=answer, write_id=write_id, settle=settle),
                   _Pending(closed=closed))

    def _commit(self, message: CommitMsg) -> None:
        rid = message.reservation_id
        self._owned(self.holds.get(rid), message.components)
        call_time(message.usage.ts, self.clock.now_us(), self.rules.max_clock_skew_s)  # before the hold goes
        hold = self.holds.release(rid)
        u = message.usage
        if hold is not None:
            est = hold.estimate
            fields = {f: getattr(u, f) for f in u.__struct_fields__}
            for f in ("component", "model", "provider", "tier", "context_id", "task_type"):
                if fields[f] is None:
                    fields[f] = getattr(est, f)
            usage = Usage(**fields)
        elif rid in self._committed:
            first_key, usage = self._committed[rid]
            if first_key != message.idempotency_key:
                raise OpError("conflict", f"reservation {rid} was already committed; its usage is recorded",
                              "$.reservation_id")
            # The same commit again: the ledger answers with the first result (or a conflict
            # if the usage differs) and the charge is taken back when it settles.
        elif u.component is None or u.model is None:
            raise OpError(
                "unknown_reservation",
                f"reservation {rid!r} is unknown (expired, released, or the daemon restarted"
                + ("; on a fleet, commit it on the node that made it, which knows it" if self.fleet is not None else "")
                + "); if it is not committed, send the usage with its component and model and it is recorded as "
                "plain usage",
                "$.reservation_id",
            )
        else:
            usage = Usage(**{f: getattr(u, f) for f in u.__struct_fields__})
        _remember(self._committed, rid, (message.idempotency_key, usage))
        # A commit names its reservation, and so closes its hold in the ledger, on whatever node made it; but
        # a caller limited to components may close only holds this node can tell are theirs: on a fleet,
        # another node's hold stays until it expires, and the usage is plain usage.
        closes = rid if hold is not None or self.fleet is None or message.components is None else None
        self._charge_and_write(usage, message.idempotency_key, message.payload_hash, message.reply, closes, hold)

    def _route(self, message: RouteMsg) -> RouteResult:
        result, chosen = routing.route(self.admission, message.estimate, message.candidates, message.need,
                                       self.chat_models())
        if chosen is None:
            return result
        return msgspec.structs.replace(result, decision=self._check(chosen))

    # -- recording --------------------------------------------------------------------

    def _record(self, message: RecordUsage) -> None:
        self._charge_and_write(message.usage, message.idempotency_key, message.payload_hash, message.reply, None)

    def _charge_and_write(self, u: Usage, key: str | None, digest: bytes | None, reply: ReplyTo,
                          reservation_id: str | None, hold: Hold | None = None) -> None:
        ts_us = call_time(u.ts, self.clock.now_us(), self.rules.max_clock_skew_s)
        problem = parts_problem(u)
        if problem is not None:
            raise OpError("invalid", problem[1], f"$.usage.{problem[0]}")
        billed = Billed.of(u)
        priced = price_call(self.book, self.unpriced, self.tiers, u.model, u.provider, u.tier, billed, ts_us,
                            None if u.cost_usd is None else nanos(u.cost_usd))
        close = []
        if not priced.priced:
            self.signals.unpriced(u.model, self.unpriced.mode)
            close = self.book.did_you_mean(u.model, u.provider)
        charges: list[Charge] = []
        states: list[BudgetState] = []  # filled once the drain ends (see `drained`)
        found: list = []
        counted: list[Counted] = []
        if self.budgets:
            attrs: Attrs = {
                "component": u.component, "model": priced.model, "provider": priced.provider,
                "tier": priced.tier, "context_id": u.context_id, "task_type": u.task_type,
            }
            tokens = billed.tokens
            cost = priced.cost_nanos
            # Every counter first (one may refuse, at its cap), then every charge: all or nothing.
            found = self._counters_of(attrs, ts_us)
            if self.fleet is not None:
                counted = [Counted(b.name, counter_key(k), window_start(w.start_us)) for b, k, w, _ in found]
            touched = self._touched
            for budget, bkey, win, counter in found:
                t = touched.get(id(counter))
                if t is None:
                    touched[id(counter)] = _Touched(budget, bkey, win, counter,
                                                    budget.used_fraction(counter.spent_nanos, counter.spent_tokens),
                                                    ts_us)
                elif ts_us > t.latest_us:
                    t.latest_us = ts_us
                counter.spent_nanos += cost
                counter.spent_tokens += tokens
                charges.append(Charge(counter, cost, tokens))
                self.signals.spent(budget, bkey, ts_us, cost, tokens)
            if found:
                self._unfilled.append((states, found))
        row = UsageRow(
            ts=ts_us, component=u.component, model=priced.model, provider=priced.provider,
            tier=priced.tier, context_id=u.context_id, task_type=u.task_type,
            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
            cost_nanos=priced.cost_nanos, priced=priced.priced, price_version=priced.price_version,
            reservation_id=reservation_id, request_id=u.request_id,
            metadata=_json.encode(u.metadata).decode() if u.metadata else None,
            idempotency_key=key, cache_write_1h_tokens=u.cache_write_1h_tokens, reasoning_tokens=u.reasoning_tokens,
            audio_input_tokens=u.audio_input_tokens, audio_output_tokens=u.audio_output_tokens,
            service_tier=u.service_tier, web_search_requests=u.web_search_requests,
        )
        self._send(lambda write_id, settle: WriteUsage(row=row, payload_hash=digest, reply=reply, budgets=states,
                                                       did_you_mean=close, write_id=write_id, settle=settle,
                                                       counted=counted),
                   _Pending(charges=charges, closed=[] if hold is None else [hold], found=found))

    def _counters_of(self, attrs: Attrs, ts_us: int) -> list[tuple[Budget, tuple[str, ...], Any, Any]]:
        """Every budget covering a call with `attrs` made at `ts_us`, with its key, window and counter: kept for
        the next call with the same attributes in the same windows (until budgets or prices change, or old
        counters are forgotten), so a stream of like records finds them with one lookup."""
        slot = (attrs["component"], attrs["model"], attrs["provider"], attrs["tier"], attrs["context_id"],
                attrs["task_type"])
        kept = self._counters.get(slot)
        if kept is not None and kept.start_us <= ts_us < kept.end_us:
            return kept.found
        found = [(b, key, win, b.counter(key, win)) for b, key in self.budgets.matching(attrs)
                 for win in (b.window_at(ts_us),)]
        start = max((w.start_us for _, _, w, _ in found if w.start_us is not None), default=-_FOREVER)
        end = min((w.end_us for _, _, w, _ in found if w.end_us is not None), default=_FOREVER)
        if len(self._counters) >= MAX_REMEMBERED:
            self._counters.clear()
        self._counters[slot] = _Found(found, start, end)
        return found

    def _send(self, make: Callable[[int | None, Ref | None], Any], pending: "_Pending") -> None:
        """Hand a write to the ledger, remembering what to undo if it is not applied (a write that did
        nothing ahead of the ledger, a record no budget covers, needs no settling)."""
        write_id = None
        if pending.charges or pending.opened or pending.closed or pending.denied:
            write_id = next(_WRITE_IDS)
            self._unsettled[write_id] = pending
        try:
            self.ledger.tell(make(write_id, None if write_id is None else self.ref))
        except OpError:
            if write_id is not None:
                self._undo(self._unsettled.pop(write_id), failed=True)
            raise

    def _settled(self, message: Settled) -> None:
        for write_id in message.applied:
            pending = self._unsettled.pop(write_id, _NOTHING)
            if pending.denied is not None:  # a denial the ledger had no earlier answer for: it is the first
                first = self._pending_denials.pop(pending.denied, None)
                if first is not None:
                    _remember(self._denied_keys, pending.denied, first)
        for repeat in message.duplicates:
            pending = self._unsettled.pop(repeat.write_id, _NOTHING)
            answer = repeat.answer
            try:
                self._undo(pending, failed=False)
                if pending.found:  # a record's repeat: its budgets as they stand, nothing charged for it
                    answer = msgspec.structs.replace(answer, budgets=[
                        budget.state(key, win, counter) for budget, key, win, counter in pending.found])
            finally:  # answered even if this actor fails here (the first answer is the answer)
                if repeat.reply is not None:
                    repeat.reply.set(answer)
        for write_id in message.failed:
            self._undo(self._unsettled.pop(write_id, _NOTHING), failed=True)
        for refused in message.refused:  # the fleet's database found no room: nothing was held
            pending = self._unsettled.pop(refused.write_id, _NOTHING)
            self._undo(pending, failed=False)
            if pending.key is not None:  # kept as a denial of this node's own is
                _remember(self._denied_keys, pending.key[0], (pending.key[1], refused.denial))
        if message.unsure:
            # Kept charged (on the side of the limit) until the counters are read again from the ledger, which
            # a fleet node does once its database answers again (see `_fleet_view`).
            for write_id in message.unsure:
                self._unsettled.pop(write_id, None)
            self._recount = True

    def _undo(self, pending: "_Pending", failed: bool) -> None:
        """A write that was not applied: its spend leaves the counters, a hold it opened closes, and, when
        it failed (nothing was written), a hold it closed is open again (its commit or release may be
        retried)."""
        for c in pending.charges:
            c.counter.spent_nanos -= c.nanos
            c.counter.spent_tokens -= c.tokens
        for hold in pending.opened:
            self.holds.release(hold.id)
        if pending.denied is not None:
            self._pending_denials.pop(pending.denied, None)  # the key was known (or nothing was answered)
        if failed:
            now = self.clock.now_us()
            for hold in pending.closed:
                if hold.expires_us > now:
                    # charged afresh: its budgets or their windows may have changed meanwhile
                    hold.charges = [Charge(budget.counter(key, budget.window_at(now), capped=False), hold.cost_nanos,
                                           hold.tokens, budget, key)
                                    for budget, key in self.budgets.matching(hold.attrs)]
                    self.holds.add(hold)


_FOREVER = 2**63
# Write ids are never reused, not even by an allocator restarted after a crash: a `Settled` for a write of
# the crashed one may still be in the mailbox, and must not settle a new write that took its number.
_WRITE_IDS = itertools.count(1)


class _Found(NamedTuple):
    """The budgets covering calls of some attributes, with their counters, for calls made in [start, end)."""

    found: list[tuple[Budget, tuple[str, ...], Any, Any]]
    start_us: int
    end_us: int


@dataclass(slots=True)
class _Touched:
    """A counter charged since the last drain: its used fraction before, and its latest record's time."""

    budget: Budget
    key: tuple[str, ...]
    window: Any
    counter: Any
    before: float
    latest_us: int


class _Pending(NamedTuple):
    """What the allocator did ahead of a write it handed to the ledger, to be undone if it is not applied."""

    charges: list[Charge] = []
    opened: list[Hold] = []  # reservations it opened
    closed: list[Hold] = []  # reservations it closed (committed or released)
    denied: str | None = None  # the key of a denial the ledger is asked about
    found: list = []  # a record's budgets, keys, windows and counters (as `_counters_of` gives them)
    key: tuple[str, bytes | None] | None = None  # a reserve's idempotency key and payload hash


_NOTHING = _Pending()


def _remember(store: collections.OrderedDict, key: str, value: Any) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > MAX_REMEMBERED:
        store.popitem(last=False)
