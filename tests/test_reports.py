"""Reports against sums the test computes itself from the records it wrote.

The records carry their own costs (`cost_usd`), so the expected sums do not
depend on the price book; buckets are computed here with zoneinfo directly.
"""

import csv
import datetime as dt
import io
import json
import random
import sqlite3
from collections import defaultdict
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest

from budgetd.client import BudgetClient, SyncBudgetClient
from budgetd.protocol import OpError
from tests.conftest import Daemon, RawConn, run_cli

UTC = dt.timezone.utc
COMPONENTS = ["rhetor", "apollo", "athena", "sophia"]
MODELS = ["gpt-4o", "gpt-4o-mini", "house-model"]  # house-model is not in the price book: no provider
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
# Spring and autumn, each across the US and the EU DST changes.
SPANS = [(dt.datetime(2026, 3, 5, tzinfo=UTC), dt.datetime(2026, 4, 3, tzinfo=UTC)),
         (dt.datetime(2026, 10, 22, tzinfo=UTC), dt.datetime(2026, 11, 4, tzinfo=UTC))]
SUMS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def nanos(usd: float) -> int:
    return round(usd * 1e9)


def bucket_start(ts: dt.datetime, bucket: str | None, tz: str) -> dt.datetime | None:
    if bucket is None:
        return None
    zone = ZoneInfo(tz)
    local = ts.astimezone(zone)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if bucket == "week":
        day -= dt.timedelta(days=day.weekday())
    elif bucket == "month":
        day = day.replace(day=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def expected(records, group_by=(), bucket=None, tz="UTC", since=None, until=None, filters=None):
    out: dict = defaultdict(lambda: [0] * 6)
    for r in records:
        if (since is not None and r["ts"] < since) or (until is not None and r["ts"] >= until):
            continue
        if any(r[d] != v for d, v in (filters or {}).items()):
            continue
        acc = out[(bucket_start(r["ts"], bucket, tz), tuple(r[d] for d in group_by))]
        acc[0] += 1
        for i, name in enumerate(SUMS[1:], 1):
            acc[i] += r[name]
        acc[5] += r["cost_nanos"]
    return dict(out)


def as_sums(result, group_by) -> dict:
    rows = {}
    for row in result.rows:
        key = (row.bucket_start, tuple(row.group.get(d) for d in group_by))
        assert key not in rows, f"two rows for {key}"
        assert row.tokens == row.input_tokens + row.output_tokens + row.cache_read_tokens + row.cache_write_tokens
        rows[key] = [row.requests, row.input_tokens, row.output_tokens, row.cache_read_tokens,
                     row.cache_write_tokens, nanos(row.cost_usd)]
    return rows


def totals_of(sums: dict) -> list[int]:
    return [sum(v[i] for v in sums.values()) for i in range(6)]


def assert_totals(result, sums: dict) -> None:
    t = result.totals
    assert [t.requests, t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_tokens,
            nanos(t.cost_usd)] == totals_of(sums)


def random_ts(rng: random.Random) -> dt.datetime:
    start, end = rng.choice(SPANS)
    return start + dt.timedelta(microseconds=rng.randrange(int((end - start) / dt.timedelta(microseconds=1))))


def edge_times() -> list[dt.datetime]:
    """Local midnights of every zone across the spans, and the microsecond before each."""
    out = []
    for tz in ZONES:
        zone = ZoneInfo(tz)
        for start, end in SPANS:
            day = start.astimezone(zone).date() + dt.timedelta(days=1)
            while True:
                midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
                if midnight >= end:
                    break
                if day.day in (1, 8, 25, 26, 29, 30) or day.weekday() == 0:
                    out += [midnight, midnight - dt.timedelta(microseconds=1)]
                day += dt.timedelta(days=1)
    return out


def usage_for(rng: random.Random, ts: dt.datetime) -> dict:
    return {
        "component": rng.choice(COMPONENTS), "model": rng.choice(MODELS), "ts": ts,
        "input_tokens": rng.randrange(0, 20_000), "output_tokens": rng.randrange(0, 4_000),
        "cache_read_tokens": rng.choice([0, 0, rng.randrange(1, 10_000)]),
        "cache_write_tokens": rng.choice([0, 0, 0, rng.randrange(1, 5_000)]),
        "task_type": rng.choice([None, "chat", "code"]),
        "context_id": rng.choice([None] + [f"ctx-{i}" for i in range(20)]),
        "cost_usd": rng.randrange(1, 50_000_000) / 1e9,
    }


async def write_all(socket, usages: list[dict]) -> list[dict]:
    """Record every usage (pipelined) and return them as stored: resolved model, provider and tier."""
    stored: list[dict | None] = [None] * len(usages)
    async with BudgetClient(socket) as c:
        async def one(i: int) -> None:
            u = usages[i]
            r = await c.record(**{k: v for k, v in u.items() if v is not None})
            stored[i] = {**u, "model": r.model, "provider": r.provider, "tier": r.tier,
                         "cost_nanos": nanos(r.cost_usd), "record_id": r.record_id}
            assert stored[i]["cost_nanos"] == nanos(u["cost_usd"])

        limiter = anyio.CapacityLimiter(64)

        async def limited(i: int) -> None:
            async with limiter:
                await one(i)

        async with anyio.create_task_group() as tg:
            for i in range(len(usages)):
                tg.start_soon(limited, i)
    return stored  # type: ignore[return-value]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ledger(tmp_path_factory, request):
    """A daemon with a day rollup for Berlin (New York and Kolkata have none) and ~2,700 records, on the
    SQLite ledger and on a PostgreSQL one (every report test runs on both)."""
    config = '[reports]\ntimezones = ["Europe/Berlin"]\n'
    if request.param == "postgres":
        config += f'[fleet]\ndsn = "{request.getfixturevalue("postgres").create_database("reports")}"\n'
    # its clock after the spans, whatever the day: records may not be later than the daemon's now
    d = Daemon(tmp_path_factory.mktemp("reports"), config, http=True, clock="2026-11-20T12:00:00Z")
    d.start()
    try:  # stopped also when the records cannot be written (no daemon is left behind by a failed setup)
        rng = random.Random(7)
        times = [random_ts(rng) for _ in range(2_500)] + edge_times()
        rng.shuffle(times)  # written out of time order: late records are the normal case
        records = anyio.run(write_all, d.socket, [usage_for(rng, ts) for ts in times])
        yield d, records
    finally:
        if d.proc.poll() is None:
            d.stop()


def test_reports_equal_independent_sums_across_dims_buckets_zones_and_ranges(ledger):
    d, records = ledger
    rng = random.Random(11)
    dims_choices = [(), ("component",), ("component", "model"), ("model", "provider", "tier"), ("task_type",),
                    ("context_id",), ("component", "context_id"), ("tier", "task_type")]
    filter_choices = [{}, {"component": "rhetor"}, {"context_id": "ctx-3"}, {"component": "apollo", "task_type": "chat"},
                      {"model": "house-model"}]
    checked = 0
    with SyncBudgetClient(d.socket, timeout=60) as c:
        for tz in ZONES:
            for bucket in (None, "hour", "day", "week", "month"):
                for _ in range(2):
                    group_by = rng.choice(dims_choices)
                    filters = rng.choice(filter_choices)
                    span = rng.choice(SPANS + [(None, None)])
                    since, until = span
                    if since is not None and rng.random() < 0.7:  # unaligned edges: raw pieces at both ends
                        since += dt.timedelta(microseconds=rng.randrange(10**11))
                        until -= dt.timedelta(microseconds=rng.randrange(10**11))
                    result = c.report(list(group_by), bucket=bucket, timezone=tz, since=since, until=until,
                                      filters=filters or None)
                    want = expected(records, group_by, bucket, tz, since, until, filters)
                    assert as_sums(result, group_by) == want, (tz, bucket, group_by, filters, since, until)
                    assert_totals(result, want)
                    checked += len(want)
    assert checked > 2_000  # the comparisons covered many rows, not empty selections


def test_day_buckets_split_at_local_midnight_across_dst(ledger):
    d, records = ledger
    # Berlin moves to CEST on 2026-03-29: that day is 23 hours long; New York's 2026-11-01 is 25.
    with SyncBudgetClient(d.socket) as c:
        for tz, day, hours in (("Europe/Berlin", dt.date(2026, 3, 29), 23),
                               ("America/New_York", dt.date(2026, 11, 1), 25)):
            zone = ZoneInfo(tz)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone).astimezone(UTC)
            assert end - start == dt.timedelta(hours=hours)
            result = c.report(bucket="day", timezone=tz, since=start - dt.timedelta(days=1),
                              until=end + dt.timedelta(days=1))
            starts = [r.bucket_start for r in result.rows]
            assert start in starts and end in starts
            inside = [r for r in records if start <= r["ts"] < end]
            row = next(r for r in result.rows if r.bucket_start == start)
            assert row.requests == len(inside) and nanos(row.cost_usd) == sum(r["cost_nanos"] for r in inside)
            # The records exactly at midnight open the new day; the microsecond before closes the old one.
            assert any(r["ts"] == start for r in inside)
            assert not any(r["ts"] == end for r in inside)


def test_limit_folds_the_rest_into_an_other_row_per_bucket(ledger):
    d, records = ledger
    group_by = ("component", "model")
    with SyncBudgetClient(d.socket) as c:
        for order in ("cost", "tokens", "requests"):
            full = expected(records, group_by, "week", "Europe/Berlin")
            per_group: dict = defaultdict(lambda: [0] * 6)
            for (_, g), v in full.items():
                for i, x in enumerate(v):
                    per_group[g][i] += x
            measure = {"cost": lambda v: v[5], "tokens": lambda v: sum(v[1:5]), "requests": lambda v: v[0]}[order]
            ranked = sorted(per_group, key=lambda g: (-measure(per_group[g]), g))
            top = set(ranked[:3])
            result = c.report(list(group_by), bucket="week", timezone="Europe/Berlin", limit=3, order=order)
            kept = {tuple(r.group[d] for d in group_by) for r in result.rows if not r.other}
            assert kept == top, order
            others: dict = defaultdict(lambda: [0] * 6)
            for (b, g), v in full.items():
                if g not in top:
                    for i, x in enumerate(v):
                        others[b][i] += x
            got_other = {r.bucket_start: [r.requests, r.input_tokens, r.output_tokens, r.cache_read_tokens,
                                          r.cache_write_tokens, nanos(r.cost_usd)] for r in result.rows if r.other}
            assert got_other == dict(others)
            assert all(r.group == {} for r in result.rows if r.other)
            assert_totals(result, full)
            # Within each bucket, kept groups come in the order asked for, the other row last.
            for b in {r.bucket_start for r in result.rows}:
                in_bucket = [r for r in result.rows if r.bucket_start == b]
                names = [tuple(r.group[d] for d in group_by) for r in in_bucket if not r.other]
                assert names == [g for g in ranked if g in names]
                assert not any(r.other for r in in_bucket[:-1])


def test_order_by_group_and_unbucketed_rows(ledger):
    d, records = ledger
    with SyncBudgetClient(d.socket) as c:
        result = c.report(["component"], order="group")
    assert [r.group["component"] for r in result.rows] == sorted(COMPONENTS)
    assert all(r.bucket_start is None for r in result.rows)


def test_late_records_land_in_their_bucket(ledger):
    d, records = ledger
    ts = dt.datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
    day = (dt.datetime(2026, 3, 15, tzinfo=UTC), dt.datetime(2026, 3, 16, tzinfo=UTC))
    with SyncBudgetClient(d.socket) as c:
        before = c.report(["component"], bucket="day", since=day[0], until=day[1], filters={"component": "late"})
        assert before.rows == []
        c.record(component="late", model="gpt-4o", input_tokens=7, ts=ts, cost_usd=0.25)
        after = c.report(["component"], bucket="day", since=day[0], until=day[1], filters={"component": "late"})
    assert [(r.bucket_start, r.requests, r.cost_usd) for r in after.rows] == [(day[0], 1, 0.25)]
    records.append({"component": "late", "model": "gpt-4o", "provider": "openai", "tier": "midweight",
                    "context_id": None, "task_type": None, "ts": ts, "input_tokens": 7, "output_tokens": 0,
                    "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_nanos": 250_000_000})


def test_report_over_http_matches_the_socket(ledger):
    d, records = ledger
    params = {"group_by": "component,model", "bucket": "day", "timezone": "Europe/Berlin",
              "component": "rhetor", "since": "2026-03-20T00:00:00Z", "until": "2026-03-31T00:00:00Z",
              "limit": "2"}
    via_http = httpx.get(f"{d.url}/api/v1/report", params=params).json()
    with RawConn(d.socket) as sock:
        via_socket = sock.call({"op": "report", "id": 1, "group_by": ["component", "model"], "bucket": "day",
                                "timezone": "Europe/Berlin", "filters": {"component": "rhetor"},
                                "since": params["since"], "until": params["until"], "limit": 2})["result"]
    assert via_http["rows"] == via_socket["rows"] and via_http["totals"] == via_socket["totals"]
    assert via_http["rows"] and any(r["other"] for r in via_http["rows"])


def test_bad_reports_get_clear_errors_on_every_door(ledger):
    d, _ = ledger
    bad = [
        ({"group_by": ["colour"]}, "$.group_by[0]"),
        ({"group_by": ["model", "model"]}, "$.group_by"),
        ({"bucket": "year"}, "$.bucket"),
        ({"timezone": "Mars/Olympus"}, "$.timezone"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "$.until"),
        ({"limit": 0}, "$.limit"),
        ({"order": "colour"}, "$.order"),
        ({"since": "1 March 2026"}, "$.since"),
        ({"bucket": "hour", "since": "2000-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "$.bucket"),
    ]
    with RawConn(d.socket) as sock:
        for fields, field in bad:
            answer = sock.call({"op": "report", "id": 9, **fields})
            assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == field, answer
            assert answer["error"]["message"]
        assert sock.call({"op": "report", "id": 10})["ok"]  # still serving
    answer = httpx.get(f"{d.url}/api/v1/report", params={"group_by": "colour"})
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "$.group_by[0]"
    answer = httpx.get(f"{d.url}/api/v1/report", params={"timezone": "Nowhere"})
    assert answer.status_code == 400 and "time zone" in answer.json()["error"]["message"]
    out = run_cli("report", "--tz", "Nowhere", socket=d.socket)
    assert out.returncode == 1 and "unknown time zone" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("report", "--since", "last tuesday", socket=d.socket)
    assert out.returncode == 2 and "--since" in out.stderr and "7d" in out.stderr
    out = run_cli("report", "--by", "colour", socket=d.socket)  # a usage error, caught before asking the daemon
    assert out.returncode == 2 and "--by: 'colour' is not a dim" in out.stderr and "component" in out.stderr


def test_cli_report_csv_json_and_table_agree_with_the_ledger(ledger):
    d, records = ledger
    args = ("report", "--by", "component,model", "--bucket", "day", "--tz", "Europe/Berlin",
            "--since", "2026-03-20", "--until", "2026-04-01")
    berlin = ZoneInfo("Europe/Berlin")
    since = dt.datetime(2026, 3, 20, tzinfo=berlin).astimezone(UTC)
    until = dt.datetime(2026, 4, 1, tzinfo=berlin).astimezone(UTC)
    want = expected(records, ("component", "model"), "day", "Europe/Berlin", since, until)

    out = run_cli(*args, "--format", "csv", socket=d.socket)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    got = {}
    for row in rows:
        key = (dt.datetime.fromisoformat(row["bucket_start"]), (row["component"], row["model"]))
        got[key] = [int(row[s]) for s in SUMS] + [round(float(row["cost_usd"]) * 1e9)]
        assert int(row["tokens"]) == sum(got[key][1:5])
    assert got == want

    out = run_cli(*args, "--format", "json", socket=d.socket)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert len(document["rows"]) == len(want) and document["totals"]["requests"] == totals_of(want)[0]

    out = run_cli(*args, "--limit", "2", socket=d.socket)
    assert out.returncode == 0, out.stderr
    assert "(other)" in out.stdout and "█" in out.stdout
    assert f"over {totals_of(want)[0]:,} requests" in out.stdout
    assert "2026-03-29 Sun" in out.stdout  # buckets are labelled in the report's zone


def test_usage_csv_exports_every_record_through_the_cursor(ledger):
    d, records = ledger
    out = run_cli("usage", "--format", "csv", socket=d.socket)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == len(records) > 2_000  # several pages
    assert sum(round(float(r["cost_usd"]) * 1e9) for r in rows) == sum(r["cost_nanos"] for r in records)
    ids = [int(r["record_id"]) for r in rows]  # newest first, one after the other (a fleet node's start at
    assert ids == list(range(ids[0], ids[0] - len(records), -1))  # the ids it keeps claimed for its spool)
    out = run_cli("usage", "--format", "csv", "--component", "athena", socket=d.socket)
    mine = [r for r in records if r["component"] == "athena"]
    assert sorted(int(r["record_id"]) for r in csv.DictReader(io.StringIO(out.stdout))) == sorted(
        r["record_id"] for r in mine)
    out = run_cli("usage", "--format", "csv", "--limit", "5", socket=d.socket)
    assert len(list(csv.DictReader(io.StringIO(out.stdout)))) == 5


def test_usage_pages_are_stable_while_records_arrive(ledger):
    d, records = ledger
    seen: list[int] = []
    lowest = d.query("SELECT min(record_id) FROM usage")[0][0]

    async def main() -> None:
        async with BudgetClient(d.socket) as c:
            first = await c.usage_list(limit=100)
            top = first.records[0].record_id
            seen.extend(r.record_id for r in first.records)
            after = first.next

            async def writer() -> None:
                for i in range(300):
                    await c.record(component="writer", model="gpt-4o", input_tokens=1, cost_usd=0.001)

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                while after is not None:
                    page = await c.usage_list(limit=100, after=after)
                    seen.extend(r.record_id for r in page.records)
                    after = page.next
            assert sorted(seen, reverse=True) == seen and len(set(seen)) == len(seen)
            # no gap and no repeat, whatever arrived meanwhile
            assert seen == list(range(top, top - len(seen), -1)) and seen[-1] == lowest

    anyio.run(main)
    for _ in range(300):
        records.append({"component": "writer", "model": "gpt-4o", "provider": "openai", "tier": "midweight",
                        "context_id": None, "task_type": None, "ts": d.now(), "input_tokens": 1,
                        "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
                        "cost_nanos": 1_000_000})


def test_forecast_in_status_and_report(make_daemon):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="day-cap", period="daily", limit_usd=10.0, policy="hard")
        c.budget_set(name="per-comp", scope={"component": "*"}, period="monthly", limit_tokens=1_000_000,
                     policy="warn")
        c.budget_set(name="no-limit", period="daily", policy="ignore")
        c.record(component="x", model="gpt-4o", input_tokens=1000, cost_usd=4.0)
        c.record(component="y", model="gpt-4o", input_tokens=2000, cost_usd=1.0)
        status = c.status()
        report = c.report(["component"])
    for forecasts in (status.forecasts, report.forecasts):
        names = [(f.budget, f.key) for f in forecasts]
        assert names == [("day-cap", {}), ("per-comp", {"component": "x"}), ("per-comp", {"component": "y"})]
    f = status.forecasts[0]
    assert f.spent_usd == 5.0 and f.limit_usd == 10.0 and f.rate_basis == "window_average"
    now = status.daemon.started_at + dt.timedelta(seconds=status.daemon.uptime_s)
    hours_left = (f.window_end - now).total_seconds() / 3600
    assert f.projected_usd == pytest.approx(5.0 + f.rate_usd_per_hour * hours_left, rel=0.01)
    if f.exhausted_at is not None:  # only when the pace reaches the limit before midnight
        assert f.exhausted_at < f.window_end
        assert (f.exhausted_at - now).total_seconds() / 3600 == pytest.approx(5.0 / f.rate_usd_per_hour, rel=0.01)
    else:
        assert f.projected_usd < 10.0
    tokens = status.forecasts[1]
    assert tokens.spent_tokens == 1000 and tokens.projected_tokens >= 1000 and tokens.limit_tokens == 1_000_000
    out = run_cli("status", socket=d.socket)
    assert "day-cap" in out.stdout and "projected" in out.stdout


def test_unit_forecast_uses_the_last_hour_once_it_has_watched_an_hour():
    from actors.allocator.budgets import Budget, Counter
    from actors.allocator.forecast import Burn, forecast
    from budgetd.model import BudgetSpec
    from budgetd.periods import to_us, window

    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    now_us = to_us(now)
    budget = Budget.of(BudgetSpec(name="d", period="daily", limit_usd=10.0, policy="hard"), lambda m: m)
    win = window("daily", "UTC", now)
    counter = Counter(spent_nanos=6_000_000_000, spent_tokens=100)
    burn = Burn(to_us(now - dt.timedelta(hours=3)) // Burn.BUCKET_US, born=to_us(now - dt.timedelta(hours=3)))
    burn.add(to_us(now - dt.timedelta(hours=2)), 5_000_000_000, 50)  # before the last hour: not the rate
    burn.add(to_us(now - dt.timedelta(minutes=30)), 1_000_000_000, 50)
    f = forecast(budget, (), win, counter, burn, now_us)
    assert f.rate_basis == "last_hour" and f.rate_usd_per_hour == 1.0
    assert f.projected_usd == 6.0 + 12 * 1.0  # twelve hours left at $1/h
    assert f.exhausted_at == now + dt.timedelta(hours=4)
    # A process that has watched for only ten minutes uses the window's average instead: $6 over 12 h.
    young = Burn(now_us // Burn.BUCKET_US, born=to_us(now - dt.timedelta(minutes=10)))
    f = forecast(budget, (), win, counter, young, now_us)
    assert f.rate_basis == "window_average" and f.rate_usd_per_hour == 0.5
    assert f.projected_usd == 12.0 and f.exhausted_at == now + dt.timedelta(hours=8)


V1_SCHEMA_RECORDS = 400


def test_an_older_ledger_is_migrated_and_new_zones_are_backfilled(make_daemon):
    """A schema-1 ledger gets its rollups built from the records already there, and a zone added to
    the config later gets its day rollup at start; reports stay exact either way."""
    from actors.ledger.sqlite.schema import APPLICATION_ID, MIGRATIONS, _statements

    d = make_daemon(start=False, config='[reports]\ntimezones = ["Asia/Kolkata"]\n')
    d.data_dir.mkdir(parents=True)
    rng = random.Random(3)
    records = []
    db = sqlite3.connect(d.ledger, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    for i in range(1, V1_SCHEMA_RECORDS + 1):
        u = usage_for(rng, random_ts(rng))
        r = {**u, "provider": rng.choice([None, "openai"]), "tier": "midweight", "cost_nanos": nanos(u["cost_usd"])}
        records.append(r)
        ts_us = (r["ts"] - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
        db.execute(
            "INSERT INTO usage (record_id, ts, recorded_at, component, model, provider, tier, context_id, task_type, "
            "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, priced) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (i, ts_us, ts_us, r["component"], r["model"], r["provider"], r["tier"], r["context_id"], r["task_type"],
             r["input_tokens"], r["output_tokens"], r["cache_read_tokens"], r["cache_write_tokens"], r["cost_nanos"]))
    db.close()

    def check() -> None:
        with SyncBudgetClient(d.socket) as c:
            for tz in ("UTC", "Asia/Kolkata"):
                for bucket in ("day", "month", None):
                    result = c.report(["component", "provider"], bucket=bucket, timezone=tz)
                    assert as_sums(result, ("component", "provider")) == expected(
                        records, ("component", "provider"), bucket, tz)

    d.start()
    assert "migrated to schema version 2" in d.log.read_text()
    check()
    with sqlite3.connect(f"file:{d.ledger}?mode=ro", uri=True) as ro:
        assert {z for (z,) in ro.execute("SELECT zone FROM rollup_zones")} == {"UTC", "Asia/Kolkata"}
    d.stop()
    d.config_file.write_text(d.config_file.read_text().replace('"Asia/Kolkata"', '"America/New_York"'))
    d.start()
    check()  # Kolkata now reads hour rollups and records: the same sums
    with sqlite3.connect(f"file:{d.ledger}?mode=ro", uri=True) as ro:
        assert {z for (z,) in ro.execute("SELECT zone FROM rollup_zones")} == {"UTC", "America/New_York"}
        assert ro.execute("SELECT count(*) FROM rollup_day WHERE zone = 'Asia/Kolkata'").fetchone()[0] == 0


def test_client_report_refuses_locally_invalid_input_clearly(ledger):
    d, _ = ledger
    with SyncBudgetClient(d.socket) as c:
        with pytest.raises(OpError) as info:
            c.report(["component"], bucket="fortnight")
    assert info.value.code == "invalid" and info.value.field == "$.bucket"
