"""The ledger: the only writer of the SQLite database.

Group commit: every write waiting in the mailbox goes into one transaction,
which is committed before any of them is acknowledged. Reads that may be
long run in `LedgerReader`, on a connection of their own.
"""

import functools
import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import aiosqlite
import anyio
import msgspec

from actors import reports, rollups
from actors.bus import Publish
from actors.runtime import Actor, Ref, ReplyTo, fail_reply
from actors.transactions import immediate
from budgetd.clock import SYSTEM, Clock
from budgetd.debug import debug_log
from budgetd.model import Alert, Recorded, Totals, UsageRecord, usd
from budgetd.periods import HOUR_US, from_us
from budgetd.protocol import OpError

log = logging.getLogger("budgetd.ledger")

MAX_BATCH = 1024


# -- schema ---------------------------------------------------------------------

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE usage (
        record_id          INTEGER PRIMARY KEY,
        ts                 INTEGER NOT NULL,   -- microseconds since the epoch, UTC
        recorded_at        INTEGER NOT NULL,
        component          TEXT NOT NULL,
        model              TEXT NOT NULL,      -- the resolved price key
        provider           TEXT,
        tier               TEXT,
        context_id         TEXT,
        task_type          TEXT,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cost_nanos         INTEGER NOT NULL,   -- 1e-9 USD
        priced             INTEGER NOT NULL,
        price_version      INTEGER,
        reservation_id     TEXT,
        request_id         TEXT,
        metadata           TEXT,
        idempotency_key    TEXT
    );
    CREATE INDEX usage_ts ON usage (ts);
    CREATE INDEX usage_component_ts ON usage (component, ts);
    CREATE INDEX usage_model_ts ON usage (model, ts);
    CREATE INDEX usage_context_ts ON usage (context_id, ts) WHERE context_id IS NOT NULL;

    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        payload_hash BLOB NOT NULL,   -- op + canonical payload
        result       BLOB NOT NULL,   -- the first answer, as JSON
        created_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_created ON idempotency (created_at);

    CREATE TABLE budgets (
        name       TEXT PRIMARY KEY,
        spec       BLOB NOT NULL,     -- BudgetSpec as JSON
        origin     TEXT NOT NULL,     -- 'api' or 'config'
        updated_at INTEGER NOT NULL
    );

    CREATE TABLE price_versions (
        version        INTEGER NOT NULL,
        model          TEXT NOT NULL,
        entry          BLOB NOT NULL,  -- PriceEntry as JSON
        source         TEXT NOT NULL,
        effective_from INTEGER NOT NULL,
        effective_to   INTEGER,
        PRIMARY KEY (model, version)
    );
    CREATE INDEX price_versions_current ON price_versions (model) WHERE effective_to IS NULL;

    CREATE TABLE price_overrides (
        model      TEXT PRIMARY KEY,
        entry      BLOB NOT NULL,
        updated_at INTEGER NOT NULL
    );

    CREATE TABLE price_sources (
        source       TEXT PRIMARY KEY,
        models       INTEGER NOT NULL,
        last_success INTEGER,
        last_error   TEXT,
        etag         TEXT,
        last_modified TEXT
    );

    CREATE TABLE alerts (
        id           INTEGER PRIMARY KEY,
        ts           INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        severity     TEXT NOT NULL,
        budget       TEXT,
        key          TEXT,
        window_start INTEGER,
        message      TEXT NOT NULL,
        data         TEXT NOT NULL,
        dedupe       TEXT UNIQUE,      -- one alert per rule firing, across restarts
        acked        INTEGER NOT NULL DEFAULT 0,
        acked_by     TEXT,
        acked_at     INTEGER
    );
    CREATE INDEX alerts_ts ON alerts (ts);

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v2: the rollups reports read, backfilled from the records already there
    rollups.SCHEMA,
]
SCHEMA_VERSION = len(MIGRATIONS)
APPLICATION_ID = 0x42554447  # "BUDG": tells our ledger from any other SQLite file

USAGE_COLUMNS = (
    "record_id", "ts", "recorded_at", "component", "model", "provider", "tier", "context_id",
    "task_type", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_nanos", "priced", "price_version", "reservation_id", "request_id", "metadata",
    "idempotency_key",
)
_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(USAGE_COLUMNS)) + ")"
_ROWS_PER_INSERT = 32_766 // len(USAGE_COLUMNS) // 2  # well under SQLite's bound-parameter limit


@functools.lru_cache(maxsize=64)
def _insert_many(n: int) -> str:
    return f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES " + ", ".join([_ROW_PLACEHOLDERS] * n)


class LedgerError(Exception):
    """The ledger file cannot be used; the message says what to do."""


_UNUSABLE = (
    "{path} is not a usable budgetd ledger ({why}). Move it aside or point --data-dir elsewhere; "
    "budgetd never overwrites an unknown file."
)


def open_writer(path: Path, durability: str, max_bytes: int = 0) -> sqlite3.Connection:
    """The writer's connection: identified, WAL, migrated. Runs in the ledger's worker thread."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        _check_identity(db, path)  # before anything, even the journal mode, writes to the file
        check_integrity(db, path)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise LedgerError(f"{path}: could not switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
        migrate(db, path)
        if max_bytes:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page)}")
    except sqlite3.DatabaseError as exc:
        db.close()
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise LedgerError(f"the disk holding {path} is full (or daemon.max_ledger_mb is reached); free some "
                              "space and start budgetd again") from None
        raise LedgerError(_UNUSABLE.format(path=path, why=exc)) from None
    except BaseException:
        db.close()
        raise
    return db


async def open_reader(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout = 5000")
    except BaseException:
        await db.close()
        raise
    return db


def _check_identity(db: sqlite3.Connection, path: Path) -> None:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables > 0):
        raise LedgerError(_UNUSABLE.format(path=path, why="an SQLite file that budgetd did not create"))
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"{path} has schema version {version}, newer than this budgetd understands ({SCHEMA_VERSION}). "
            "Upgrade budgetd, or restore a backup."
        )


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """SQLite's quick check (structure, not every index entry): a damaged ledger is refused, never repaired."""
    try:
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise LedgerError(
            f"{path} is damaged ({'; '.join(problems)}). Restore a backup with `budget restore BACKUP` "
            "(the damaged file is kept beside it), or move it aside to start an empty ledger."
        )


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the forward migrations the file has not seen yet, each in its own transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with immediate(db):
            for statement in _statements(MIGRATIONS[target - 1]):
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {target}")
        log.info("ledger %s migrated to schema version %d", path, target)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    out, current = [], []
    for line in script.splitlines():
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            statement = "\n".join(current).strip()
            if statement.strip(";").strip():
                out.append(statement)
            current = []
    return out


# -- messages -------------------------------------------------------------------


class UsageRow(msgspec.Struct, frozen=True):
    """A priced usage, ready to insert (everything but the ids the ledger assigns)."""

    ts: int
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
    metadata: str | None
    idempotency_key: str | None


class WriteUsage(msgspec.Struct, frozen=True):
    row: UsageRow
    payload_hash: bytes | None
    reply: ReplyTo
    # Echoed back to `undo` (the allocator) when the write is not applied.
    charges: Any = None
    undo: Ref | None = None
    budgets: list = []


class Undo(msgspec.Struct, frozen=True):
    """Told to the allocator when a write it charged was not applied."""

    charges: Any


class GetTotals(msgspec.Struct, frozen=True):
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


class LoadBudgets(msgspec.Struct, frozen=True):
    """Answer: [(BudgetSpec JSON, origin)]."""

    reply: ReplyTo


class SaveBudget(msgspec.Struct, frozen=True):
    spec: bytes  # BudgetSpec as JSON
    name: str
    origin: str
    reply: ReplyTo


class DeleteBudget(msgspec.Struct, frozen=True):
    name: str
    reply: ReplyTo


class LoadPrices(msgspec.Struct, frozen=True):
    """Answer: PriceState: the effective entries, overridden models, source states, last version."""

    reply: ReplyTo


class PriceState(msgspec.Struct, frozen=True):
    entries: list[bytes]  # PriceEntry JSON of every current row
    overridden: list[str]
    sources: list[tuple[str, int, int | None, str | None, str | None, str | None]]
    version: int


class PriceChange(msgspec.Struct, frozen=True):
    model: str
    entry: bytes  # PriceEntry JSON, already stamped with its version
    source: str


class ApplyPrices(msgspec.Struct, frozen=True, kw_only=True):
    """New price versions (each closes the model's current one) and the sources' states, atomically."""

    version: int
    effective_from: int
    changes: list[PriceChange]
    sources: list[tuple[str, int, int | None, str | None, str | None, str | None]]
    set_override: str | None = None    # model whose override is set (by one of `changes`)
    unset_override: str | None = None  # model whose override is removed
    close: list[str] = []  # models that lose their price (an override with no source price under it)
    reply: ReplyTo


class PriceHistory(msgspec.Struct, frozen=True):
    """Answer: [(entry JSON, effective_from, effective_to)] oldest first."""

    model: str
    reply: ReplyTo


class SourcePrice(msgspec.Struct, frozen=True):
    """Answer: the latest entry JSON of `model` not set by an override, or None."""

    model: str
    reply: ReplyTo


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
    """Answer: True when the alert existed and was not acknowledged yet."""

    alert_id: int
    by: str | None
    at: int
    reply: ReplyTo


class ListAlerts(msgspec.Struct, frozen=True):
    since: int | None
    unacked: bool
    limit: int
    reply: ReplyTo


class WindowSum(msgspec.Struct, frozen=True):
    """Spend of one budget in one window, grouped by its "*" dims."""

    budget: str
    exact: tuple[tuple[str, str], ...]
    star: tuple[str, ...]
    start: int | None
    end: int | None


class SumWindows(msgspec.Struct, frozen=True):
    """Answer: {budget: [(key, nanos, tokens)]}. Served by the writer, in mailbox order, so
    it counts exactly the writes sent before it."""

    sums: list[WindowSum]
    reply: ReplyTo


class ListUsage(msgspec.Struct, frozen=True):
    reply: ReplyTo
    filters: dict[str, str]
    since: int | None
    until: int | None
    limit: int
    before_id: int | None


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
    """Answer: (rows, totals)."""

    query: reports.ReportQuery
    reply: ReplyTo


def payload_hash(op: str, payload: Any) -> bytes:
    return hashlib.blake2b(op.encode() + b"\0" + msgspec.json.encode(payload), digest_size=16).digest()


_recorded_decoder = msgspec.json.Decoder(Recorded)


# -- the writer -----------------------------------------------------------------


class Ledger(Actor):
    """Group commit. Each batch is one function run in the ledger's worker thread: one
    thread hop per transaction, however many rows (a hop per statement, as aiosqlite
    does it, made each batch wait on the busy event loop three to five times)."""

    name = "ledger"

    def __init__(self, path: Path, durability: str = "full", bus: Ref | None = None,
                 report_zones: Sequence[str] = ("UTC",), max_bytes: int = 0, clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.clock = clock
        self.max_bytes = max_bytes
        self.bus = bus
        self.rollups = rollups.Rollups(["UTC", *report_zones])
        self.path = path
        self.durability = durability
        self.db: sqlite3.Connection | None = None
        self._thread = anyio.CapacityLimiter(1)  # one statement at a time on the connection
        self.next_id = 1
        self.totals = [0, 0, 0, 0, 0, 0]  # requests, input, output, cache_read, cache_write, nanos

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._thread)

    async def started(self) -> None:
        self.db = await self._in_thread(open_writer, self.path, self.durability, self.max_bytes)
        built = await self._in_thread(self.rollups.backfill, self.db)
        # Totals from the hour rollup: it still holds what compaction removed from `usage`.
        row = await self._in_thread(lambda: self.db.execute(  # type: ignore[union-attr]
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
            "coalesce(sum(cost_nanos), 0) FROM rollup_hour"
        ).fetchone())
        self.totals = list(row)
        last = await self._in_thread(lambda: self.db.execute(  # type: ignore[union-attr]
            "SELECT max(coalesce((SELECT max(record_id) FROM usage), 0), "
            "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_compacted_id'), 0))"
        ).fetchone()[0])
        self.next_id = last + 1
        if built:
            log.info("day rollups built for %s", ", ".join(built))

    async def stopped(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            with anyio.CancelScope(shield=True):
                await self._in_thread(db.close)

    async def run(self, mailbox: anyio.abc.ObjectReceiveStream[Any]) -> None:
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
        """Writes go in one transaction; other messages are served in their mailbox order."""
        writes: list[WriteUsage] = []
        for message in batch:
            if isinstance(message, WriteUsage):
                writes.append(message)
                continue
            if isinstance(message, GetTotals):
                message.reply.set(self._totals())
                continue
            if writes:
                await self._write(writes)
                writes = []
            try:
                message.reply.set(await self._in_thread(self._serve, message))
            except sqlite3.DatabaseError as exc:
                fail_reply(message, OpError("unavailable", f"the ledger could not answer ({exc}); retry"))
                raise
            except Exception as exc:
                fail_reply(message, exc)
        if writes:
            await self._write(writes)

    def _serve(self, message: Any) -> Any:
        """Budget storage and window sums, in the worker thread."""
        db = self.db
        assert db is not None
        if isinstance(message, LoadBudgets):
            return db.execute("SELECT spec, origin FROM budgets ORDER BY name").fetchall()
        if isinstance(message, SaveBudget):
            db.execute(
                "INSERT INTO budgets (name, spec, origin, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin, "
                "updated_at = excluded.updated_at",
                (message.name, message.spec, message.origin, self.clock.now_us()),
            )
            return True
        if isinstance(message, DeleteBudget):
            return db.execute("DELETE FROM budgets WHERE name = ?", (message.name,)).rowcount > 0
        if isinstance(message, Compact):
            return self._compact(db, message.before)
        if isinstance(message, ExpireKeys):
            return db.execute("DELETE FROM idempotency WHERE created_at < ?", (message.before,)).rowcount
        if isinstance(message, SumWindows):
            return {s.budget: self._window_sum(db, s) for s in message.sums}
        if isinstance(message, LoadPrices):
            return PriceState(
                entries=[r[0] for r in db.execute("SELECT entry FROM price_versions WHERE effective_to IS NULL")],
                overridden=[r[0] for r in db.execute("SELECT model FROM price_overrides")],
                sources=db.execute(
                    "SELECT source, models, last_success, last_error, etag, last_modified FROM price_sources"
                ).fetchall(),
                version=db.execute("SELECT coalesce(max(version), 0) FROM price_versions").fetchone()[0],
            )
        if isinstance(message, ApplyPrices):
            return self._apply_prices(db, message)
        if isinstance(message, SaveAlert):
            cursor = db.execute(
                "INSERT INTO alerts (ts, kind, severity, budget, key, window_start, message, data, dedupe) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe) DO NOTHING",
                (message.ts, message.kind, message.severity, message.budget, message.key, message.window_start,
                 message.message, message.data, message.dedupe),
            )
            return cursor.lastrowid if cursor.rowcount else None
        if isinstance(message, AckAlert):
            return db.execute(
                "UPDATE alerts SET acked = 1, acked_by = ?, acked_at = ? WHERE id = ? AND acked = 0",
                (message.by, message.at, message.alert_id),
            ).rowcount > 0
        if isinstance(message, PriceHistory):
            return db.execute(
                "SELECT entry, effective_from, effective_to FROM price_versions WHERE model = ? ORDER BY version",
                (message.model,),
            ).fetchall()
        if isinstance(message, SourcePrice):
            row = db.execute(
                "SELECT entry FROM price_versions WHERE model = ? AND source != 'override' "
                "ORDER BY version DESC LIMIT 1", (message.model,),
            ).fetchone()
            return None if row is None else row[0]
        raise TypeError(f"the ledger does not handle {type(message).__name__}")

    @staticmethod
    def _apply_prices(db: sqlite3.Connection, m: ApplyPrices) -> int:
        with immediate(db):
            for change in m.changes:
                db.execute("UPDATE price_versions SET effective_to = ? WHERE model = ? AND effective_to IS NULL",
                           (m.effective_from, change.model))
                db.execute(
                    "INSERT INTO price_versions (version, model, entry, source, effective_from) VALUES (?, ?, ?, ?, ?)",
                    (m.version, change.model, change.entry, change.source, m.effective_from),
                )
            for model in m.close:
                db.execute("UPDATE price_versions SET effective_to = ? WHERE model = ? AND effective_to IS NULL",
                           (m.effective_from, model))
            if m.set_override is not None:
                db.execute("INSERT OR REPLACE INTO price_overrides (model, entry, updated_at) VALUES (?, ?, ?)",
                           (m.set_override, b"", m.effective_from))
            if m.unset_override is not None:
                db.execute("DELETE FROM price_overrides WHERE model = ?", (m.unset_override,))
            for source, models, last_success, last_error, etag, last_modified in m.sources:
                db.execute(
                    "INSERT INTO price_sources (source, models, last_success, last_error, etag, last_modified) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET models = excluded.models, "
                    "last_success = excluded.last_success, last_error = excluded.last_error, "
                    "etag = excluded.etag, last_modified = excluded.last_modified",
                    (source, models, last_success, last_error, etag, last_modified),
                )
        return len(m.changes)

    @staticmethod
    def _compact(db: sqlite3.Connection, before: int) -> int:
        before = before // HOUR_US * HOUR_US  # whole hours: the hour rollup then covers exactly what went
        with immediate(db):
            last = db.execute("SELECT max(record_id) FROM usage WHERE ts < ?", (before,)).fetchone()[0]
            gone = db.execute("DELETE FROM usage WHERE ts < ?", (before,)).rowcount
            for key, value in (("compacted_before", before), ("last_compacted_id", last)):
                if value is not None:
                    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                               "value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                               (key, str(value)))
        return gone

    @staticmethod
    def _window_sum(db: sqlite3.Connection, s: WindowSum) -> list[tuple[tuple[str, ...], int, int]]:
        compacted = compacted_before(db)
        # Records before the compaction point are counted from the rollup only (a late one is in both).
        records_from = s.start if compacted is None or (s.start is not None and s.start >= compacted) else compacted
        out = Ledger._window_sum_records(db, msgspec.structs.replace(s, start=records_from))
        dims = {d for d, _ in s.exact} | set(s.star)
        if compacted is not None and (s.start is None or s.start < compacted) and "context_id" not in dims:
            # The compacted part of the window, from the hour rollup (absent dims are '' there).
            where = [f"{dim} = ?" for dim, _ in s.exact] + [f"{dim} != ''" for dim in s.star] + ["hour < ?"]
            args: list[Any] = [value for _, value in s.exact] + [compacted]
            if s.start is not None:
                where.append("hour >= ?")
                args.append(s.start)
            columns = "".join(f"{dim}, " for dim in s.star)
            sql = (f"SELECT {columns}coalesce(sum(cost_nanos), 0), coalesce(sum(input_tokens + output_tokens + "
                   f"cache_read_tokens + cache_write_tokens), 0) FROM rollup_hour WHERE {' AND '.join(where)}"
                   + (f" GROUP BY {', '.join(s.star)}" if s.star else ""))
            n = len(s.star)
            merged = {key: [cost, tokens] for key, cost, tokens in out}
            for row in db.execute(sql, args):
                acc = merged.setdefault(tuple(row[:n]), [0, 0])
                acc[0] += row[n]
                acc[1] += row[n + 1]
            out = [(key, cost, tokens) for key, (cost, tokens) in merged.items() if cost or tokens or not s.star]
        return out

    @staticmethod
    def _window_sum_records(db: sqlite3.Connection, s: WindowSum) -> list[tuple[tuple[str, ...], int, int]]:
        where, args = _conditions(dict(s.exact), s.start, s.end)
        where += [f"{dim} IS NOT NULL" for dim in s.star]
        columns = "".join(f"{dim}, " for dim in s.star)
        sql = (
            f"SELECT {columns}coalesce(sum(cost_nanos), 0), "
            "coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0) FROM usage"
            + (" WHERE " + " AND ".join(where) if where else "")
            + (f" GROUP BY {', '.join(s.star)}" if s.star else "")
        )
        n = len(s.star)
        return [(tuple(row[:n]), row[n], row[n + 1]) for row in db.execute(sql, args)]

    def _totals(self) -> Totals:
        n, i, o, cr, cw, cost = self.totals
        return Totals(requests=n, input_tokens=i, output_tokens=o, cache_read_tokens=cr,
                      cache_write_tokens=cw, tokens=i + o + cr + cw, cost_usd=usd(cost))

    async def _write(self, writes: list[WriteUsage]) -> None:
        now = self.clock.now_us()
        try:
            answers, next_id, added = await self._in_thread(self._transaction, writes, now)
        except BaseException as exc:
            full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            error = OpError("unavailable", (
                "the ledger's disk is full (or daemon.max_ledger_mb is reached): nothing was recorded; "
                "retry once space is freed" if full else
                f"the ledger could not write ({exc}); nothing was recorded, retry"))
            for w in writes:
                w.reply.fail(error)
                _undo(w)
            if full:
                # The transaction was rolled back and the connection is fine: the next batch simply tries
                # again, and succeeds once space returns. No restart, no lost acknowledgement.
                log.warning("ledger full: %d writes refused", len(writes))
                return
            if isinstance(exc, sqlite3.DatabaseError) or not isinstance(exc, Exception):
                raise  # the supervisor reopens the database
            log.error("ledger write failed: %s", exc)
            return
        self.next_id = next_id
        for i, value in enumerate(added):
            self.totals[i] += value
        if self.bus is not None and added[0]:
            self._publish_recorded(writes, answers)
        for w, answer in zip(writes, answers):
            if isinstance(answer, OpError):
                _undo(w)
                w.reply.fail(answer)
            else:
                if answer.duplicate:
                    _undo(w)
                w.reply.set(answer)

    def _publish_recorded(self, writes: list[WriteUsage], answers: list) -> None:
        """`usage.recorded` for every new record, once it is committed."""
        events = []
        for w, answer in zip(writes, answers):
            if isinstance(answer, OpError) or answer.duplicate:
                continue
            r = w.row
            events.append(("usage.recorded", {
                "record_id": answer.record_id, "ts": from_us(r.ts), "component": r.component, "model": r.model,
                "provider": r.provider, "tier": r.tier, "context_id": r.context_id, "task_type": r.task_type,
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                "cache_read_tokens": r.cache_read_tokens, "cache_write_tokens": r.cache_write_tokens,
                "cost_usd": answer.cost_usd, "priced": r.priced,
            }))
        try:
            self.bus.tell(Publish(events=events))  # type: ignore[union-attr]
        except OpError:
            pass  # a full or closed bus loses events, never records

    def _transaction(self, writes: list[WriteUsage], now: int) -> tuple[list, int, list[int]]:
        """One transaction for the whole batch (in the worker thread). Returns one answer per write."""
        db = self.db
        assert db is not None
        keys = [w.row.idempotency_key for w in writes if w.row.idempotency_key is not None]
        rows: list[tuple] = []
        idem_rows: list[tuple] = []
        answers: list[Recorded | OpError] = []
        added = [0, 0, 0, 0, 0, 0]
        next_id = self.next_id
        with immediate(db):
            known: dict[str, tuple[bytes, bytes]] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                cursor = db.execute(
                    f"SELECT key, payload_hash, result FROM idempotency WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for key, h, result in cursor:
                    known[key] = (h, result)
            for w in writes:
                r = w.row
                key = r.idempotency_key
                if key is not None and key in known:
                    h, result = known[key]
                    if h != w.payload_hash:
                        answers.append(OpError(
                            "idempotency_conflict",
                            f"idempotency key {key!r} was used before for a different request; "
                            "use a new key for a new request",
                            "$.idempotency_key",
                        ))
                    else:
                        answers.append(msgspec.structs.replace(_recorded_decoder.decode(result), duplicate=True))
                    continue
                record_id = next_id
                next_id += 1
                rows.append((
                    record_id, r.ts, now, r.component, r.model, r.provider, r.tier, r.context_id, r.task_type,
                    r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_nanos,
                    int(r.priced), r.price_version, r.reservation_id, r.request_id, r.metadata, key,
                ))
                recorded = Recorded(
                    record_id=record_id, cost_usd=usd(r.cost_nanos), priced=r.priced,
                    price_version=r.price_version, model=r.model, provider=r.provider, tier=r.tier,
                    budgets=w.budgets,
                )
                if key is not None:
                    encoded = msgspec.json.encode(recorded)
                    idem_rows.append((key, w.payload_hash, encoded, now))
                    known[key] = (w.payload_hash, encoded)  # type: ignore[assignment]
                answers.append(recorded)
                added[0] += 1
                added[1] += r.input_tokens
                added[2] += r.output_tokens
                added[3] += r.cache_read_tokens
                added[4] += r.cache_write_tokens
                added[5] += r.cost_nanos
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start:start + _ROWS_PER_INSERT]
                # One statement for many rows: one step into SQLite instead of one per row.
                db.execute(_insert_many(len(chunk)), [v for row in chunk for v in row])
            if rows:
                self.rollups.add(db, rows)
            if idem_rows:
                db.executemany(
                    "INSERT INTO idempotency (key, payload_hash, result, created_at) VALUES (?, ?, ?, ?)", idem_rows
                )
        return answers, next_id, added


def _conditions(equal: dict[str, str], since: int | None, until: int | None) -> tuple[list[str], list[Any]]:
    """WHERE terms for exact dims (names from our own schema, never from clients) and a time range."""
    where = [f"{dim} = ?" for dim in equal]
    args: list[Any] = list(equal.values())
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if until is not None:
        where.append("ts < ?")
        args.append(until)
    return where, args


def compacted_before(db: sqlite3.Connection) -> int | None:
    """The instant (µs) before which records were compacted into the rollups, if any were."""
    row = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'compacted_before'").fetchone()
    return None if row is None else row[0]


def verify_ledger(path: Path) -> tuple[int, int]:
    """(schema version, records) of a ledger file, or LedgerError saying what is wrong with it."""
    if not path.is_file():
        raise LedgerError(f"{path} does not exist")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _check_identity(db, path)
        check_integrity(db, path)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise LedgerError(f"{path} is an empty SQLite file, not a budgetd ledger")
        return version, db.execute("SELECT count(*) FROM usage").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(_UNUSABLE.format(path=path, why=exc)) from None
    finally:
        db.close()


def _verify_copy(db: sqlite3.Connection, path: Path) -> int:
    check_integrity(db, path)
    db.commit()
    return db.execute("SELECT count(*) FROM usage").fetchone()[0]


def _install(partial: Path, dest: Path) -> None:
    """Durably replace `dest` with `partial`."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _undo(write: WriteUsage) -> None:
    """Tell the allocator to take back what it charged for a write that was not applied."""
    if write.undo is not None and write.charges is not None:
        try:
            write.undo.tell(Undo(write.charges))
        except OpError:
            pass  # shutting down: the allocator rebuilds its counters from the ledger at start


# -- the reader -----------------------------------------------------------------

_SELECT_RECORD = (
    "SELECT record_id, ts, recorded_at, component, model, provider, tier, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_nanos, priced, price_version, context_id, task_type, "
    "request_id, reservation_id, metadata FROM usage"
)
_metadata_decoder = msgspec.json.Decoder(dict[str, str | int | float | bool])
_alert_key_decoder = msgspec.json.Decoder(dict[str, str])
_alert_data_decoder = msgspec.json.Decoder(dict[str, Any])


def record_from_row(row: tuple) -> UsageRecord:
    return UsageRecord(
        record_id=row[0], ts=from_us(row[1]), recorded_at=from_us(row[2]), component=row[3], model=row[4],
        provider=row[5], tier=row[6], input_tokens=row[7], output_tokens=row[8], cache_read_tokens=row[9],
        cache_write_tokens=row[10], cost_usd=usd(row[11]), priced=bool(row[12]), price_version=row[13],
        context_id=row[14], task_type=row[15], request_id=row[16], reservation_id=row[17],
        metadata=_metadata_decoder.decode(row[18]) if row[18] else None,
    )


class LedgerReader(Actor):
    """Queries on a read-only connection of their own, so they never stall the writer."""

    name = "ledger-reader"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.db: aiosqlite.Connection | None = None

    async def started(self) -> None:
        self.db = await open_reader(self.path)

    async def stopped(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            with anyio.CancelScope(shield=True):
                await db.close()

    async def handle(self, message: Any) -> None:
        if isinstance(message, ListUsage):
            message.reply.set(await self._list_usage(message))
        elif isinstance(message, ListAlerts):
            message.reply.set(await self._list_alerts(message))
        elif isinstance(message, CallExtremes):
            message.reply.set(await self._extremes(message))
        elif isinstance(message, BackupTo):
            message.reply.set(await self._backup(Path(message.path)))
        elif isinstance(message, RunReport):
            assert self.db is not None
            message.reply.set(await reports.run(self.db, message.query))
        else:
            fail_reply(message, OpError("internal", f"the ledger reader does not handle {type(message).__name__}"))

    async def _list_alerts(self, q: ListAlerts) -> list[Alert]:
        assert self.db is not None
        where, args = [], []
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.unacked:
            where.append("acked = 0")
        sql = ("SELECT id, ts, kind, severity, budget, key, window_start, message, data, acked, acked_by, acked_at "
               "FROM alerts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
        args.append(q.limit)
        rows = await (await self.db.execute(sql, args)).fetchall()
        return [Alert(
            id=r[0], ts=from_us(r[1]), kind=r[2], severity=r[3], budget=r[4],
            key=_alert_key_decoder.decode(r[5]) if r[5] else None,
            window_start=None if r[6] is None else from_us(r[6]), message=r[7],
            data=_alert_data_decoder.decode(r[8]), acked=bool(r[9]), acked_by=r[10],
            acked_at=None if r[11] is None else from_us(r[11]),
        ) for r in rows]

    async def _backup(self, dest: Path) -> tuple[int, int]:
        """SQLite's backup API in one step from this read connection: one snapshot, while writers go on
        (WAL). Written beside `dest`, verified, then renamed into place."""
        assert self.db is not None
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        target = await anyio.to_thread.run_sync(lambda: sqlite3.connect(partial, check_same_thread=False))
        try:
            await self.db.backup(target, pages=-1)
            records = await anyio.to_thread.run_sync(_verify_copy, target, partial)
        except BaseException:
            await anyio.to_thread.run_sync(target.close)
            partial.unlink(missing_ok=True)
            raise
        await anyio.to_thread.run_sync(target.close)
        await anyio.to_thread.run_sync(_install, partial, dest)
        return dest.stat().st_size, records

    async def _extremes(self, q: CallExtremes) -> tuple[list[UsageRecord], dict[str, int]]:
        assert self.db is not None
        rows = await (await self.db.execute(
            _SELECT_RECORD + " WHERE ts >= ? AND ts < ? ORDER BY cost_nanos DESC LIMIT ?", (q.since, q.until, q.limit)
        )).fetchall()
        prompts = await (await self.db.execute(
            "SELECT model, max(input_tokens + cache_read_tokens + cache_write_tokens) FROM usage "
            "WHERE ts >= ? AND ts < ? GROUP BY model", (q.since, q.until),
        )).fetchall()
        return [record_from_row(r) for r in rows], dict(prompts)

    async def _list_usage(self, q: ListUsage) -> tuple[list[UsageRecord], int | None]:
        assert self.db is not None
        where, args = _conditions(q.filters, q.since, q.until)
        if q.before_id is not None:
            where.append("record_id < ?")
            args.append(q.before_id)
        sql = _SELECT_RECORD + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY record_id DESC LIMIT ?"
        args.append(q.limit + 1)
        rows = await (await self.db.execute(sql, args)).fetchall()
        records = [record_from_row(r) for r in rows[: q.limit]]
        more = len(rows) > q.limit
        return records, (records[-1].record_id if more and records else None)
