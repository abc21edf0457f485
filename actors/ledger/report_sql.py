"""The SQL both backends read records and reports with, in their two dialects (SQLite, PostgreSQL): the
columns of a record, and one query per source for the pieces of a report (`report_plan`)."""

from typing import Any, Callable, NamedTuple

from actors.ledger.report_plan import SUMS, Piece

SELECT_RECORD = (
    "SELECT record_id, ts, recorded_at, component, model, provider, tier, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_nanos, priced, price_version, context_id, task_type, "
    "request_id, reservation_id, metadata, cache_write_1h_tokens, reasoning_tokens, audio_input_tokens, "
    "audio_output_tokens, service_tier, web_search_requests FROM usage"
)
_TIME = {"month": "month", "week": "week", "day": "day", "hour": "hour", "raw": "ts"}
#: Every source a report reads, and its table, in the order they are read.
TABLES = {"month": "rollup_month", "week": "rollup_week", "day": "rollup_day", "hour": "rollup_hour", "raw": "usage"}
# The sums in the order of SUMS: a record counts one request; a rollup row carries its count.
_RAW_SUMS = ", ".join(["count(*)", *(f"sum(r.{name})" for name in SUMS[1:])])
_ROLLUP_SUMS = ", ".join(f"sum(r.{name})" for name in SUMS)


class Dialect(NamedTuple):
    parameter: Callable[[int], str]  # the n-th parameter (from 1)
    piece: Callable[[Piece], str]  # a piece as one row of a VALUES list
    join: str  # how the pieces meet the table (SQLite's CROSS JOIN keeps the pieces as the outer loop)


SQLITE = Dialect(lambda n: "?", lambda p: f"({p.start}, {p.end}, {'NULL' if p.label is None else p.label}, "
                                          f"{int(p.own)})", "CROSS JOIN")
POSTGRES = Dialect(lambda n: f"${n}", lambda p: f"({p.start}::bigint, {p.end}::bigint, "
                                                f"{'NULL' if p.label is None else p.label}::bigint, "
                                                f"{'true' if p.own else 'false'})", "JOIN")


def report_sql(source: str, pieces: list[Piece], group_by: tuple[str, ...], filters: dict[str, str],
               local_zone: str | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """One query for every piece of one source. The pieces are our own integers, written inline."""
    time = f"r.{_TIME[source]}"
    conditions: list[str] = []
    args: list[Any] = []
    if source in ("month", "week", "day"):
        args.append(local_zone)
        conditions.append(f"r.zone = {dialect.parameter(len(args))}")
    for dim, value in filters.items():  # dims are checked names, never client text
        args.append(value)
        conditions.append(f"r.{dim} = {dialect.parameter(len(args))}")
    # Absent values are '' in the rollups; the records' NULLs are read the same way.
    columns = "".join(f", r.{dim}" if source != "raw" else f", coalesce(r.{dim}, '')" for dim in group_by)
    sums = _RAW_SUMS if source == "raw" else _ROLLUP_SUMS
    group = ", ".join(str(i + 1) for i in range(1 + len(group_by)))
    if all(p.own for p in pieces):
        # Each row's own time is its bucket: a plain range scan, which the rollup's key order serves without
        # a join (and, grouped by a prefix of that key, without sorting).
        ranges = " OR ".join(f"({time} >= {p.start} AND {time} < {p.end})" for p in pieces)
        return (f"SELECT {time}{columns}, {sums} FROM {TABLES[source]} AS r "
                f"WHERE {' AND '.join([f'({ranges})', *conditions])} GROUP BY {group}"), args
    values = ", ".join(dialect.piece(p) for p in pieces)
    on = " AND ".join([f"{time} >= p.s", f"{time} < p.e", *conditions])
    return (f"WITH p(s, e, b, own) AS (VALUES {values}) "
            f"SELECT CASE WHEN p.own THEN {time} ELSE p.b END{columns}, {sums} "
            f"FROM p {dialect.join} {TABLES[source]} AS r ON {on} GROUP BY {group}"), args
