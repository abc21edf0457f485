"""The PostgreSQL store's reader side: a connection of its own, so long reads never stall the writer.
Reports are planned as on SQLite (`report_plan`) and read the same rollups, in one snapshot."""

from typing import Any

from actors.ledger.messages import CallExtremes, ListAlerts, ListUsage
from actors.ledger.postgres.writes import Connection, compacted_before, conditions
from actors.ledger.report_plan import ReportQuery, accumulate, arrange, reading
from actors.ledger.report_sql import POSTGRES, SELECT_RECORD, TABLES, report_sql
from actors.ledger.sqlite.reads import alert_from_row, record_from_row
from actors.ledger.sqlite.rollups import ROLLUP_DIMS
from budgetd.config import dsn_shown
from budgetd.model import Alert, ReportRow, Totals, UsageRecord
from budgetd.protocol import OpError


class PostgresReadStore:
    """The ledger's reader side on PostgreSQL."""

    def __init__(self, dsn: str) -> None:
        self.connection = Connection(dsn, dsn_shown(dsn))

    async def open(self) -> None:
        await self.connection.open()

    async def close(self) -> None:
        await self.connection.close()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self.connection.run(lambda conn: conn.fetch(sql, *args))

    async def list_usage(self, q: ListUsage) -> tuple[list[UsageRecord], int | None]:
        where, args = conditions(q.filters, q.since, q.until)
        if q.before_id is not None:
            args.append(q.before_id)
            where.append(f"record_id < ${len(args)}")
        args.append(q.limit + 1)
        sql = (SELECT_RECORD + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY record_id DESC LIMIT ${len(args)}")
        rows = await self._fetch(sql, *args)
        records = [record_from_row(tuple(r)) for r in rows[: q.limit]]
        more = len(rows) > q.limit
        return records, (records[-1].record_id if more and records else None)

    async def list_alerts(self, q: ListAlerts) -> list[Alert]:
        where, args = [], []
        if q.since is not None:
            args.append(q.since)
            where.append(f"ts >= ${len(args)}")
        if q.unacked:
            where.append("acked = 0")
        args.append(q.limit)
        sql = ("SELECT id, ts, kind, severity, budget, key, window_start, message, data, acked, acked_by, acked_at "
               "FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY id DESC LIMIT ${len(args)}")
        return [alert_from_row(tuple(r)) for r in await self._fetch(sql, *args)]

    async def call_extremes(self, q: CallExtremes) -> tuple[list[UsageRecord], dict[str, int]]:
        rows = await self._fetch(SELECT_RECORD + " WHERE ts >= $1 AND ts < $2 ORDER BY cost_nanos DESC LIMIT $3",
                                 q.since, q.until, q.limit)
        prompts = await self._fetch(
            "SELECT model, max(input_tokens + cache_read_tokens + cache_write_tokens + cache_write_1h_tokens) "
            "FROM usage WHERE ts >= $1 AND ts < $2 GROUP BY model", q.since, q.until)
        return [record_from_row(tuple(r)) for r in rows], {r[0]: int(r[1]) for r in prompts}

    async def report(self, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
        async def read(conn: Any) -> tuple[list[ReportRow], Totals]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _report(conn, q)

        return await self.connection.run(read)

    async def backup(self, path: str) -> tuple[int, int]:
        raise OpError("invalid", "this node's ledger is the fleet's PostgreSQL database: back it up with the "
                      "database's own tools (pg_dump), not `budget backup`", "$.op")


async def _report(conn: Any, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    bounds = None
    if q.since is None or q.until is None:
        bounds = await conn.fetchrow(
            "SELECT least((SELECT min(ts) FROM usage), (SELECT min(hour) FROM rollup_hour)), "
            "(SELECT max(ts) FROM usage), (SELECT max(hour) FROM rollup_hour)")
    zones = {r[0] for r in await conn.fetch("SELECT zone FROM rollup_zones")}
    found = reading(q, ROLLUP_DIMS, await compacted_before(conn), zones, bounds)
    if found is None:
        return [], Totals()
    sums: dict[tuple, list[int]] = {}
    n = 1 + len(q.group_by)
    for source in TABLES:
        mine = [p for p in found.pieces if p.source == source]
        if not mine:
            continue
        sql, args = report_sql(source, mine, q.group_by, q.filters, found.local_zone, POSTGRES)
        for row in await conn.fetch(sql, *args):
            accumulate(sums, (row[0], tuple(row[1:n])), [int(v) for v in row[n:]])
    return arrange(sums, q)
