"""The hard instants of the calendar, through a real daemon whose clock starts there.

Each case starts a daemon one moment before (or, for Monday, just after) a
boundary: the start of a week, the last second of a month and of a year, both
DST changes in Europe/Berlin and America/New_York, the end of 29 February.
Records are written on both sides of the boundary, the daemon's clock runs
past it, and then every window-sensitive path is compared with sums computed
here, from windows computed here (plain zoneinfo arithmetic, not budgetd's):
budgets of every period in three zones, reports by hour/day/week/month,
forecasts, the assistant's "this week", the counters rebuilt by a restart, and
retention compacting the old records into the rollups.
"""

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from budgetd.client import SyncBudgetClient

UTC = dt.timezone.utc
ZONES = ("UTC", "Europe/Berlin", "America/New_York")
PERIODS = ("hourly", "daily", "weekly", "monthly", "total")
BUCKETS = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


#: case -> (the instant the daemon's clock starts at, the boundary the case is about)
INSTANTS = {
    "monday-00:00:30": ("2026-12-07T00:00:30Z", "2026-12-07T00:00:00Z"),
    "last-second-of-november": ("2026-11-30T23:59:59Z", "2026-12-01T00:00:00Z"),
    "last-second-of-the-year": ("2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"),
    "berlin-spring-forward": ("2027-03-28T00:59:59Z", "2027-03-28T01:00:00Z"),
    "berlin-fall-back": ("2026-10-25T00:59:59Z", "2026-10-25T01:00:00Z"),
    "new-york-spring-forward": ("2027-03-14T06:59:59Z", "2027-03-14T07:00:00Z"),
    "new-york-fall-back": ("2026-11-01T05:59:59Z", "2026-11-01T06:00:00Z"),
    "end-of-29-february": ("2028-02-29T23:59:59Z", "2028-03-01T00:00:00Z"),
}

#: Where records land, relative to the boundary.
OFFSETS = [
    -dt.timedelta(days=400), -dt.timedelta(days=40), -dt.timedelta(days=8), -dt.timedelta(days=1, seconds=1),
    -dt.timedelta(hours=1), -dt.timedelta(seconds=61), -dt.timedelta(microseconds=1), dt.timedelta(0),
    dt.timedelta(microseconds=1), dt.timedelta(seconds=1),
]


def window(period: str, zone: str, at: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The calendar window holding `at`, computed independently of budgetd.periods."""
    if period == "total":
        return None, None
    if period == "hourly":  # every zone here has whole-hour offsets: local hours are UTC hours
        start = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return start, start + dt.timedelta(hours=1)
    z = ZoneInfo(zone)
    day = at.astimezone(z).date()
    if period == "daily":
        first, following = day, day + dt.timedelta(days=1)
    elif period == "weekly":
        first = day - dt.timedelta(days=day.weekday())
        following = first + dt.timedelta(days=7)
    else:
        first = day.replace(day=1)
        following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)

    def midnight(d: dt.date) -> dt.datetime:
        return dt.datetime(d.year, d.month, d.day, tzinfo=z).astimezone(UTC)

    return midnight(first), midnight(following)


def budget_name(period: str, zone: str) -> str:
    return f"{period}-{zone.lower().replace('/', '-').replace('_', '-')}"


def config(keep_usage: str = "") -> str:
    lines = [f'[daemon]\nkeep_usage = "{keep_usage}"\n'] if keep_usage else []
    for zone in ZONES:
        for period in PERIODS:
            lines.append(f'[[budgets]]\nname = "{budget_name(period, zone)}"\nperiod = "{period}"\n'
                         f'timezone = "{zone}"\nlimit_tokens = 100000000\npolicy = "warn"\n')
    return "\n".join(lines)


def wait_until(d, instant: dt.datetime) -> None:
    while d.now() < instant:
        time.sleep(0.05)


def sum_tokens(records: list[tuple[dt.datetime, int]], start: dt.datetime | None, end: dt.datetime | None) -> int:
    return sum(n for ts, n in records if (start is None or ts >= start) and (end is None or ts < end))


def check_budgets(c: SyncBudgetClient, records: list[tuple[dt.datetime, int]]) -> None:
    status = c.status()
    now = status.daemon.now
    states = {s.budget: s for s in status.budgets}
    for zone in ZONES:
        for period in PERIODS:
            name = budget_name(period, zone)
            state = states[name]
            start, end = window(period, zone, now)
            assert (state.window_start, state.window_end) == (start, end), (name, now)
            assert state.spent_tokens == sum_tokens(records, start, end), (name, now)
    forecasts = {f.budget: f for f in status.forecasts}
    for name, state in states.items():
        f = forecasts[name]
        assert f.window_end == state.window_end and f.spent_tokens == state.spent_tokens, name
        if state.window_end is not None:
            assert f.projected_tokens >= f.spent_tokens, name
        if f.exhausted_at is not None:
            assert now - dt.timedelta(seconds=5) <= f.exhausted_at, name
            assert state.window_end is None or f.exhausted_at < state.window_end, name


def check_reports(c: SyncBudgetClient, records: list[tuple[dt.datetime, int]], boundary: dt.datetime) -> None:
    since, until = boundary - dt.timedelta(days=45), boundary + dt.timedelta(hours=1)
    inside = [(ts, n) for ts, n in records if since <= ts < until]
    for zone in ZONES:
        for bucket, period in BUCKETS.items():
            report = c.report(bucket=bucket, timezone=zone, since=since, until=until)
            expected: dict[dt.datetime, int] = {}
            for ts, n in inside:
                start = window(period, zone, ts)[0]
                expected[start] = expected.get(start, 0) + n
            got = {row.bucket_start: row.tokens for row in report.rows if row.tokens}
            assert got == expected, (zone, bucket)
            assert report.totals.tokens == sum(n for _, n in inside), (zone, bucket)


def check_assistant_week(c: SyncBudgetClient, records: list[tuple[dt.datetime, int]]) -> None:
    facts = c.ask("how much did we spend this week?").facts
    assert facts.horizon == "this week"
    assert facts.since == window("weekly", "UTC", facts.until)[0]
    assert facts.totals.tokens == sum_tokens(records, facts.since, facts.until)


@pytest.mark.parametrize("case", INSTANTS)
def test_every_window_is_right_at_a_hard_instant(make_daemon, case):
    start, boundary = (t(x) for x in INSTANTS[case])
    d = make_daemon(config(), clock=start)
    records: list[tuple[dt.datetime, int]] = []
    with SyncBudgetClient(d.socket) as c:
        for i, offset in enumerate(OFFSETS):
            ts = boundary + offset
            wait_until(d, ts)  # never ahead of the daemon's clock
            c.record(component="cal", model="gpt-4o", input_tokens=1 << i, ts=ts)
            records.append((ts, 1 << i))
        c.record(component="cal", model="gpt-4o", input_tokens=1 << len(OFFSETS))  # now, by the daemon's clock
        records.append((d.now(), 1 << len(OFFSETS)))
        wait_until(d, max(start, boundary) + dt.timedelta(seconds=2))
        check_budgets(c, records)
        check_reports(c, records, boundary)
        check_assistant_week(c, records)
    d.stop()
    d.start()  # counters rebuilt from the ledger, on the other side of the boundary
    with SyncBudgetClient(d.socket) as c:
        check_budgets(c, records)
        check_reports(c, records, boundary)


def test_retention_at_the_turn_of_the_year(make_daemon):
    """Records past `keep_usage` are compacted at start: budgets, totals and reports still count them."""
    start, boundary = t("2026-12-31T23:59:59Z"), t("2027-01-01T00:00:00Z")
    d = make_daemon(config(keep_usage="35d"), clock=start)
    records: list[tuple[dt.datetime, int]] = []
    with SyncBudgetClient(d.socket) as c:
        for i, offset in enumerate(OFFSETS):
            ts = boundary + offset
            wait_until(d, ts)
            c.record(component="cal", model="gpt-4o", input_tokens=1 << i, ts=ts)
            records.append((ts, 1 << i))
        before = c.status().totals
        assert c.usage_list(limit=1000).records[-1].ts == boundary + OFFSETS[0]
    d.stop()
    d.start()  # compaction runs at start
    with SyncBudgetClient(d.socket) as c:
        kept = c.usage_list(limit=1000).records
        horizon = d.now() - dt.timedelta(days=35)
        assert kept and all(r.ts >= horizon - dt.timedelta(hours=1) for r in kept)
        assert len(kept) < len(records), "the records of 40 and 400 days ago were compacted"
        assert c.status().totals == before
        check_budgets(c, records)
        check_reports(c, records, boundary)
