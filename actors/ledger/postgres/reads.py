"""The PostgreSQL store's reader side: a connection of its own, so long reads never stall the writer.
Reports are planned as on SQLite (`report_plan`) and read the same rollups, in one snapshot."""

from typing import Any

from actors.ledger.messages import CallExtremes, ListAlerts, ListUsage
from actors.ledger.postgres.writes import Connection, compacted_before, conditions
from actors.ledger.report_plan import SUMS, Piece, ReportQuery, accumulate, arrange, buckets, plan
from actors.ledger.sqlite.reads import alert_from_row, record_from_row
from actors.ledger.sqlite.rollups import ROLLUP_DIMS
from budgetd.config import dsn_shown
from budgetd.model import Alert, ReportRow, Totals, UsageRecord
from budgetd.periods import HOUR_US, from_us
from budgetd.protocol import OpError

_SELECT_RECORD = (
    "SELECT record_id, ts, recorded_at, component, model, provider, tier, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_nanos, priced, price_version, context_id, task_type, "
    "request_id, reservation_id, metadata, cache_write_1h_tokens, reasoning_tokens, audio_input_tokens, "
    "audio_output_tokens, service_tier, web_search_requests FROM usage"
)
_TIME = {"month": "month", "week": "week", "day": "day", "hour": "hour", "raw": "ts"}
_TABLE = {"month": "rollup_month", "week": "rollup_week", "day": "rollup_day", "hour": "rollup_hour",
          "raw": "usage"}
_RAW_SUMS = ", ".join(["count(*)", *(f"sum(r.{name})" for name in SUMS[1:])])
_ROLLUP_SUMS = ", ".join(f"sum(r.{name})" for name in SUMS)


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
        sql = (_SELECT_RECORD + (" WHERE " + " AND ".join(where) if where else "")
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
        rows = await self._fetch(_SELECT_RECORD + " WHERE ts >= $1 AND ts < $2 ORDER BY cost_nanos DESC LIMIT $3",
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


def _sql(source: str, pieces: list[Piece], group_by: tuple[str, ...], filters: dict[str, str],
         local_zone: str | None) -> tuple[str, list[Any]]:
    """One query for every piece of one source (as on SQLite). The pieces are our own integers, inline."""
    time = f"r.{_TIME[source]}"
    conditions: list[str] = []
    args: list[Any] = []
    if source in ("month", "week", "day"):
        args.append(local_zone)
        conditions.append(f"r.zone = ${len(args)}")
    for dim, value in filters.items():  # dims are checked names, never client text
        args.append(value)
        conditions.append(f"r.{dim} = ${len(args)}")
    columns = "".join(f", r.{dim}" if source != "raw" else f", coalesce(r.{dim}, '')" for dim in group_by)
    sums = _RAW_SUMS if source == "raw" else _ROLLUP_SUMS
    group = ", ".join(str(i + 1) for i in range(1 + len(group_by)))
    if all(p.own for p in pieces):
        ranges = " OR ".join(f"({time} >= {p.start} AND {time} < {p.end})" for p in pieces)
        return (f"SELECT {time}{columns}, {sums} FROM {_TABLE[source]} AS r "
                f"WHERE {' AND '.join([f'({ranges})', *conditions])} GROUP BY {group}"), args
    values = ", ".join(f"({p.start}::bigint, {p.end}::bigint, {'NULL' if p.label is None else p.label}::bigint, "
                       f"{'true' if p.own else 'false'})" for p in pieces)
    sql = (
        f"WITH p(s, e, b, own) AS (VALUES {values}) "
        f"SELECT CASE WHEN p.own THEN {time} ELSE p.b END{columns}, {sums} "
        f"FROM p JOIN {_TABLE[source]} AS r ON {' AND '.join([f'{time} >= p.s', f'{time} < p.e', *conditions])} "
        f"GROUP BY {group}"
    )
    return sql, args


async def _report(conn: Any, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    rollups = all(d in ROLLUP_DIMS for d in (*q.group_by, *q.filters))
    since, until = q.since, q.until
    if since is None or until is None:
        row = await conn.fetchrow(
            "SELECT least((SELECT min(ts) FROM usage), (SELECT min(hour) FROM rollup_hour)), "
            "(SELECT max(ts) FROM usage), (SELECT max(hour) FROM rollup_hour)")
        if row is None or row[0] is None:
            return [], Totals()
        since = row[0] if since is None else since
        until = max(row[1] or 0, (row[2] or 0) + HOUR_US - 1) + 1 if until is None else until
    compacted = await compacted_before(conn)
    if compacted is not None and since < compacted:
        if not rollups:
            raise OpError("invalid", f"records before {from_us(compacted):%Y-%m-%d %H:%M} UTC were compacted "
                          "into the rollups, which do not keep context_id: start the report there or later",
                          "$.since")
        since = since // HOUR_US * HOUR_US
        if until < compacted:
            until = until // HOUR_US * HOUR_US
    if since >= until:
        return [], Totals()
    zones = {r[0] for r in await conn.fetch("SELECT zone FROM rollup_zones")}
    if q.bucket is None:
        local_zone: str | None = q.zone if q.zone in zones else ("UTC" if "UTC" in zones else None)
    elif q.bucket != "hour" and q.zone in zones:
        local_zone = q.zone
    else:
        local_zone = None
    pieces = plan(buckets(since, until, q.bucket, q.zone), q.bucket, q.zone, local_zone, rollups)
    if compacted is not None:
        pieces = [p if p.source != "raw" else p._replace(start=max(p.start, compacted)) for p in pieces
                  if p.source != "raw" or p.end > compacted]
    sums: dict[tuple, list[int]] = {}
    n = 1 + len(q.group_by)
    for source in _TABLE:
        mine = [p for p in pieces if p.source == source]
        if not mine:
            continue
        sql, args = _sql(source, mine, q.group_by, q.filters, local_zone)
        for row in await conn.fetch(sql, *args):
            accumulate(sums, (row[0], tuple(row[1:n])), [int(v) for v in row[n:]])
    return arrange(sums, q)
