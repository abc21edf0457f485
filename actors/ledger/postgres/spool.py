"""A fleet node's spool: records (and closed holds) acknowledged while the fleet's database is away.

The spool is a SQLite file in the node's data directory, committed with synchronous FULL before a
write is acknowledged, so it holds the ledger's promise while the database cannot. Each record takes
its final id from a pool the node claimed from the database's sequence while it could, so the answer
it got stays true. Once the database answers again the spool is replayed batch by batch, in order,
each in one transaction that inserts only the records whose ids (and idempotency keys) the database
does not hold yet: a replay cut short and done again counts nothing twice. A record whose key another
node recorded meanwhile is that node's record (the first answer wins).

A reserve is never spooled: its holds must be admitted by the database against every node.
"""

import sqlite3
from pathlib import Path

import anyio
import msgspec

from actors.ledger.messages import Counted, UsageRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, payload_hash BLOB NOT NULL, result BLOB NOT NULL);
"""


class SpooledRecord(msgspec.Struct, frozen=True):
    usage: tuple  # the row as the usage table has it (USAGE_COLUMNS), its id included
    row: UsageRow  # the same, for the rollups
    counted: list[Counted]
    key: tuple | None  # (key, payload_hash, result, created_at) of a keyed record


class SpooledBatch(msgspec.Struct, frozen=True):
    records: list[SpooledRecord]
    closed: list[str]  # holds to delete: committed or released while the database was away


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SpooledBatch).decode


class Spool:
    """The spool file; every call commits before it returns (in a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.depth = 0  # batches waiting
        self._thread = anyio.CapacityLimiter(1)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(_SCHEMA)
        self.depth = db.execute("SELECT count(*) FROM batches").fetchone()[0]
        self.db = db

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open, limiter=self._thread)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    async def known(self, keys: list[str]) -> dict[str, tuple[bytes, bytes]]:
        """The first (payload hash, answer) of each of `keys` the spool holds."""
        if not keys:
            return {}

        def read(db: sqlite3.Connection) -> dict[str, tuple[bytes, bytes]]:
            marks = ", ".join("?" * len(keys))
            return {k: (bytes(h), bytes(r)) for k, h, r in db.execute(
                f"SELECT key, payload_hash, result FROM keys WHERE key IN ({marks})", keys)}

        return await self._call(read)

    async def add(self, batch: SpooledBatch) -> None:
        def add(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO batches (body) VALUES (?)", (_encode(batch),))
                db.executemany("INSERT OR IGNORE INTO keys (key, payload_hash, result) VALUES (?, ?, ?)",
                               [r.key[:3] for r in batch.records if r.key is not None])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._call(add)
        self.depth += 1

    async def oldest(self, records: int) -> tuple[list[int], list[SpooledBatch]]:
        """The oldest batches, as many as hold about `records` records (one at least)."""
        def read(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return db.execute("SELECT seq, body FROM batches ORDER BY seq LIMIT 256").fetchall()

        seqs: list[int] = []
        batches: list[SpooledBatch] = []
        total = 0
        for seq, body in await self._call(read):
            batch = _decode(body)
            if batches and total + len(batch.records) > records:
                break
            seqs.append(seq)
            batches.append(batch)
            total += len(batch.records)
        return seqs, batches

    async def done(self, seqs: list[int]) -> None:
        """The batches are in the database: they leave the spool (and its keys, once the spool is empty)."""
        def done(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM batches WHERE seq = ?", [(seq,) for seq in seqs])
            left = db.execute("SELECT count(*) FROM batches").fetchone()[0]
            if not left:
                db.execute("DELETE FROM keys")
            db.execute("COMMIT")
            return left

        self.depth = await self._call(done)

    async def _call(self, fn):  # type: ignore[no-untyped-def]
        if self.db is None:
            await self.open()
        return await anyio.to_thread.run_sync(fn, self.db, limiter=self._thread)
