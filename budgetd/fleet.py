"""A single host's SQLite ledger copied into an empty fleet database (what `budget fleet import` does).

Everything the ledger holds goes across in one PostgreSQL transaction, read from one SQLite snapshot:
records (with their ids), idempotency keys, open holds, budgets, prices and their history, alerts, the
rollups and what compaction left. A database that already holds a ledger, or one a node is serving, is
refused; so is a file that is not a current budgetd ledger.
"""

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import msgspec

from actors.ledger import SCHEMA_VERSION, LedgerError, verify_ledger
from actors.ledger.postgres import NODES_LOCK, FleetDatabaseError, connect, migrate
from actors.ledger.report_plan import SUMS
from actors.ledger.sqlite.rollups import ROLLUP_DIMS
from actors.ledger.sqlite.schema import USAGE_COLUMNS
from budgetd.config import dsn_shown
from budgetd.daemon import StartupError, lock_data_dir

_CHUNK = 10_000
_ROLLUP = (*ROLLUP_DIMS, *SUMS)
#: Every table, its columns, and which of them are BYTEA in PostgreSQL (SQLite may hold those as text).
TABLES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "usage": (USAGE_COLUMNS, frozenset()),
    "idempotency": (("key", "payload_hash", "result", "created_at"), frozenset({"payload_hash", "result"})),
    "holds": (("id", "created_at", "expires_at", "component", "estimate", "attrs", "cost_nanos", "tokens"),
              frozenset({"estimate", "attrs"})),
    "budgets": (("name", "spec", "origin", "updated_at"), frozenset({"spec"})),
    "price_versions": (("version", "model", "entry", "source", "effective_from", "effective_to"),
                       frozenset({"entry"})),
    "price_overrides": (("model", "entry", "updated_at"), frozenset({"entry"})),
    "price_sources": (("source", "models", "last_success", "last_error", "etag", "last_modified"), frozenset()),
    "alerts": (("id", "ts", "kind", "severity", "budget", "key", "window_start", "message", "data", "dedupe",
                "acked", "acked_by", "acked_at"), frozenset({"data"})),
    "meta": (("key", "value"), frozenset()),
    "rollup_hour": (("hour", *_ROLLUP), frozenset()),
    "rollup_day": (("zone", "day", *_ROLLUP), frozenset()),
    "rollup_week": (("zone", "week", *_ROLLUP), frozenset()),
    "rollup_month": (("zone", "month", *_ROLLUP), frozenset()),
    "rollup_zones": (("zone",), frozenset()),
}


__all__ = ["FleetDatabaseError", "ImportRefused", "Imported", "import_ledger"]


class ImportRefused(Exception):
    """The import cannot be done; the message says why and what to do."""


class Imported(msgspec.Struct, frozen=True):
    database: str  # without its password
    rows: dict[str, int]  # by table


def _rows(db: sqlite3.Connection, table: str, columns: tuple[str, ...], binary: frozenset[str]) -> Iterator[list]:
    at = [i for i, c in enumerate(columns) if c in binary]
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while chunk := cursor.fetchmany(_CHUNK):
        if at:
            chunk = [list(r) for r in chunk]
            for r in chunk:
                for i in at:
                    if isinstance(r[i], str):
                        r[i] = r[i].encode()
        yield chunk


async def import_ledger(path: Path, dsn: str) -> Imported:
    try:
        version, _ = verify_ledger(path)
    except LedgerError as exc:
        raise ImportRefused(f"{exc}: nothing was imported") from None
    if version != SCHEMA_VERSION:
        raise ImportRefused(f"{path} is of schema version {version}; start this budgetd once on it (it migrates "
                            f"the file to version {SCHEMA_VERSION}), stop it, then import")
    import asyncpg

    try:
        # The daemon of that file holds this lock while it runs: what it wrote after the copy would be lost.
        held_dir = lock_data_dir(path.parent)
    except StartupError:
        raise ImportRefused(f"a budgetd daemon is using {path}: stop it, then import (nothing was imported)") from None
    where = dsn_shown(dsn)
    try:
        conn: Any = await connect(dsn, where)
    except BaseException:
        held_dir.close()
        raise
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", NODES_LOCK):
            raise ImportRefused(f"a budgetd node is serving {where}: stop it, then import (nothing was imported)")
        await migrate(conn, where)
        # Anything but the zone list (which a node that never wrote makes) is a ledger already there.
        held = await conn.fetchval("SELECT " + " + ".join(
            f"(SELECT count(*) FROM {t}{' WHERE key <> $1' if t == 'meta' else ''})" for t in TABLES
            if t != "rollup_zones"), "budgets_version")
        if held:
            raise ImportRefused(f"{where} already holds a ledger; import into an empty database (nothing was "
                                "imported)")
        counts: dict[str, int] = {}
        db.execute("BEGIN")  # one snapshot of the file, whatever a daemon on it writes meanwhile
        async with conn.transaction():
            await conn.execute("DELETE FROM rollup_zones")  # the file's zones are the ones its rollups hold
            for table, (columns, binary) in TABLES.items():
                counts[table] = 0
                for chunk in _rows(db, table, columns, binary):
                    await conn.copy_records_to_table(table, records=chunk, columns=list(columns))
                    counts[table] += len(chunk)
            last = await conn.fetchval(
                "SELECT greatest(coalesce((SELECT max(record_id) FROM usage), 0), "
                "coalesce((SELECT value::bigint FROM meta WHERE key = 'last_compacted_id'), 0))")
            if last:
                await conn.execute("SELECT setval('usage_record_ids', $1)", last)
            alerts = await conn.fetchval("SELECT max(id) FROM alerts")
            if alerts:
                await conn.execute("SELECT setval(pg_get_serial_sequence('alerts', 'id'), $1)", alerts)
        db.rollback()
        return Imported(database=where, rows=counts)
    except asyncpg.exceptions.PostgresError as exc:
        raise ImportRefused(f"the fleet database {where} refused the import ({exc}); nothing was imported") from None
    finally:
        db.close()
        await conn.close()
        held_dir.close()
