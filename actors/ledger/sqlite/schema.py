"""The SQLite ledger file: its schema and forward migrations, and opening it safely.

A file is used only when it is one of ours (its application id) at a schema this
version reads, and passes SQLite's quick check; anything else is refused with
what to do, and never written.
"""

import logging
import os
import sqlite3
from pathlib import Path

import aiosqlite

from actors.ledger.sqlite import rollups
from actors.ledger.sqlite.transactions import immediate

log = logging.getLogger("budgetd.ledger")


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
    # v4 below; v3: open reservations, durable: a restart or a crash never lets a hard limit be spent twice
    """
    CREATE TABLE holds (
        id         TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,  -- µs; the hold counts in the windows of this instant
        expires_at INTEGER NOT NULL,  -- µs, by the daemon's clock
        component  TEXT NOT NULL,
        estimate   BLOB NOT NULL,     -- the Estimate as JSON
        attrs      BLOB NOT NULL,     -- what budget scopes match on (model as its price key), as JSON
        cost_nanos INTEGER NOT NULL,
        tokens     INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # v4: what a provider bills apart (1-hour cache writes, reasoning and audio parts, service tier, searches)
    rollups.SCHEMA_V4,
]
SCHEMA_VERSION = len(MIGRATIONS)
APPLICATION_ID = 0x42554447  # "BUDG": tells our ledger from any other SQLite file

#: The columns of a record, in the order the writer inserts them.
USAGE_COLUMNS = (
    "record_id", "ts", "recorded_at", "component", "model", "provider", "tier", "context_id",
    "task_type", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_nanos", "priced", "price_version", "reservation_id", "request_id", "metadata",
    "idempotency_key", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "audio_output_tokens",
    "service_tier", "web_search_requests",
)


class LedgerError(Exception):
    """The ledger file cannot be used; the message says what to do."""


_UNUSABLE = (
    "{path} is not a usable budgetd ledger ({why}). Move it aside or point --data-dir elsewhere; "
    "budgetd never overwrites an unknown file."
)


_EMPTY = (
    "{path} is {what}, not a budgetd ledger: a ledger never shrinks to nothing. If it held your records, "
    "restore a backup (`budget restore BACKUP`); to start a new empty ledger, remove the file."
)


def open_writer(path: Path, durability: str, max_bytes: int = 0) -> sqlite3.Connection:
    """The writer's connection: identified, WAL, migrated. Runs in the ledger's worker thread.

    Only a path that does not exist becomes a new ledger; an empty or foreign file is refused."""
    if not path.exists():
        _create(path)
    elif path.is_file() and path.stat().st_size == 0:
        raise LedgerError(_EMPTY.format(path=path, what="empty (0 bytes)"))
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


def _create(path: Path) -> None:
    """A new ledger, made beside `path` and renamed into place once complete: a crash or a full disk
    while it is made leaves no half-made ledger behind (only the `.new` file, replaced next time)."""
    partial = path.with_name(path.name + ".new")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(partial, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = FULL")
        migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise LedgerError(f"the disk holding {path} is full; free some space and start budgetd again") from None
        raise
    db.close()
    install_file(partial, path)


def install_file(partial: Path, dest: Path) -> None:
    """Durably put the complete file `partial` in place of `dest`: its bytes, then the rename, are on disk
    before this returns (a crash leaves the old file or the new one, never a part)."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    directory = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _identity_problem(db: sqlite3.Connection) -> str | None:
    """What the file is when it is not a ledger this budgetd can read, in words; None when it is one."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and tables == 0:
        return "an empty SQLite file"
    if app_id != APPLICATION_ID:
        return "an SQLite file that budgetd did not create"
    if version > SCHEMA_VERSION:
        return f"of schema version {version}, newer than this budgetd understands ({SCHEMA_VERSION})"
    return None


def _check_identity(db: sqlite3.Connection, path: Path) -> None:
    problem = _identity_problem(db)
    if problem == "an empty SQLite file":
        raise LedgerError(_EMPTY.format(path=path, what=problem))
    if problem is not None and problem.startswith("of schema version"):
        raise LedgerError(f"{path} is {problem}. Upgrade budgetd, or restore a backup.")
    if problem is not None:
        raise LedgerError(_UNUSABLE.format(path=path, why=problem))


def _integrity_problems(db: sqlite3.Connection) -> str:
    """SQLite's quick check (structure, not every index entry): what is wrong, or "" when nothing is."""
    try:
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    return "" if problems == ["ok"] else "; ".join(problems)


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """A damaged ledger is refused, never repaired."""
    problems = _integrity_problems(db)
    if problems:
        raise LedgerError(
            f"{path} is damaged ({problems}). Restore a backup with `budget restore BACKUP` "
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


def verify_ledger(path: Path) -> tuple[int, int]:
    """(schema version, records) of a copy of a ledger (a backup), or LedgerError saying what it is instead;
    the caller says what to do."""
    if not path.exists():
        raise LedgerError(f"{path} does not exist")
    if not path.is_file():
        raise LedgerError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise LedgerError(f"{path} is empty (0 bytes)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problem = _identity_problem(db)
        if problem is not None:
            raise LedgerError(f"{path} is {problem}")
        problems = _integrity_problems(db)
        if problems:
            raise LedgerError(f"{path} is damaged ({problems})")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise LedgerError(f"{path} is an SQLite file budgetd made but never wrote a ledger into")
        return version, db.execute("SELECT count(*) FROM usage").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path} is not an SQLite file ({exc})") from None
    finally:
        db.close()


def compacted_before(db: sqlite3.Connection) -> int | None:
    """The instant (µs) before which records were compacted into the rollups, if any were."""
    row = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'compacted_before'").fetchone()
    return None if row is None else row[0]
