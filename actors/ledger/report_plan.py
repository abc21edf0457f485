"""How a report is read: its range cut into calendar buckets, each bucket into pieces that a rollup
(or the records) sums exactly, and the sums arranged into rows. Pure: no I/O here.

A piece is whole local months, weeks or days (read from the month, week and
day rollups when the report's zone has them), whole UTC hours (the hour
rollup), or the minutes at the edges (the records). Sums are integers
throughout, kept in the order of `SUMS`.
"""

from typing import Any, Iterable, NamedTuple

import msgspec

from budgetd.model import BUCKET_PERIOD, ReportRow, Totals, usd
from budgetd.periods import HOUR_US, from_us, window
from budgetd.protocol import OpError

#: What a sum over records holds, in this order, wherever sums are lists (rollup rows, report groups).
SUMS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "audio_output_tokens",
        "web_search_requests", "cost_nanos")
#: The token kinds a `tokens` total adds up (the others are parts of these).
TOKEN_SUMS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")
_TOKEN_AT = [SUMS.index(name) for name in TOKEN_SUMS]
_COUNTS = SUMS[:-1]  # everything but the cost
_COST_AT = SUMS.index("cost_nanos")

MAX_BUCKETS = 10_000


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
    source: str  # "month", "week", "day", "hour" or "raw"
    start: int
    end: int
    label: int | None
    own: bool  # each row's own time (day or hour) is its bucket


def buckets(since: int, until: int, bucket: str | None, zone: str) -> list[Bucket]:
    """The calendar buckets that cover [since, until), clipped to it."""
    if bucket is None:
        return [Bucket(since, until, None, True)]
    out: list[Bucket] = []
    if bucket == "hour":
        starts = _hour_starts(since, until, zone)
    else:
        starts = _starts(BUCKET_PERIOD[bucket], since, until, zone)
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
_LOCAL_LEVELS = (
    ("month", "monthly", (None, "month")),
    ("week", "weekly", (None, "week", "month")),
    ("day", "daily", (None, "day", "week", "month")),
)
#: The buckets that are always whole units of a level.
_MADE_OF = {"month": ("month",), "week": ("week",), "day": ("day", "week", "month")}


def plan(cuts: list[Bucket], bucket: str | None, zone: str, local_zone: str | None, rollups: bool) -> list[Piece]:
    """Cut every bucket into month, week, day, hour and raw pieces. `local_zone` has local rollups
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
        if b.whole and local_zone == zone and bucket in _MADE_OF[source]:
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


class Reading(NamedTuple):
    """What a report reads: its pieces, and the zone whose local rollups they use (or None)."""

    pieces: list[Piece]
    local_zone: str | None


def reading(q: ReportQuery, rollup_dims: Iterable[str], compacted: int | None, zones: set[str],
            bounds: tuple[int | None, int | None, int | None] | None = None) -> Reading | None:
    """The pieces of `q`, or None when its range holds nothing. `rollup_dims`: what the rollups are keyed by;
    `compacted`: the instant before which records were compacted into the rollups, if any were; `zones`:
    those with local rollups; `bounds` (needed when `q` leaves an end of its range open): the earliest record
    or rollup hour, the latest record, the latest rollup hour."""
    rollups = all(d in rollup_dims for d in (*q.group_by, *q.filters))
    since, until = q.since, q.until
    if since is None or until is None:
        if bounds is None or bounds[0] is None:
            return None
        since = bounds[0] if since is None else since
        until = max(bounds[1] or 0, (bounds[2] or 0) + HOUR_US - 1) + 1 if until is None else until
    if compacted is not None and since < compacted:
        if not rollups:
            raise OpError("invalid", f"records before {from_us(compacted):%Y-%m-%d %H:%M} UTC were compacted "
                          "into the rollups, which do not keep context_id: start the report there or later",
                          "$.since")
        # Before the compaction point only whole hours are known.
        since = since // HOUR_US * HOUR_US
        if until < compacted:
            until = until // HOUR_US * HOUR_US
    if since >= until:
        return None
    if q.bucket is None:  # any zone's months and days will do; the report's own if it has them
        local_zone: str | None = q.zone if q.zone in zones else ("UTC" if "UTC" in zones else None)
    elif q.bucket != "hour" and q.zone in zones:
        local_zone = q.zone
    else:
        local_zone = None
    pieces = plan(buckets(since, until, q.bucket, q.zone), q.bucket, q.zone, local_zone, rollups)
    if compacted is not None:
        # Records before the compaction point are only late ones, already in the rollups: never read them.
        pieces = [p if p.source != "raw" else p._replace(start=max(p.start, compacted)) for p in pieces
                  if p.source != "raw" or p.end > compacted]
    return Reading(pieces, local_zone)


def arrange(sums: dict[tuple, list[int]], q: ReportQuery) -> tuple[list[ReportRow], Totals]:
    """Order the groups, keep the first `limit` and fold the rest into one `other` row per bucket."""
    per_group: dict[tuple, list[int]] = {}
    for (_, group), values in sums.items():
        accumulate(per_group, group, values)
    total = [sum(column) for column in zip(*per_group.values())] if per_group else [0] * len(SUMS)
    ranked = sorted(per_group, key=lambda g: (_rank(per_group[g], q.order), g))
    rank = {g: i for i, g in enumerate(ranked)}
    rows = sums
    if q.limit is not None and len(ranked) > q.limit:
        rank[None] = len(ranked)  # type: ignore[index]
        kept = set(ranked[: q.limit])
        rows = {}
        for (label, group), values in sums.items():
            accumulate(rows, (label, group if group in kept else None), values)
    ordered = sorted(rows, key=lambda k: (-1 if k[0] is None else k[0], rank[k[1]]))
    times: dict[int, Any] = {}
    out = []
    for key in ordered:
        label, group = key
        v = rows[key]
        when = None
        if label is not None:
            when = times.get(label)
            if when is None:
                when = times[label] = from_us(label)
        out.append(ReportRow(
            group={} if group is None else {d: x or None for d, x in zip(q.group_by, group)},
            other=group is None, bucket_start=when, **_named(v),
        ))
    return out, _totals(total)


def _rank(values: list[int], order: str) -> Any:
    if order == "tokens":
        return -sum(values[i] for i in _TOKEN_AT)
    if order == "requests":
        return -values[0]
    if order == "group":
        return 0
    return -values[_COST_AT]


def _totals(v: list[int]) -> Totals:
    return Totals(**_named(v))


def _named(v: list[int]) -> dict[str, Any]:
    """Sums in the order of `SUMS` as the fields of Totals (and of a ReportRow)."""
    fields: dict[str, Any] = dict(zip(_COUNTS, v))
    fields["tokens"] = sum(v[i] for i in _TOKEN_AT)
    fields["cost_usd"] = usd(v[_COST_AT])
    return fields


def accumulate(into: dict[tuple, list[int]], key: tuple, values: Iterable[int]) -> None:
    """Add `values` (in the order of `SUMS`) to the sums kept under `key`."""
    acc = into.get(key)
    if acc is None:
        into[key] = list(values)
    else:
        for i, v in enumerate(values):
            acc[i] += v
