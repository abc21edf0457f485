"""The storage seam: what the ledger's actors need of a database, and nothing about how it is done.

`Ledger` (the writer: group commit, ordering, answers) and `LedgerReader` (long reads) are written
against these two interfaces. SQLite (`actors.ledger.sqlite`) is the embedded default; another
backend is a new module that implements them.
"""

from typing import Any, Protocol

from actors.ledger.messages import (
    ApplyPrices,
    CallExtremes,
    HoldRow,
    ListAlerts,
    ListUsage,
    PriceState,
    PriceVersion,
    SaveAlert,
    StoredBudget,
    Tally,
    WindowSum,
    WindowTotal,
    Write,
)
from actors.ledger.report_plan import SUMS, ReportQuery
from budgetd.model import Alert, ReportRow, Totals, UsageRecord, usd


class StoreFull(Exception):
    """The disk (or the configured cap) is full: nothing of the transaction was written; retry later."""


class StoreUnreachable(Exception):
    """The database cannot be reached just now; the store reconnects by itself at a later call. Nothing of
    the call was written, unless `committing`: then the connection was lost during the commit, and the
    transaction may have been committed. `lasting`: the store will not reconnect by itself."""

    def __init__(self, message: str, committing: bool = False, lasting: bool = False) -> None:
        super().__init__(message)
        self.committing = committing
        self.lasting = lasting  # a retry will not help: the message says what will


class StoreBroken(Exception):
    """The database connection cannot be used any more: the actor restarts and reopens it."""


class Store(Protocol):
    """The writer's side. Every method is one transaction; none is called concurrently with another."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, writes: list[Write], now_us: int) -> list[Any]:
        """The batch in one transaction: records (with their rollups and idempotency keys; a commit's
        record closes its hold), holds opened, holds closed. One answer per write, in order: a record's
        `Recorded`, a hold's `Decision`, a close's True; the first answer again (`duplicate: true`) for a
        known key; or an OpError for a write refused alone (a key used for another payload, a record that
        would overflow the ledger's sums). Raises StoreFull or StoreBroken (nothing written)."""
        ...

    async def load_holds(self, now_us: int) -> list[HoldRow]:
        """The holds open at `now_us`; expired ones are forgotten."""
        ...

    def totals(self) -> Tally:
        """Of every record ever appended (compacted ones included), kept in memory."""
        ...

    def follow(self, others: Tally, mine: Tally) -> None:
        """On a fleet: what the other nodes and this one have recorded in all, now (`totals` follows it)."""
        ...

    async def replay(self, records: int | None = None) -> int:
        """On a fleet: about `records` records (None: all) of the node's spool into the database; how many
        batches wait still."""
        ...

    async def release_elsewhere(self, ids: list[str], components: frozenset[str] | None, now_us: int) -> Any:
        """On a fleet: see `ReleaseElsewhere`."""
        ...

    async def window_sums(self, sums: list[WindowSum]) -> dict[str, list[WindowTotal]]: ...

    async def load_budgets(self) -> list[StoredBudget]: ...

    async def save_budget(self, name: str, spec: bytes, origin: str, now_us: int) -> bool: ...

    async def delete_budget(self, name: str) -> bool: ...

    async def load_prices(self) -> PriceState: ...

    async def apply_prices(self, change: ApplyPrices) -> int: ...

    async def price_history(self, model: str) -> list[PriceVersion]: ...

    async def source_price(self, model: str) -> bytes | None: ...

    async def save_alert(self, alert: SaveAlert) -> int | None: ...

    async def ack_alert(self, alert_id: int, by: str | None, at_us: int) -> bool:
        """True when acknowledged now, False when it was already; OpError `not_found` when no such alert."""

    async def compact(self, before_us: int) -> int: ...

    async def expire_keys(self, before_us: int) -> int: ...


class ReadStore(Protocol):
    """The reader's side: queries that may be long, on a connection of their own."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def list_usage(self, q: ListUsage) -> tuple[list[UsageRecord], int | None]: ...

    async def list_alerts(self, q: ListAlerts) -> list[Alert]: ...

    async def call_extremes(self, q: CallExtremes) -> tuple[list[UsageRecord], dict[str, int]]: ...

    async def report(self, q: ReportQuery) -> tuple[list[ReportRow], Totals]: ...

    async def backup(self, path: str) -> tuple[int, int]:
        """A verified, consistent copy at `path`: (bytes, records)."""
        ...


def totals_of(t: Tally) -> Totals:
    """A tally as the wire shows totals."""
    counts = {name: getattr(t, name) for name in SUMS if name != "cost_nanos"}
    return Totals(**counts, tokens=t.tokens, cost_usd=usd(t.cost_nanos))
