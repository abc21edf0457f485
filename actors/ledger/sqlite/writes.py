"""The SQLite store's writer side: one sqlite3 connection, used from one worker thread.

Each method runs whole in the worker thread (one thread hop per call, however
many rows: a hop per statement, as aiosqlite does it, made each batch wait on a
busy event loop several times).
"""

import functools
import itertools
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import anyio
import msgspec

from actors.ledger.messages import (
    ApplyPrices,
    HoldRow,
    PriceState,
    PriceVersion,
    SaveAlert,
    SourceState,
    StoredBudget,
    Tally,
    WindowSum,
    WindowTotal,
    Write,
)
from actors.ledger import batch
from actors.ledger.report_plan import SUMS, TOKEN_SUMS
from actors.ledger.sqlite import rollups
from actors.ledger.sqlite.schema import USAGE_COLUMNS, compacted_before, open_writer
from actors.ledger.sqlite.transactions import immediate
from actors.ledger.store import StoreBroken, StoreFull
from budgetd.periods import HOUR_US
from budgetd.protocol import OpError, Released

_PARAMETERS_PER_STATEMENT = 16_000  # at most; less where SQLite was built with a lower limit
_KEYS_PER_SELECT = 500
_HOLD_COLUMNS = ("id", "created_at", "expires_at", "component", "estimate", "attrs", "cost_nanos", "tokens")
_KEY_COLUMNS = ("key", "payload_hash", "result", "created_at")
log = logging.getLogger("budgetd.ledger")


@functools.lru_cache(maxsize=256)
def _insert_statement(table: str, columns: tuple[str, ...], n: int) -> str:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row] * n)


def _insert(db: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Many rows in few statements: one step into SQLite each, where `executemany` takes one per row (and
    hands the GIL back and forth around every step, which a busy event loop makes slow)."""
    limit = min(_PARAMETERS_PER_STATEMENT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per_statement = limit // len(columns)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        db.execute(_insert_statement(table, columns, len(chunk)), [v for row in chunk for v in row])


class SqliteStore:
    """The ledger's writer side on SQLite (WAL, synchronous FULL or NORMAL), with its rollups."""

    def __init__(self, path: Path, durability: str = "full", report_zones: Sequence[str] = ("UTC",),
                 max_bytes: int = 0) -> None:
        self.path = path
        self.durability = durability
        self.max_bytes = max_bytes
        self.rollups = rollups.Rollups(["UTC", *report_zones])
        self.db: sqlite3.Connection | None = None
        self._thread = anyio.CapacityLimiter(1)  # one statement at a time on the connection
        self._next_id = 1
        self._totals = Tally()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(db, *args)` in the worker thread; SQLite's failures as the store's own."""
        db = self.db
        if db is None:
            raise StoreBroken("the ledger is not open")
        try:
            return await anyio.to_thread.run_sync(fn, db, *args, limiter=self._thread)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StoreFull(str(exc)) from None  # rolled back; the connection is fine
            raise StoreBroken(str(exc)) from exc

    async def open(self) -> None:
        self.db = await anyio.to_thread.run_sync(open_writer, self.path, self.durability, self.max_bytes,
                                                 limiter=self._thread)
        built = await self._run(self.rollups.backfill)
        if built:
            log.info("day rollups built for %s", ", ".join(built))
        self._next_id, self._totals = await self._run(_position)

    async def close(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(db.close, limiter=self._thread)

    def totals(self) -> Tally:
        return self._totals

    def follow(self, others: Tally, mine: Tally) -> None:
        pass  # a single host has no other nodes

    async def replay(self, records: int | None = None) -> int:
        return 0  # nor a spool: its ledger is always at hand

    async def release_elsewhere(self, ids: list[str], components: frozenset[str] | None, now_us: int) -> Released:
        return Released(released=False, count=0)  # nor other nodes

    async def checkpoint(self) -> None:
        """Fold the WAL into the database file (for a copy that is one file)."""
        await self._run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))

    # -- records --

    async def append(self, writes: list[Write], now_us: int) -> list[Any]:
        answers, next_id, added = await self._run(self._append, writes, now_us, self._next_id, self._totals)
        self._next_id = next_id
        self._totals.add(added)
        return answers

    def _append(self, db: sqlite3.Connection, writes: list[Write], now: int, next_id: int,
                totals: Tally) -> tuple[list[Any], int, Tally]:
        """One transaction for the whole batch; one answer per write, in order."""
        keyed = batch.keys_of(writes)
        ids = itertools.count(next_id)
        with immediate(db):
            b = batch.plan(writes, _known_keys(db, keyed), now, ids, totals)
            _insert(db, "usage", USAGE_COLUMNS, b.usage)
            if b.inserted:
                self.rollups.add(db, b.inserted)
            _insert(db, "holds", _HOLD_COLUMNS, b.holds)
            for start in range(0, len(b.closed), _KEYS_PER_SELECT):
                chunk = b.closed[start:start + _KEYS_PER_SELECT]
                db.execute(f"DELETE FROM holds WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            _insert(db, "idempotency", _KEY_COLUMNS, b.keys)
        return b.answers, next_id + len(b.usage), Tally.of_rows(b.inserted)

    async def load_holds(self, now_us: int) -> list[HoldRow]:
        def load(db: sqlite3.Connection) -> list[HoldRow]:
            with immediate(db):
                db.execute("DELETE FROM holds WHERE expires_at <= ?", (now_us,))  # expired: they hold nothing
                return [HoldRow(*row) for row in db.execute(
                    "SELECT id, created_at, expires_at, component, estimate, attrs, cost_nanos, tokens FROM holds")]

        return await self._run(load)

    async def window_sums(self, sums: list[WindowSum]) -> dict[str, list[WindowTotal]]:
        return await self._run(lambda db: {s.budget: _window_sum(db, s) for s in sums})

    async def compact(self, before_us: int) -> int:
        return await self._run(_compact, before_us)

    async def expire_keys(self, before_us: int) -> int:
        return await self._run(
            lambda db: db.execute("DELETE FROM idempotency WHERE created_at < ?", (before_us,)).rowcount)

    # -- budgets --

    async def load_budgets(self) -> list[StoredBudget]:
        return await self._run(lambda db: [StoredBudget(spec, origin) for spec, origin in db.execute(
            "SELECT spec, origin FROM budgets ORDER BY name")])

    async def save_budget(self, name: str, spec: bytes, origin: str, now_us: int) -> bool:
        await self._run(lambda db: db.execute(
            "INSERT INTO budgets (name, spec, origin, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin, "
            "updated_at = excluded.updated_at", (name, spec, origin, now_us)))
        return True

    async def delete_budget(self, name: str) -> bool:
        return await self._run(lambda db: db.execute("DELETE FROM budgets WHERE name = ?", (name,)).rowcount > 0)

    # -- prices --

    async def load_prices(self) -> PriceState:
        return await self._run(_load_prices)

    async def apply_prices(self, change: ApplyPrices) -> int:
        return await self._run(_apply_prices, change)

    async def price_history(self, model: str) -> list[PriceVersion]:
        return await self._run(lambda db: [PriceVersion(*row) for row in db.execute(
            "SELECT entry, effective_from, effective_to FROM price_versions WHERE model = ? ORDER BY version",
            (model,))])

    async def source_price(self, model: str) -> bytes | None:
        def latest(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT entry FROM price_versions WHERE model = ? AND source != 'override' "
                             "ORDER BY version DESC LIMIT 1", (model,)).fetchone()
            return None if row is None else row[0]

        return await self._run(latest)

    # -- alerts --

    async def save_alert(self, a: SaveAlert) -> int | None:
        def insert(db: sqlite3.Connection) -> int | None:
            cursor = db.execute(
                "INSERT INTO alerts (ts, kind, severity, budget, key, window_start, message, data, dedupe) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe) DO NOTHING",
                (a.ts, a.kind, a.severity, a.budget, a.key, a.window_start, a.message, a.data, a.dedupe))
            return cursor.lastrowid if cursor.rowcount else None

        return await self._run(insert)

    async def ack_alert(self, alert_id: int, by: str | None, at_us: int) -> bool:
        def ack(db: sqlite3.Connection) -> bool:
            if db.execute("UPDATE alerts SET acked = 1, acked_by = ?, acked_at = ? WHERE id = ? AND acked = 0",
                          (by, at_us, alert_id)).rowcount:
                return True
            if db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise OpError("not_found", f"no alert {alert_id}; see `budget alerts --all` for their ids",
                              "$.alert_id")
            return False

        return await self._run(ack)


_TOKENS = " + ".join(TOKEN_SUMS)  # what a budget's token limit counts, as SQL


def _known_keys(db: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[bytes, bytes]]:
    known: dict[str, tuple[bytes, bytes]] = {}
    for start in range(0, len(keys), _KEYS_PER_SELECT):
        chunk = keys[start:start + _KEYS_PER_SELECT]
        cursor = db.execute(
            f"SELECT key, payload_hash, result FROM idempotency WHERE key IN ({','.join('?' * len(chunk))})", chunk)
        for key, h, result in cursor:
            known[key] = (h, result)
    return known


def _position(db: sqlite3.Connection) -> tuple[int, Tally]:
    """The next record id and the totals of every record ever written (the hour rollup still holds what
    compaction removed from `usage`)."""
    columns = ", ".join(SUMS)
    try:
        row = db.execute(f"SELECT {', '.join(f'coalesce(sum({c}), 0)' for c in SUMS)} FROM rollup_hour").fetchone()
    except sqlite3.OperationalError:  # "integer overflow": a ledger of a version that took costs up to $1e9 each
        sums = [0] * len(SUMS)
        for values in db.execute(f"SELECT {columns} FROM rollup_hour"):
            for i, v in enumerate(values):
                sums[i] += int(v)
        row = tuple(sums)
    last = db.execute(
        "SELECT max(coalesce((SELECT max(record_id) FROM usage), 0), "
        "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_compacted_id'), 0))").fetchone()[0]
    return last + 1, Tally(*row)


def _load_prices(db: sqlite3.Connection) -> PriceState:
    return PriceState(
        entries=[r[0] for r in db.execute("SELECT entry FROM price_versions WHERE effective_to IS NULL")],
        overridden=[r[0] for r in db.execute("SELECT model FROM price_overrides")],
        sources=[SourceState(*row) for row in db.execute(
            "SELECT source, models, last_success, last_error, etag, last_modified FROM price_sources")],
        version=db.execute("SELECT coalesce(max(version), 0) FROM price_versions").fetchone()[0],
    )


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
        for s in m.sources:
            db.execute(
                "INSERT INTO price_sources (source, models, last_success, last_error, etag, last_modified) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET models = excluded.models, "
                "last_success = excluded.last_success, last_error = excluded.last_error, "
                "etag = excluded.etag, last_modified = excluded.last_modified",
                (s.source, s.models, s.last_success, s.last_error, s.etag, s.last_modified),
            )
    return len(m.changes)


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


def _window_sum(db: sqlite3.Connection, s: WindowSum) -> list[WindowTotal]:
    compacted = compacted_before(db)
    # Records before the compaction point are counted from the rollup only (a late one is in both).
    records_from = s.start if compacted is None or (s.start is not None and s.start >= compacted) else compacted
    out = _window_sum_records(db, msgspec.structs.replace(s, start=records_from))
    dims = {d for d, _ in s.exact} | set(s.star)
    if compacted is not None and (s.start is None or s.start < compacted) and "context_id" not in dims:
        # The compacted part of the window, from the hour rollup (absent dims are '' there).
        where = [f"{dim} = ?" for dim, _ in s.exact] + [f"{dim} != ''" for dim in s.star] + ["hour < ?"]
        args: list[Any] = [value for _, value in s.exact] + [compacted]
        if s.start is not None:
            where.append("hour >= ?")
            args.append(s.start)
        columns = "".join(f"{dim}, " for dim in s.star)
        sql = (f"SELECT {columns}coalesce(sum(cost_nanos), 0), coalesce(sum({_TOKENS}), 0) "
               f"FROM rollup_hour WHERE {' AND '.join(where)}"
               + (f" GROUP BY {', '.join(s.star)}" if s.star else ""))
        n = len(s.star)
        merged = {t.key: [t.nanos, t.tokens] for t in out}
        for row in db.execute(sql, args):
            acc = merged.setdefault(tuple(row[:n]), [0, 0])
            acc[0] += row[n]
            acc[1] += row[n + 1]
        out = [WindowTotal(key, nanos, tokens) for key, (nanos, tokens) in merged.items()
               if nanos or tokens or not s.star]
    return out


def _window_sum_records(db: sqlite3.Connection, s: WindowSum) -> list[WindowTotal]:
    where, args = conditions(dict(s.exact), s.start, s.end)
    where += [f"{dim} IS NOT NULL" for dim in s.star]
    columns = "".join(f"{dim}, " for dim in s.star)
    sql = (
        f"SELECT {columns}coalesce(sum(cost_nanos), 0), "
        f"coalesce(sum({_TOKENS}), 0) FROM usage"
        + (" WHERE " + " AND ".join(where) if where else "")
        + (f" GROUP BY {', '.join(s.star)}" if s.star else "")
    )
    n = len(s.star)
    try:
        return [WindowTotal(tuple(row[:n]), row[n], row[n + 1]) for row in db.execute(sql, args)]
    except sqlite3.OperationalError:  # "integer overflow" in a ledger of an older version: sum in Python
        sums: dict[tuple, list[int]] = {}
        rows = f"SELECT {columns}cost_nanos, {_TOKENS} FROM usage" + (" WHERE " + " AND ".join(where) if where else "")
        for row in db.execute(rows, args):
            acc = sums.setdefault(tuple(row[:n]), [0, 0])
            acc[0] += int(row[n])
            acc[1] += int(row[n + 1])
        return [WindowTotal(key, nanos, tokens) for key, (nanos, tokens) in sums.items()]


def conditions(equal: dict[str, str], since: int | None, until: int | None) -> tuple[list[str], list[Any]]:
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
