"""The allocator: prices every call and (with budgets) decides and charges.

Every write passes through here on its way to the ledger: the allocator
prices the usage with the current book, then hands the row to the ledger,
which answers the client once the row is committed.
"""

import datetime as dt
import logging
import time
from typing import Any

import msgspec

from actors.ledger import Undo, UsageRow, WriteUsage, to_us
from actors.runtime import Actor, Ref, ReplyTo
from budgetd.model import Usage, nanos
from budgetd.pricing import PriceBook, TierRules, UnpricedPolicy, price_call

log = logging.getLogger("budgetd.allocator")
_metadata_encoder = msgspec.json.Encoder()


class RecordUsage(msgspec.Struct, frozen=True):
    usage: Usage
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo
    reservation_id: str | None = None


class NewBook(msgspec.Struct, frozen=True):
    book: PriceBook


class Allocator(Actor):
    name = "allocator"

    def __init__(self, ledger: Ref, book: PriceBook, tiers: TierRules, unpriced: UnpricedPolicy) -> None:
        super().__init__()
        self.ledger = ledger
        self.book = book
        self.tiers = tiers
        self.unpriced = unpriced
        self._unpriced_seen: dict[str, dt.date] = {}

    async def handle(self, message: Any) -> None:
        if isinstance(message, RecordUsage):
            self._record(message)
        elif isinstance(message, NewBook):
            self.book = message.book
        elif isinstance(message, Undo):
            pass  # budgets charge nothing yet
        else:
            raise TypeError(f"the allocator does not handle {type(message).__name__}")

    def _record(self, message: RecordUsage) -> None:
        u = message.usage
        priced = price_call(
            self.book, self.unpriced, self.tiers, u.model, u.provider, u.tier,
            u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            None if u.cost_usd is None else nanos(u.cost_usd),
        )
        if not priced.priced:
            self._note_unpriced(u.model)
        row = UsageRow(
            ts=to_us(u.ts) if u.ts is not None else time.time_ns() // 1000, component=u.component, model=priced.model, provider=priced.provider,
            tier=priced.tier, context_id=u.context_id, task_type=u.task_type,
            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
            cost_nanos=priced.cost_nanos, priced=priced.priced, price_version=priced.price_version,
            reservation_id=message.reservation_id, request_id=u.request_id,
            metadata=_metadata_encoder.encode(u.metadata).decode() if u.metadata else None,
            idempotency_key=message.idempotency_key,
        )
        self.ledger.tell(WriteUsage(row=row, payload_hash=message.payload_hash, reply=message.reply, undo=self.ref))

    def _note_unpriced(self, model: str) -> None:
        today = dt.datetime.now(dt.timezone.utc).date()
        if self._unpriced_seen.get(model) != today:
            if len(self._unpriced_seen) > 10_000:
                self._unpriced_seen.clear()
            self._unpriced_seen[model] = today
            log.warning(
                "model %r has no price; charged by pricing.unknown_model=%s. Set one with `budget prices set`.",
                model, self.unpriced.mode,
            )
