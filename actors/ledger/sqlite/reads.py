"""The SQLite store's reader side: a read-only aiosqlite connection of its own, so long reads never
stall the writer. Reports read the rollups where they cover the range."""

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

from actors.ledger.messages import CallExtremes, ListAlerts, ListUsage
from actors.ledger.report_plan import ReportQuery, accumulate, arrange, reading
from actors.ledger.report_sql import SELECT_RECORD, SQLITE, TABLES, report_sql
from actors.ledger.sqlite.rollups import ROLLUP_DIMS
from actors.ledger.sqlite.schema import check_integrity, install_file, open_reader
from actors.ledger.sqlite.writes import conditions
from budgetd.model import Alert, ReportRow, Totals, UsageRecord, usd
from budgetd.periods import from_us

_metadata_decoder = msgspec.json.Decoder(dict[str, str | int | float | bool])
_alert_key_decoder = msgspec.json.Decoder(dict[str, str])
_alert_data_decoder = msgspec.json.Decoder(dict[str, Any])


def record_from_row(row: tuple) -> UsageRecord:
    return UsageRecord(
        record_id=row[0], ts=from_us(row[1]), recorded_at=from_us(row[2]), component=row[3], model=row[4],
        provider=row[5], tier=row[6], input_tokens=row[7], output_tokens=row[8], cache_read_tokens=row[9],
        cache_write_tokens=row[10], cost_usd=usd(row[11]), priced=bool(row[12]), price_version=row[13],
        context_id=row[14], task_type=row[15], request_id=row[16], reservation_id=row[17],
        metadata=_metadata_decoder.decode(row[18]) if row[18] else None, cache_write_1h_tokens=row[19],
        reasoning_tokens=row[20], audio_input_tokens=row[21], audio_output_tokens=row[22], service_tier=row[23],
        web_search_requests=row[24],
    )


def alert_from_row(r: tuple) -> Alert:
    return Alert(
        id=r[0], ts=from_us(r[1]), kind=r[2], severity=r[3], budget=r[4],
        key=_alert_key_decoder.decode(r[5]) if r[5] else None,
        window_start=None if r[6] is None else from_us(r[6]), message=r[7],
        data=_alert_data_decoder.decode(r[8]), acked=bool(r[9]), acked_by=r[10],
        acked_at=None if r[11] is None else from_us(r[11]),
    )


class SqliteReadStore:
    """The ledger's reader side on SQLite."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.db = await open_reader(self.path)

    async def close(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            with anyio.CancelScope(shield=True):
                await db.close()

    async def report(self, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
        assert self.db is not None
        return await _report(self.db, q)

    async def list_alerts(self, q: ListAlerts) -> list[Alert]:
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
        return [alert_from_row(r) for r in rows]

    async def backup(self, path: str) -> tuple[int, int]:
        """SQLite's backup API in one step from this read connection: one snapshot, while writers go on
        (WAL). Written beside `path`, verified, then renamed into place."""
        assert self.db is not None
        dest = Path(path)
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        target = await anyio.to_thread.run_sync(lambda: sqlite3.connect(partial, check_same_thread=False))
        try:
            await self.db.backup(target, pages=-1)
            records = await anyio.to_thread.run_sync(_verify_copy, target, partial)
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled backup (shutdown) leaves no partial file
                await anyio.to_thread.run_sync(target.close)
                partial.unlink(missing_ok=True)
            raise
        await anyio.to_thread.run_sync(target.close)
        await anyio.to_thread.run_sync(install_file, partial, dest)
        return dest.stat().st_size, records

    async def call_extremes(self, q: CallExtremes) -> tuple[list[UsageRecord], dict[str, int]]:
        assert self.db is not None
        rows = await (await self.db.execute(
            SELECT_RECORD + " WHERE ts >= ? AND ts < ? ORDER BY cost_nanos DESC LIMIT ?", (q.since, q.until, q.limit)
        )).fetchall()
        prompts = await (await self.db.execute(
            "SELECT model, max(input_tokens + cache_read_tokens + cache_write_tokens + cache_write_1h_tokens) "
            "FROM usage "
            "WHERE ts >= ? AND ts < ? GROUP BY model", (q.since, q.until),
        )).fetchall()
        return [record_from_row(r) for r in rows], dict(prompts)

    async def list_usage(self, q: ListUsage) -> tuple[list[UsageRecord], int | None]:
        assert self.db is not None
        where, args = conditions(q.filters, q.since, q.until)
        if q.before_id is not None:
            where.append("record_id < ?")
            args.append(q.before_id)
        sql = SELECT_RECORD + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY record_id DESC LIMIT ?"
        args.append(q.limit + 1)
        rows = await (await self.db.execute(sql, args)).fetchall()
        records = [record_from_row(r) for r in rows[: q.limit]]
        more = len(rows) > q.limit
        return records, (records[-1].record_id if more and records else None)


def _verify_copy(db: sqlite3.Connection, path: Path) -> int:
    check_integrity(db, path)
    db.commit()
    return db.execute("SELECT count(*) FROM usage").fetchone()[0]


async def _report(db: aiosqlite.Connection, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    """The report, read in one snapshot."""
    await db.execute("BEGIN")
    try:
        bounds = None
        if q.since is None or q.until is None:
            # The hour rollup reaches back further than the records once old ones were compacted.
            bounds = await (await db.execute(
                "SELECT min(coalesce((SELECT min(ts) FROM usage), (SELECT min(hour) FROM rollup_hour)), "
                "coalesce((SELECT min(hour) FROM rollup_hour), (SELECT min(ts) FROM usage))), "
                "(SELECT max(ts) FROM usage), (SELECT max(hour) FROM rollup_hour)")).fetchone()
        compacted = (await (await db.execute(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'compacted_before'")).fetchone() or [None])[0]
        zones = {r[0] for r in await (await db.execute("SELECT zone FROM rollup_zones")).fetchall()}
        found = reading(q, ROLLUP_DIMS, compacted, zones, bounds)
        if found is None:
            return [], Totals()
        sums: dict[tuple, list[int]] = {}
        n = 1 + len(q.group_by)
        for source in TABLES:
            mine = [p for p in found.pieces if p.source == source]
            if not mine:
                continue
            sql, args = report_sql(source, mine, q.group_by, q.filters, found.local_zone, SQLITE)
            for row in await (await db.execute(sql, args)).fetchall():
                accumulate(sums, (row[0], row[1:n]), row[n:])
    finally:
        await db.execute("COMMIT")
    return arrange(sums, q)
