"""The ledger's inbox: what the writer (`Ledger`) and the reader (`LedgerReader`) are asked, and the
named data they answer with. Callers import these, never the actors' implementation.

Every message that expects an answer carries `reply`; its docstring says what the answer is.
"""

import hashlib
import operator
from typing import Any

import msgspec

from actors.ledger.report_plan import SUMS, TOKEN_SUMS, ReportQuery
from actors.runtime import Ref, ReplyTo

# -- records --------------------------------------------------------------------------


class UsageRow(msgspec.Struct, frozen=True):
    """A priced usage, ready to insert (everything but the ids the ledger assigns)."""

    ts: int  # microseconds since the epoch
    component: str
    model: str
    provider: str | None
    tier: str | None
    context_id: str | None
    task_type: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_nanos: int
    priced: bool
    price_version: int | None
    reservation_id: str | None
    request_id: str | None
    metadata: str | None  # JSON
    idempotency_key: str | None
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    service_tier: str = "standard"
    web_search_requests: int = 0


class Counted(msgspec.Struct, frozen=True):
    """A budget counter a record counts in, as the fleet's database keeps it (`fleet_spent`)."""

    budget: str
    key: str  # the counter's key as `counter_key` writes it
    window_start: int  # µs; ALL_TIME for a total budget


class HardCharge(msgspec.Struct, frozen=True):
    """What each hold of a reserve puts on one counter of a hard budget, for the fleet's database to admit
    against the spend and holds of every node and the budget's limits as the database has them. Not
    `bounded`, it is counted there, not checked (a call the daemon admits past the limit, a critical one)."""

    budget: str
    key: str
    window_start: int
    bounded: bool


#: `Counted.window_start` of a budget whose one window is all time.
ALL_TIME = -(2**63)


def window_start(start_us: int | None) -> int:
    """A window's start as the fleet's counters name it."""
    return ALL_TIME if start_us is None else start_us


def counter_key(key: tuple[str, ...]) -> str:
    """A counter's key (the values of its budget's "*" dims) as one text, the same on every node."""
    return _json_encode(key).decode()


_json_encode = msgspec.json.Encoder().encode


class WriteUsage(msgspec.Struct, frozen=True):
    """Append a record (closing its reservation's hold, if it has one, in the same transaction); answer:
    `Recorded` once committed, or the first answer with `duplicate: true` for a known idempotency key.
    `budgets` is what the answer carries; `counted`, on a fleet, the counters it adds to there.

    Every write with a `write_id` is settled: after its batch the writer tells `settle` a `Settled`
    naming which of the sender's writes were applied, were duplicates, or failed.
    """

    row: UsageRow
    payload_hash: bytes | None
    reply: ReplyTo
    budgets: list = []
    did_you_mean: list = []  # when unpriced: priced names close to the model, for the answer
    write_id: int | None = None
    settle: Ref | None = None
    counted: list[Counted] = []


class HoldRow(msgspec.Struct, frozen=True):
    """An open reservation as the ledger keeps it."""

    id: str
    created_at: int  # µs
    expires_at: int  # µs, by the daemon's clock
    component: str
    estimate: bytes  # the Estimate as JSON
    attrs: bytes  # what budget scopes match on, as JSON
    cost_nanos: int
    tokens: int


class WriteHold(msgspec.Struct, frozen=True):
    """Open holds (one per call reserved); answer: `decision` once committed (or the first decision,
    `duplicate: true`, for a known idempotency key, which opens nothing). Settled like a `WriteUsage`.
    Without holds it is a keyed denial: answered with the first decision when the key is known, else
    with `decision`, which is not kept. On a fleet, `hard` is what each hold puts on hard budgets: when
    other nodes took the room meanwhile, the database refuses the reserve whole, which is answered as a
    denial and settled as refused."""

    holds: list[HoldRow]
    decision: Any  # the Decision to answer, with the hold's id and expiry
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo
    write_id: int | None = None
    settle: Ref | None = None
    hard: list[HardCharge] = []


class CloseHold(msgspec.Struct, frozen=True):
    """Close holds (released or expired); answer (when `reply` is set): `answer`, once committed."""

    ids: list[str]
    reply: ReplyTo | None = None
    answer: Any = True
    write_id: int | None = None
    settle: Ref | None = None


#: The messages the writer batches into one transaction.
Write = WriteUsage | WriteHold | CloseHold


class LoadHolds(msgspec.Struct, frozen=True):
    """Answer: [HoldRow] of every hold open at `now` (older ones are forgotten). Served in mailbox
    order, so it sees exactly the writes sent before it."""

    now: int
    reply: ReplyTo


class ReleaseElsewhere(msgspec.Struct, frozen=True):
    """Release holds that other nodes of the fleet opened (open at `now`; of `components` only, when given);
    answer: `Released`. Their room returns to the fleet at once, and each node that opened one is told to
    forget it (a single host's ledger holds no other node's holds)."""

    ids: list[str]
    components: frozenset[str] | None
    now: int
    reply: ReplyTo


class Repeat(msgspec.Struct, frozen=True):
    """A settled write that repeated an earlier one: the earlier answer, for the settler to give."""

    write_id: int
    answer: Any  # the first `Recorded` (kept without budgets) or `Decision`, with `duplicate: true`
    reply: ReplyTo | None


class Settled(msgspec.Struct, frozen=True):
    """Told to a writer's `settle` after each batch: which of its writes were applied, which were
    duplicates of earlier ones (nothing new written: the settler answers them, once it has taken their
    charges back), which failed (nothing written; the sender was told `unavailable`), which reserves the
    fleet's database refused (nothing held; the sender was told a denial)."""

    applied: list[int]
    duplicates: list[Repeat]
    failed: list[int]
    refused: list["Denial"] = []
    unsure: list[int] = []  # lost with the connection in their commit: applied or not, nobody can say


class Denial(msgspec.Struct, frozen=True):
    """A settled reserve the fleet's database refused: the denial its sender was told, which the settler
    keeps as its key's answer as it keeps its own denials'."""

    write_id: int
    denial: Any  # a `Decision`


class Refused(msgspec.Struct, frozen=True):
    """A store's answer to a reserve the fleet's database refused: `denial` is what its sender is told."""

    denial: Any


class WindowTotal(msgspec.Struct, frozen=True):
    """One key's spend in a window. On a fleet, `others_*` is what the other nodes counted there (at the
    same instant), from which a node follows their spend as it grows."""

    key: tuple[str, ...]  # the values of the "*" dims
    nanos: int
    tokens: int
    others_nanos: int = 0
    others_tokens: int = 0


class Tally(msgspec.Struct):
    """Sums over records: how many, their tokens by kind, their cost (the fields of `SUMS`, in order)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    web_search_requests: int = 0
    cost_nanos: int = 0

    @classmethod
    def of_rows(cls, rows: "list[UsageRow]") -> "Tally":
        """Many records' (each column summed in one pass)."""
        if not rows:
            return cls()
        return cls(len(rows), *map(sum, zip(*map(_row_sums, rows))))

    def add(self, other: "Tally") -> None:
        for name in SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_SUMS)

    def values(self) -> tuple[int, ...]:
        """The sums in the order of `SUMS`."""
        return msgspec.structs.astuple(self)


class ReplaySpool(msgspec.Struct, frozen=True):
    """About `records` records of a fleet node's spool (what it acknowledged while its database was away) into
    the database, now if it can be. Answer: how many batches wait in it still (0 on a single host)."""

    reply: ReplyTo
    records: int = 2_000


class FollowTotals(msgspec.Struct, frozen=True):
    """What the other nodes of a fleet, and this one, have recorded in all as its database counts now (the
    ledger's totals follow it). No answer."""

    others: Tally
    mine: Tally


_row_sums = operator.attrgetter(*SUMS[1:])  # a record's values of every sum but `requests`
_row_token_kinds = operator.attrgetter(*TOKEN_SUMS)


def row_tokens(r: "UsageRow") -> int:
    """What a record adds to a `tokens` total."""
    return sum(_row_token_kinds(r))


class GetTotals(msgspec.Struct, frozen=True):
    """Answer: `Totals` of the whole ledger."""

    reply: ReplyTo


class WindowSum(msgspec.Struct, frozen=True):
    """The spend of one budget in one window, grouped by its "*" dims."""

    budget: str
    exact: tuple[tuple[str, str], ...]  # (dim, value) the records must have
    star: tuple[str, ...]  # dims each distinct value of which is a key
    start: int | None
    end: int | None


class SumWindows(msgspec.Struct, frozen=True):
    """Answer: {budget: [WindowTotal]}. Served by the writer, in mailbox order, so it counts exactly the
    writes sent before it."""

    sums: list[WindowSum]
    reply: ReplyTo


class Compact(msgspec.Struct, frozen=True):
    """Delete the records before `before` (µs, rounded down to the hour): the rollups keep their sums.
    Answer: how many records went."""

    before: int
    reply: ReplyTo


class ExpireKeys(msgspec.Struct, frozen=True):
    """Forget idempotency keys older than `before` (µs); answer: how many."""

    before: int
    reply: ReplyTo


# -- budgets ----------------------------------------------------------------------------


class StoredBudget(msgspec.Struct, frozen=True):
    spec: bytes  # BudgetSpec as JSON
    origin: str  # "api" or "config"


class LoadBudgets(msgspec.Struct, frozen=True):
    """Answer: [StoredBudget] by name."""

    reply: ReplyTo


class SaveBudget(msgspec.Struct, frozen=True):
    """Create or replace; answer: True."""

    spec: bytes  # BudgetSpec as JSON
    name: str
    origin: str
    reply: ReplyTo


class DeleteBudget(msgspec.Struct, frozen=True):
    """Answer: True when it existed."""

    name: str
    reply: ReplyTo


# -- prices -------------------------------------------------------------------------------


class SourceState(msgspec.Struct, frozen=True):
    """What the ledger remembers of a price source between runs."""

    source: str
    models: int
    last_success: int | None  # µs
    last_error: str | None
    etag: str | None
    last_modified: str | None


class PriceState(msgspec.Struct, frozen=True):
    entries: list[bytes]  # PriceEntry JSON of every current version
    overridden: list[str]  # models whose current version is a local override
    sources: list[SourceState]
    version: int  # the last version applied


class LoadPrices(msgspec.Struct, frozen=True):
    """Answer: PriceState."""

    reply: ReplyTo


class PriceChange(msgspec.Struct, frozen=True):
    model: str
    entry: bytes  # PriceEntry JSON, already stamped with its version
    source: str


class ApplyPrices(msgspec.Struct, frozen=True, kw_only=True):
    """New price versions (each closes the model's current one) and the sources' states, atomically.
    Answer: how many versions were written."""

    version: int
    effective_from: int
    changes: list[PriceChange]
    sources: list[SourceState]
    set_override: str | None = None  # model whose override is set (by one of `changes`)
    unset_override: str | None = None  # model whose override is removed
    close: list[str] = []  # models that lose their price (an override with no source price under it)
    reply: ReplyTo


class PriceVersion(msgspec.Struct, frozen=True):
    entry: bytes  # PriceEntry JSON
    effective_from: int
    effective_to: int | None


class PriceHistory(msgspec.Struct, frozen=True):
    """Answer: [PriceVersion] oldest first."""

    model: str
    reply: ReplyTo


class SourcePrice(msgspec.Struct, frozen=True):
    """Answer: the latest entry JSON of `model` not set by an override, or None."""

    model: str
    reply: ReplyTo


# -- alerts -------------------------------------------------------------------------------


class SaveAlert(msgspec.Struct, frozen=True):
    """Answer: the new alert's id, or None when an alert with the same `dedupe` exists."""

    ts: int
    kind: str
    severity: str
    budget: str | None
    key: str | None  # JSON
    window_start: int | None
    message: str
    data: bytes  # JSON
    dedupe: str
    reply: ReplyTo


class AckAlert(msgspec.Struct, frozen=True):
    """Answer: True when it is acknowledged now, False when it was already; `not_found` when no such alert."""

    alert_id: int
    by: str | None
    at: int
    reply: ReplyTo


# -- the reader's ----------------------------------------------------------------------------


class ListUsage(msgspec.Struct, frozen=True):
    """Answer: ([UsageRecord] newest first, the id to continue before, or None)."""

    reply: ReplyTo
    filters: dict[str, str]
    since: int | None
    until: int | None
    limit: int
    before_id: int | None


class ListAlerts(msgspec.Struct, frozen=True):
    """Answer: [Alert] newest first."""

    since: int | None
    unacked: bool
    limit: int
    reply: ReplyTo


class CallExtremes(msgspec.Struct, frozen=True):
    """Answer: (the `limit` most expensive records, {model: its largest prompt}) with ts in [since, until)."""

    since: int
    until: int
    limit: int
    reply: ReplyTo


class BackupTo(msgspec.Struct, frozen=True):
    """Answer: (bytes, records) of the verified copy now at `path`."""

    path: str
    reply: ReplyTo


class RunReport(msgspec.Struct, frozen=True):
    """Answer: ([ReportRow], Totals)."""

    query: ReportQuery
    reply: ReplyTo


def payload_hash(op: str, payload: Any) -> bytes:
    """What an idempotency key is bound to: the op and its canonical payload."""
    return hashlib.blake2b(op.encode() + b"\0" + msgspec.json.encode(payload), digest_size=16).digest()
