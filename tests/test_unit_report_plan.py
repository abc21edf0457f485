"""In-process tests of `actors.ledger.report_plan`: calendar buckets, the pieces a report is read in,
and how sums become rows. Instants are written out by hand (Berlin is UTC+1 in winter, +2 in summer)."""

import datetime as dt
import random

import pytest

from actors.ledger.report_plan import MAX_BUCKETS, SUMS, Bucket, Piece, ReportQuery, accumulate, arrange, buckets, plan
from budgetd.periods import from_us, to_us, window
from budgetd.protocol import OpError

UTC = dt.timezone.utc
HOUR_US = 3_600_000_000
PERIOD = {"month": "monthly", "week": "weekly", "day": "daily"}


def us(text: str) -> int:
    return to_us(dt.datetime.fromisoformat(text).replace(tzinfo=UTC))


def spans(cuts: list[Bucket]) -> list[tuple[int, int, int | None, bool]]:
    return [(b.start, b.end, b.label, b.whole) for b in cuts]


# -- buckets ----------------------------------------------------------------------------------------


def test_no_bucketing_is_one_whole_bucket_of_the_range():
    """bucket=None: the range itself, unlabelled."""
    assert buckets(5, 10**16, None, "Europe/Berlin") == [Bucket(5, 10**16, None, True)]


def test_day_buckets_are_clipped_at_both_ends_and_labelled_with_their_own_start():
    """10:00 on the 28th to 05:00 on the 30th: a clipped first day, a whole one, a clipped last one."""
    assert spans(buckets(us("2026-11-28T10:00"), us("2026-11-30T05:00"), "day", "UTC")) == [
        (us("2026-11-28T10:00"), us("2026-11-29T00:00"), us("2026-11-28T00:00"), False),
        (us("2026-11-29T00:00"), us("2026-11-30T00:00"), us("2026-11-29T00:00"), True),
        (us("2026-11-30T00:00"), us("2026-11-30T05:00"), us("2026-11-30T00:00"), False),
    ]


def test_month_buckets_cross_the_year_and_an_aligned_range_is_one_whole_bucket():
    """Mid-December to February: December clipped, January whole; exactly December: one whole bucket; an
    empty range on a boundary: no bucket."""
    assert spans(buckets(us("2026-12-15T00:00"), us("2027-02-01T00:00"), "month", "UTC")) == [
        (us("2026-12-15T00:00"), us("2027-01-01T00:00"), us("2026-12-01T00:00"), False),
        (us("2027-01-01T00:00"), us("2027-02-01T00:00"), us("2027-01-01T00:00"), True),
    ]
    assert spans(buckets(us("2026-12-01T00:00"), us("2027-01-01T00:00"), "month", "UTC")) == [
        (us("2026-12-01T00:00"), us("2027-01-01T00:00"), us("2026-12-01T00:00"), True)]
    assert buckets(us("2027-01-01T00:00"), us("2027-01-01T00:00"), "month", "UTC") == []


def test_week_buckets_start_on_monday():
    """Saturday 2026-11-28 to Thursday 2026-12-10: the week of Monday the 23rd (clipped), of the 30th (whole)
    and of 7 December (clipped)."""
    assert spans(buckets(us("2026-11-28T10:00"), us("2026-12-10T00:00"), "week", "UTC")) == [
        (us("2026-11-28T10:00"), us("2026-11-30T00:00"), us("2026-11-23T00:00"), False),
        (us("2026-11-30T00:00"), us("2026-12-07T00:00"), us("2026-11-30T00:00"), True),
        (us("2026-12-07T00:00"), us("2026-12-10T00:00"), us("2026-12-07T00:00"), False),
    ]


def test_berlin_day_buckets_are_23_and_25_hours_long_on_dst_days():
    """Local midnights in Berlin: 23:00Z before spring-forward (29 March), 22:00Z after; the day of
    fall-back (25 October) runs 22:00Z to 23:00Z the next day."""
    spring = buckets(us("2026-03-27T23:00"), us("2026-03-30T22:00"), "day", "Europe/Berlin")
    assert [(b.label, (b.end - b.start) // HOUR_US, b.whole) for b in spring] == [
        (us("2026-03-27T23:00"), 24, True), (us("2026-03-28T23:00"), 23, True), (us("2026-03-29T22:00"), 24, True)]
    autumn = buckets(us("2026-10-25T12:00"), us("2026-10-26T12:00"), "day", "Europe/Berlin")
    assert spans(autumn) == [
        (us("2026-10-25T12:00"), us("2026-10-25T23:00"), us("2026-10-24T22:00"), False),
        (us("2026-10-25T23:00"), us("2026-10-26T12:00"), us("2026-10-25T23:00"), False),
    ]


def test_hour_buckets_of_a_25_hour_berlin_day_are_25_utc_hours():
    """The local day of fall-back has 25 hour buckets, each a whole UTC hour (the repeated hour is two)."""
    cuts = buckets(us("2026-10-24T22:00"), us("2026-10-25T23:00"), "hour", "Europe/Berlin")
    assert [b.label for b in cuts] == [us("2026-10-24T22:00") + i * HOUR_US for i in range(25)]
    assert all(b.whole and b.end - b.start == HOUR_US for b in cuts)


def test_hour_buckets_follow_half_hour_zones_and_their_dst():
    """Kolkata (+5:30) hours start at :30 UTC; Adelaide's day of fall-back (5 April 2026, +10:30 to +9:30)
    has 25 hours, all starting at :30 UTC."""
    assert spans(buckets(us("2026-11-28T00:00"), us("2026-11-28T03:00"), "hour", "Asia/Kolkata")) == [
        (us("2026-11-28T00:00"), us("2026-11-28T00:30"), us("2026-11-27T23:30"), False),
        (us("2026-11-28T00:30"), us("2026-11-28T01:30"), us("2026-11-28T00:30"), True),
        (us("2026-11-28T01:30"), us("2026-11-28T02:30"), us("2026-11-28T01:30"), True),
        (us("2026-11-28T02:30"), us("2026-11-28T03:00"), us("2026-11-28T02:30"), False),
    ]
    cuts = buckets(us("2026-04-04T13:30"), us("2026-04-05T14:30"), "hour", "Australia/Adelaide")
    assert [b.label for b in cuts] == [us("2026-04-04T13:30") + i * HOUR_US for i in range(25)]


def test_at_most_max_buckets():
    """Exactly MAX_BUCKETS hour buckets are fine; one more is an OpError on $.bucket."""
    since = us("2026-01-01T00:00")
    assert len(buckets(since, since + MAX_BUCKETS * HOUR_US, "hour", "UTC")) == MAX_BUCKETS
    with pytest.raises(OpError) as caught:
        buckets(since, since + (MAX_BUCKETS + 1) * HOUR_US, "hour", "UTC")
    assert (caught.value.code, caught.value.field) == ("invalid", "$.bucket")


# -- plan -------------------------------------------------------------------------------------------


def test_plan_of_clipped_day_buckets_reads_whole_days_hours_and_raw_edges():
    """10:30 on the 28th to 05:15 on the 30th, by day in UTC with UTC rollups: raw minutes at both edges,
    whole hours from the hour rollup, the whole day from the day rollup (its own bucket)."""
    since, until = us("2026-11-28T10:30"), us("2026-11-30T05:15")
    pieces = plan(buckets(since, until, "day", "UTC"), "day", "UTC", "UTC", True)
    d28, d29, d30 = us("2026-11-28T00:00"), us("2026-11-29T00:00"), us("2026-11-30T00:00")
    assert pieces == [
        Piece("hour", us("2026-11-28T11:00"), d29, d28, False),
        Piece("raw", since, us("2026-11-28T11:00"), d28, False),
        Piece("day", d29, d30, d29, True),
        Piece("hour", d30, us("2026-11-30T05:00"), d30, False),
        Piece("raw", us("2026-11-30T05:00"), until, d30, False),
    ]


def test_plan_merges_whole_own_units_and_falls_back_without_rollups():
    """Three whole UTC days by day: one day piece (each row is its own bucket). Without rollups: one raw
    piece per bucket. Without local rollups: the hour rollup, one piece per bucket."""
    cuts = buckets(us("2026-11-28T00:00"), us("2026-12-01T00:00"), "day", "UTC")
    days = [b.label for b in cuts]
    assert plan(cuts, "day", "UTC", "UTC", True) == [Piece("day", days[0], us("2026-12-01T00:00"), days[0], True)]
    assert plan(cuts, "day", "UTC", "UTC", False) == [Piece("raw", b.start, b.end, b.label, False) for b in cuts]
    assert plan(cuts, "day", "UTC", None, True) == [Piece("hour", b.start, b.end, b.label, False) for b in cuts]


def test_plan_without_buckets_uses_the_coarsest_whole_units_of_the_rollup_zone():
    """15 October to 10 January, unbucketed, in a Berlin report read from UTC rollups: November and December
    as one month piece, the whole week of 19 October, and days for the rest."""
    since, until = us("2026-10-15T00:00"), us("2027-01-10T00:00")
    pieces = plan(buckets(since, until, None, "Europe/Berlin"), None, "Europe/Berlin", "UTC", True)
    assert pieces == [
        Piece("month", us("2026-11-01T00:00"), us("2027-01-01T00:00"), None, False),
        Piece("week", us("2026-10-19T00:00"), us("2026-10-26T00:00"), None, False),
        Piece("day", since, us("2026-10-19T00:00"), None, False),
        Piece("day", us("2026-10-26T00:00"), us("2026-11-01T00:00"), None, False),
        Piece("day", us("2027-01-01T00:00"), until, None, False),
    ]


def test_hour_buckets_in_a_half_hour_zone_never_read_the_utc_hour_rollup():
    """A Kolkata hour never holds a whole UTC hour: every piece is raw; in UTC the whole hours are one own
    hour piece with raw edges."""
    since, until = us("2026-11-28T00:10"), us("2026-11-28T05:50")
    kolkata = plan(buckets(since, until, "hour", "Asia/Kolkata"), "hour", "Asia/Kolkata", None, True)
    assert {p.source for p in kolkata} == {"raw"} and len(kolkata) == 7
    utc = plan(buckets(since, until, "hour", "UTC"), "hour", "UTC", None, True)
    assert utc == [Piece("raw", since, us("2026-11-28T01:00"), us("2026-11-28T00:00"), False),
                   Piece("hour", us("2026-11-28T01:00"), us("2026-11-28T05:00"), us("2026-11-28T01:00"), True),
                   Piece("raw", us("2026-11-28T05:00"), until, us("2026-11-28T05:00"), False)]


def _boundary(period: str, zone: str, t: int) -> bool:
    return window(period, zone, from_us(t)).start_us == t


def check_plan(pieces: list[Piece], cuts: list[Bucket], since: int, until: int, bucket: str | None, zone: str,
               local_zone: str | None, rollups: bool) -> None:
    ordered = sorted(pieces, key=lambda p: p.start)
    assert ordered[0].start == since and ordered[-1].end == until
    for a, b in zip(ordered, ordered[1:]):
        assert a.end == b.start, "gap or overlap"
    by_label = {b.label: b for b in cuts}
    for p in pieces:
        assert p.start < p.end
        if not rollups:
            assert p.source == "raw"
        if p.source == "hour":
            assert p.start % HOUR_US == 0 and p.end % HOUR_US == 0
        elif p.source in PERIOD:
            assert local_zone is not None
            assert _boundary(PERIOD[p.source], local_zone, p.start) and _boundary(PERIOD[p.source], local_zone, p.end)
        if p.own:
            # every unit in it is a whole bucket of its own, labelled with the unit's start
            assert p.source == bucket
            t = p.start
            while t < p.end:
                b = by_label[t]
                assert b.whole and b.start == t
                t = b.end
            assert t == p.end
        else:
            b = by_label[p.label]
            assert b.start <= p.start and p.end <= b.end


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"])
def test_plan_pieces_cover_random_ranges_exactly_and_read_rollups_only_for_whole_units(zone):
    """Random ranges around DST changes and month ends, every bucket and rollup choice: the pieces tile the
    range with no gap or overlap, stay within their bucket, and rollup pieces are whole local units."""
    rng = random.Random(zone)
    anchors = [us(t) for t in ("2026-03-08T06:00", "2026-03-29T00:00", "2026-10-25T00:00", "2026-11-01T05:00",
                               "2026-12-31T20:00", "2027-02-28T12:00")]
    for _ in range(60):
        bucket = rng.choice([None, "hour", "day", "week", "month"])
        longest = 5 * 86_400 if bucket == "hour" else 120 * 86_400
        since = rng.choice(anchors) + rng.randrange(-20 * 86_400, 20 * 86_400) * 1_000_000 + rng.randrange(10**6)
        until = since + rng.randrange(1, longest) * 1_000_000 + rng.randrange(10**6)
        rollups = rng.random() < 0.8
        if bucket is None:
            local_zone = rng.choice([zone, "UTC", None])
        else:
            local_zone = rng.choice([zone, None]) if bucket != "hour" else None
        cuts = buckets(since, until, bucket, zone)
        check_plan(plan(cuts, bucket, zone, local_zone, rollups), cuts, since, until, bucket, zone, local_zone,
                   rollups)


# -- arrange and accumulate -------------------------------------------------------------------------

def sums(requests: int, inp: int, out: int, cache_read: int, cache_write: int, nanos: int) -> list[int]:
    """Sums in the order of SUMS, the kinds these tests do not use at 0."""
    named = {"requests": requests, "input_tokens": inp, "output_tokens": out, "cache_read_tokens": cache_read,
             "cache_write_tokens": cache_write, "cost_nanos": nanos}
    return [named.get(name, 0) for name in SUMS]


#: (group) -> sums of requests, input, output, cache read, cache write, cost nanos
FOUR = {("a",): sums(1, 100, 0, 0, 0, 500), ("b",): sums(5, 10, 10, 0, 0, 900), ("c",): sums(2, 1000, 0, 0, 0, 100),
        ("d",): sums(5, 10, 10, 0, 0, 900)}


@pytest.mark.parametrize("order, expected", [
    ("cost", ["b", "d", "a", "c"]),      # b and d tie at 900: by group
    ("tokens", ["c", "a", "b", "d"]),
    ("requests", ["b", "d", "c", "a"]),
    ("group", ["a", "b", "c", "d"]),
])
def test_arrange_orders_groups_with_ties_broken_by_group(order, expected):
    """Descending by the chosen measure, then by group; totals are the column sums."""
    rows, totals = arrange({(None, g): list(v) for g, v in FOUR.items()}, ReportQuery(group_by=("component",),
                                                                                          order=order))
    assert [r.group["component"] for r in rows] == expected
    assert all(r.bucket_start is None and not r.other for r in rows)
    assert (totals.requests, totals.input_tokens, totals.output_tokens, totals.tokens) == (13, 1120, 20, 1140)
    assert totals.cost_usd == 2400 / 1e9


def test_arrange_folds_groups_past_the_limit_into_one_other_row_per_bucket():
    """Ranked by total cost over all buckets (c 1100, a 350, b 200), limit 1 keeps c; a and b fold into an
    `other` row in each bucket, after c, so every bucket and the totals still add up."""
    l1, l2 = us("2026-11-28T00:00"), us("2026-11-29T00:00")
    by_bucket = {(l1, ("a",)): sums(1, 10, 0, 0, 0, 300), (l1, ("b",)): sums(1, 10, 0, 0, 0, 200),
                 (l1, ("c",)): sums(1, 10, 0, 0, 0, 100), (l2, ("a",)): sums(1, 5, 0, 0, 0, 50),
                 (l2, ("c",)): sums(3, 30, 0, 0, 0, 1000)}
    rows, totals = arrange(by_bucket, ReportQuery(group_by=("component",), bucket="day", limit=1))
    t1, t2 = from_us(l1), from_us(l2)
    assert [(r.bucket_start, r.group, r.other, r.requests, r.input_tokens, r.cost_usd) for r in rows] == [
        (t1, {"component": "c"}, False, 1, 10, 100 / 1e9), (t1, {}, True, 2, 20, 500 / 1e9),
        (t2, {"component": "c"}, False, 3, 30, 1000 / 1e9), (t2, {}, True, 1, 5, 50 / 1e9)]
    assert sum(r.requests for r in rows) == totals.requests == 7
    assert sum(r.input_tokens for r in rows) == totals.tokens == 10 + 10 + 10 + 5 + 30
    assert totals.cost_usd == 1650 / 1e9
    unlimited, _ = arrange(by_bucket, ReportQuery(group_by=("component",), bucket="day", limit=3))
    assert len(unlimited) == 5 and not any(r.other for r in unlimited)


def test_arrange_shows_absent_values_as_none_and_an_empty_report_as_zero_totals():
    """A '' dim (absent in the rollups) is None in the row; token columns add up into `tokens`."""
    rows, totals = arrange({(None, ("a", "")): sums(2, 1, 2, 3, 4, 10)}, ReportQuery(group_by=("component", "provider")))
    assert rows[0].group == {"component": "a", "provider": None} and rows[0].tokens == 10
    assert (totals.cache_read_tokens, totals.cache_write_tokens, totals.tokens) == (3, 4, 10)
    assert arrange({}, ReportQuery()) == ([], arrange({}, ReportQuery())[1])
    assert arrange({}, ReportQuery())[1].requests == 0 and arrange({}, ReportQuery())[1].cost_usd == 0.0


def test_accumulate_adds_column_by_column_and_copies_the_first_values():
    """The first values are copied (the caller's list is not aliased); later ones add element-wise."""
    into: dict = {}
    first = [1, 2, 3, 4, 5, 6]
    accumulate(into, ("k",), first)
    accumulate(into, ("k",), (10, 20, 30, 40, 50, 60))
    accumulate(into, ("other",), iter([0, 0, 0, 0, 0, 1]))
    assert into == {("k",): [11, 22, 33, 44, 55, 66], ("other",): [0, 0, 0, 0, 0, 1]}
    assert first == [1, 2, 3, 4, 5, 6]
