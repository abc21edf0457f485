"""Reports: usage summed by dims and calendar buckets, read from the rollups where they cover it.

A report's range is cut into pieces, each read from the coarsest table that
sums it exactly: whole local months and days from `rollup_month` and
`rollup_day` (when the report's zone has them), whole UTC hours from
`rollup_hour`, and the minutes at the edges from the records themselves. All pieces are read in one read transaction, so
they see the same snapshot of the ledger. Sums are integers throughout.
"""

from typing import Any, NamedTuple

import aiosqlite
import msgspec

from actors.rollups import ROLLUP_DIMS
from budgetd.model import ReportRow, Totals, usd
from budgetd.periods import HOUR_US, from_us, window
from budgetd.protocol import OpError

MAX_BUCKETS = 10_000
PERIOD = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}


class ReportQuery(msgspec.Struct, frozen=True, kw_only=True):
    group_by: tuple[str, ...] = ()
    filters: dict[str, str] = {}
    since: int | None = None  # microseconds since the epoch
    until: int | None = None
    bucket: str | None = None
    zone: str = "UTC"
    limit: int | None = None
    order: str = "cost"


class Bucket(NamedTuple):
    start: int   # the part of the bucket inside the report's range
    end: int
    label: int | None  # the bucket's own start (None: no bucketing)
    whole: bool  # not clipped by the range


class Piece(NamedTuple):
    source: str  # "month", "day", "hour" or "raw"
    start: int
    end: int
    label: int | None
    own: bool  # each row's own time (day or hour) is its bucket


def buckets(since: int, until: int, bucket: str | None, zone: str) -> list[Bucket]:
    """The calendar buckets that cover [since, until), clipped to it."""
    if bucket is None:
        return [Bucket(since, until, None, True)]
    out: list[Bucket] = []
    starts = _hour_starts(since, until, zone) if bucket == "hour" else _starts(PERIOD[bucket], since, until, zone)
    for start, end in starts:
        out.append(Bucket(max(start, since), min(end, until), start, start >= since and end <= until))
        if len(out) > MAX_BUCKETS:
            raise OpError("invalid", f"the report would have more than {MAX_BUCKETS:,} {bucket} buckets; "
                                     "narrow since/until or use a coarser bucket", "$.bucket")
    return out


def _starts(period: str, since: int, until: int, zone: str) -> Any:
    w = window(period, zone, from_us(since))
    while w.start_us < until:
        yield w.start_us, w.end_us
        w = window(period, zone, w.end)


def _hour_starts(since: int, until: int, zone: str) -> Any:
    """Local hours; where the zone's day is made of whole UTC hours, they are UTC hours (no zone lookups)."""
    for day_start, day_end in _starts("daily", since, until, zone):
        lo, hi = max(day_start, since), min(day_end, until)
        if day_start % HOUR_US == 0 and day_end % HOUR_US == 0:
            first = lo // HOUR_US * HOUR_US
            for h in range(first, hi, HOUR_US):
                yield h, h + HOUR_US
        else:
            yield from _starts("hourly", lo, hi, zone)


#: The local levels, coarsest first, and the buckets each can serve (a piece must not straddle buckets).
_LOCAL_LEVELS = (("month", "monthly", (None, "month")), ("day", "daily", (None, "day", "week", "month")))
_COARSER_OR_EQUAL = {"month": ("month",), "day": ("day", "week", "month")}


def plan(cuts: list[Bucket], bucket: str | None, zone: str, local_zone: str | None, rollups: bool) -> list[Piece]:
    """Cut every bucket into month, day, hour and raw pieces. `local_zone` has month and day rollups
    to use (or None)."""
    levels = [(source, period) for source, period, serves in _LOCAL_LEVELS
              if rollups and local_zone is not None and bucket in serves]
    pieces: list[Piece] = []
    for b in cuts:
        _cut(b.start, b.end, b, levels, bucket, zone, local_zone, rollups, pieces)
    return _merge(pieces)


def _cut(lo: int, hi: int, b: Bucket, levels: list[tuple[str, str]], bucket: str | None, zone: str,
         local_zone: str | None, rollups: bool, out: list[Piece]) -> None:
    if lo >= hi:
        return
    if levels:
        source, period = levels[0]
        if b.whole and local_zone == zone and bucket in _COARSER_OR_EQUAL[source]:
            u1, u2 = lo, hi  # a whole bucket is whole local units of this level
        else:
            first = window(period, local_zone, from_us(lo))  # type: ignore[arg-type]
            u1 = lo if first.start_us == lo else first.end_us
            u2 = window(period, local_zone, from_us(hi)).start_us  # type: ignore[arg-type]
        if u1 < u2:  # type: ignore[operator]
            out.append(Piece(source, u1, u2, b.label, bucket == source))  # type: ignore[arg-type]
            _cut(lo, u1, b, levels[1:], bucket, zone, local_zone, rollups, out)  # type: ignore[arg-type]
            _cut(u2, hi, b, levels[1:], bucket, zone, local_zone, rollups, out)  # type: ignore[arg-type]
        else:
            _cut(lo, hi, b, levels[1:], bucket, zone, local_zone, rollups, out)
        return
    h1, h2 = -(-lo // HOUR_US) * HOUR_US, hi // HOUR_US * HOUR_US
    if rollups and h1 < h2:
        out.append(Piece("hour", h1, h2, b.label, bucket == "hour"))
        if lo < h1:
            out.append(Piece("raw", lo, h1, b.label, False))
        if h2 < hi:
            out.append(Piece("raw", h2, hi, b.label, False))
    else:
        out.append(Piece("raw", lo, hi, b.label, False))


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Join contiguous pieces of one source that land in the same bucket (or each in its own)."""
    out: list[Piece] = []
    last: dict[str, int] = {}
    for p in pieces:
        i = last.get(p.source)
        if i is not None:
            q = out[i]
            if q.end == p.start and q.own == p.own and (p.own or q.label == p.label):
                out[i] = q._replace(end=p.end)
                continue
        last[p.source] = len(out)
        out.append(p)
    return out


_TIME = {"month": "month", "day": "day", "hour": "hour", "raw": "ts"}
_TABLE = {"month": "rollup_month", "day": "rollup_day", "hour": "rollup_hour", "raw": "usage"}
_RAW_SUMS = "count(*), sum(r.input_tokens), sum(r.output_tokens), sum(r.cache_read_tokens), " \
            "sum(r.cache_write_tokens), sum(r.cost_nanos)"
_ROLLUP_SUMS = "sum(r.requests), sum(r.input_tokens), sum(r.output_tokens), sum(r.cache_read_tokens), " \
               "sum(r.cache_write_tokens), sum(r.cost_nanos)"


def _sql(source: str, pieces: list[Piece], group_by: tuple[str, ...], filters: dict[str, str],
         local_zone: str | None) -> tuple[str, list[Any]]:
    """One query for every piece of one source. The pieces are our own integers, written inline."""
    values = ", ".join(f"({p.start}, {p.end}, {'NULL' if p.label is None else p.label}, {int(p.own)})"
                       for p in pieces)
    time = f"r.{_TIME[source]}"
    on = [f"{time} >= p.s", f"{time} < p.e"]
    args: list[Any] = []
    if source in ("month", "day"):
        on.insert(0, "r.zone = ?")
        args.append(local_zone)
    on += [f"r.{dim} = ?" for dim in filters]  # dims are checked names, never client text
    args += list(filters.values())
    columns = "".join(f", r.{dim}" for dim in group_by)
    sql = (
        f"WITH p(s, e, b, own) AS (VALUES {values}) "
        f"SELECT CASE WHEN p.own THEN {time} ELSE p.b END{columns}, "
        f"{_RAW_SUMS if source == 'raw' else _ROLLUP_SUMS} "
        f"FROM p CROSS JOIN {_TABLE[source]} AS r ON {' AND '.join(on)} "
        f"GROUP BY {', '.join(str(i + 1) for i in range(1 + len(group_by)))}"
    )
    return sql, args


async def run(db: aiosqlite.Connection, q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    """The report, read in one snapshot."""
    rollups = all(d in ROLLUP_DIMS for d in (*q.group_by, *q.filters))
    await db.execute("BEGIN")
    try:
        since, until = q.since, q.until
        if since is None or until is None:
            row = await (await db.execute(
                "SELECT (SELECT min(ts) FROM usage), (SELECT max(ts) FROM usage)")).fetchone()
            if row is None or row[0] is None:
                return [], Totals()
            since = row[0] if since is None else since
            until = row[1] + 1 if until is None else until
        if since >= until:
            return [], Totals()
        zones = {r[0] for r in await (await db.execute("SELECT zone FROM rollup_zones")).fetchall()}
        if q.bucket is None:  # any zone's months and days will do; the report's own if it has them
            local_zone: str | None = q.zone if q.zone in zones else ("UTC" if "UTC" in zones else None)
        elif q.bucket != "hour" and q.zone in zones:
            local_zone = q.zone
        else:
            local_zone = None
        pieces = plan(buckets(since, until, q.bucket, q.zone), q.bucket, q.zone, local_zone, rollups)
        sums: dict[tuple, list[int]] = {}
        for source in ("month", "day", "hour", "raw"):
            mine = [p for p in pieces if p.source == source]
            if not mine:
                continue
            sql, args = _sql(source, mine, q.group_by, q.filters, local_zone)
            for row in await (await db.execute(sql, args)).fetchall():
                key = (row[0], tuple(v if v != "" else None for v in row[1:1 + len(q.group_by)]))
                acc = sums.get(key)
                values = row[1 + len(q.group_by):]
                if acc is None:
                    sums[key] = list(values)
                else:
                    for i, v in enumerate(values):
                        acc[i] += v
    finally:
        await db.execute("COMMIT")
    return arrange(sums, q)


def arrange(sums: dict[tuple, list[int]], q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    """Order the groups, keep the first `limit` and fold the rest into one `other` row per bucket."""
    per_group: dict[tuple, list[int]] = {}
    total = [0] * 6
    for (_, group), values in sums.items():
        acc = per_group.setdefault(group, [0] * 6)
        for i, v in enumerate(values):
            acc[i] += v
            total[i] += v
    ranked = sorted(per_group, key=lambda g: (_rank(per_group[g], q.order), _group_key(g)))
    rank = {g: i for i, g in enumerate(ranked)}
    kept = set(ranked if q.limit is None else ranked[: q.limit])
    rows: dict[tuple, list[int]] = {}
    for (label, group), values in sums.items():
        key = (label, group if group in kept else None)
        acc = rows.setdefault(key, [0] * 6)
        for i, v in enumerate(values):
            acc[i] += v
    ordered = sorted(rows, key=lambda k: (-1 if k[0] is None else k[0],
                                          len(ranked) if k[1] is None else rank[k[1]]))
    return [_row(label, group, rows[(label, group)], q.group_by) for label, group in ordered], _totals(total)


def _rank(values: list[int], order: str) -> Any:
    requests, i, o, cr, cw, cost = values
    if order == "tokens":
        return -(i + o + cr + cw)
    if order == "requests":
        return -requests
    if order == "group":
        return 0
    return -cost


def _group_key(group: tuple) -> tuple:
    return tuple((v is not None, v or "") for v in group)


def _row(label: int | None, group: tuple | None, v: list[int], group_by: tuple[str, ...]) -> ReportRow:
    return ReportRow(
        group={} if group is None else dict(zip(group_by, group)),
        other=group is None,
        bucket_start=None if label is None else from_us(label),
        requests=v[0], input_tokens=v[1], output_tokens=v[2], cache_read_tokens=v[3], cache_write_tokens=v[4],
        tokens=v[1] + v[2] + v[3] + v[4], cost_usd=usd(v[5]),
    )


def _totals(v: list[int]) -> Totals:
    return Totals(requests=v[0], input_tokens=v[1], output_tokens=v[2], cache_read_tokens=v[3],
                  cache_write_tokens=v[4], tokens=v[1] + v[2] + v[3] + v[4], cost_usd=usd(v[5]))

