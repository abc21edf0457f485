"""In-process tests of `actors.ledger.sqlite.rollups` on a real ledger file (migrated by `open_writer`):
rollup sums against sums computed in the test, backfill against live adds, and the local calendar."""

import datetime as dt
import random
from collections import defaultdict

import pytest

from actors.ledger.messages import UsageRow
from actors.ledger.sqlite.rollups import LocalCalendar, Rollups
from actors.ledger.sqlite.schema import USAGE_COLUMNS, open_writer
from budgetd.periods import from_us, to_us, window

UTC = dt.timezone.utc
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
SUM_COLUMNS = "requests, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos"
DIM_COLUMNS = "component, model, provider, tier, task_type"


def us(text: str) -> int:
    return to_us(dt.datetime.fromisoformat(text).replace(tzinfo=UTC))


def row(ts: int, component: str = "c", model: str = "m", provider: str | None = None, tier: str | None = None,
        task_type: str | None = None, tokens: tuple[int, int, int, int] = (1, 2, 3, 4), cost: int = 10) -> UsageRow:
    return UsageRow(ts, component, model, provider, tier, None, task_type, *tokens, cost, True, 1, None, None,
                    None, None)


def random_rows(rng: random.Random, n: int, since: int, span_us: int) -> list[UsageRow]:
    return [row(since + rng.randrange(span_us), rng.choice(["rhetor", "scribe"]), rng.choice(["gpt-4o", "opus"]),
                rng.choice([None, "openai"]), rng.choice([None, "midweight"]), rng.choice([None, "chat", "code"]),
                tuple(rng.randrange(10**6) for _ in range(4)), rng.randrange(10**10)) for _ in range(n)]


@pytest.fixture
def db(tmp_path):
    conn = open_writer(tmp_path / "ledger.db", "normal")
    yield conn
    conn.close()


def insert_records(db, rows: list[UsageRow]) -> None:
    """Records as the writer inserts them (backfill from records reads this table)."""
    db.executemany(f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})",
                   [(None, r.ts, r.ts, r.component, r.model, r.provider, r.tier, r.context_id, r.task_type,
                     r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_nanos,
                     int(r.priced), r.price_version, None, None, None, None, r.cache_write_1h_tokens,
                     r.reasoning_tokens, r.audio_input_tokens, r.audio_output_tokens, r.service_tier,
                     r.web_search_requests) for r in rows])


def expected(rows: list[UsageRow], start_of) -> dict[tuple, list[int]]:
    """Sums per (unit start, dims), absent dims as '' — computed without the module."""
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0] * 6)
    for r in rows:
        acc = sums[(start_of(r.ts), r.component, r.model, r.provider or "", r.tier or "", r.task_type or "")]
        for i, v in enumerate((1, r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens,
                               r.cost_nanos)):
            acc[i] += v
    return dict(sums)


def table(db, unit: str, zone: str | None = None) -> dict[tuple, list[int]]:
    if unit == "hour":
        rows = db.execute(f"SELECT hour, {DIM_COLUMNS}, {SUM_COLUMNS} FROM rollup_hour").fetchall()
    else:
        rows = db.execute(f"SELECT {unit}, {DIM_COLUMNS}, {SUM_COLUMNS} FROM rollup_{unit} WHERE zone = ?",
                          (zone,)).fetchall()
    return {r[:6]: list(r[6:]) for r in rows}


def test_hour_rollup_equals_sums_computed_from_the_records_over_several_batches(db):
    """300 random records over three days, added in three batches (the same keys meet again): each UTC hour
    and key holds exactly the sums of its records, absent dims stored as ''."""
    rows = random_rows(random.Random(1), 300, us("2026-11-27T00:00"), 3 * DAY_US)
    rollups = Rollups([])
    for i in range(0, 300, 100):
        rollups.add(db, rows[i:i + 100])
    assert table(db, "hour") == expected(rows, lambda ts: ts // HOUR_US * HOUR_US)
    assert db.execute("SELECT count(*) FROM rollup_day").fetchone()[0] == 0  # no zones: hours only


def test_the_last_microsecond_of_an_hour_and_the_first_of_the_next_are_apart(db):
    """Records at xx:59:59.999999 and at the next :00 land in two hour rows; equal keys in one batch add up."""
    edge = us("2026-12-31T23:00")
    Rollups([]).add(db, [row(edge - 1, cost=1), row(edge, cost=20), row(edge + HOUR_US - 1, cost=300)])
    assert table(db, "hour") == {
        (edge - HOUR_US, "c", "m", "", "", ""): [1, 1, 2, 3, 4, 1],
        (edge, "c", "m", "", "", ""): [2, 2, 4, 6, 8, 320],
    }


def test_local_day_week_and_month_rows_start_at_local_midnights_across_berlin_dst(db):
    """Berlin midnights written out by hand: the 28th ends at 22:59:59.999999Z (CET), the 29th starts at 23:00Z;
    the week of Sunday 29 March starts Monday 23 March (22 March 23:00Z); 1 April starts at 31 March 22:00Z (CEST).
    UTC rows of the same records keep to UTC midnights."""
    rows = [row(us("2026-03-28T23:00") - 1, cost=1), row(us("2026-03-28T23:00"), cost=2),
            row(us("2026-03-29T21:59"), cost=4), row(us("2026-03-29T22:00"), cost=8),
            row(us("2026-03-31T22:00") - 1, cost=16), row(us("2026-03-31T22:00"), cost=32)]
    Rollups(["UTC", "Europe/Berlin"]).add(db, rows)

    def costs(unit: str, zone: str) -> dict[int, int]:
        return {k[0]: v[5] for k, v in table(db, unit, zone).items()}

    assert costs("day", "Europe/Berlin") == {us("2026-03-27T23:00"): 1, us("2026-03-28T23:00"): 2 + 4,
                                             us("2026-03-29T22:00"): 8, us("2026-03-30T22:00"): 16,
                                             us("2026-03-31T22:00"): 32}
    assert costs("week", "Europe/Berlin") == {us("2026-03-22T23:00"): 1 + 2 + 4, us("2026-03-29T22:00"): 8 + 16 + 32}
    assert costs("month", "Europe/Berlin") == {us("2026-02-28T23:00"): 1 + 2 + 4 + 8 + 16,
                                               us("2026-03-31T22:00"): 32}
    assert costs("day", "UTC") == {us("2026-03-28T00:00"): 1 + 2, us("2026-03-29T00:00"): 4 + 8,
                                   us("2026-03-31T00:00"): 16 + 32}
    assert costs("week", "UTC") == {us("2026-03-23T00:00"): 1 + 2 + 4 + 8, us("2026-03-30T00:00"): 16 + 32}
    assert costs("month", "UTC") == {us("2026-03-01T00:00"): 63}


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Kolkata"])
def test_backfill_of_a_new_zone_equals_adding_it_live(tmp_path, zone):
    """Records added with UTC only, then `zone` configured and backfilled (Berlin from the hour rollup,
    Kolkata's half-hour days from the records): its day, week and month rows equal those of a ledger that
    had the zone from the start, and equal sums computed in the test."""
    rows = random_rows(random.Random(zone), 400, us("2026-10-20T00:00"), 20 * DAY_US)  # across October's end
    live_db, late_db = open_writer(tmp_path / "live.db", "normal"), open_writer(tmp_path / "late.db", "normal")
    try:
        live = Rollups(["UTC", zone])
        assert live.backfill(live_db) == ["UTC", zone]  # an empty ledger: nothing to sum, but the zones are kept
        early = Rollups(["UTC"])
        assert early.backfill(late_db) == ["UTC"]
        for i in range(0, 400, 50):
            insert_records(live_db, rows[i:i + 50])
            live.add(live_db, rows[i:i + 50])
            insert_records(late_db, rows[i:i + 50])
            early.add(late_db, rows[i:i + 50])
        assert table(late_db, "day", zone) == {}
        later = Rollups(["UTC", zone])
        assert later.backfill(late_db) == [zone] and later.backfill(late_db) == []
        for unit, period in (("day", "daily"), ("week", "weekly"), ("month", "monthly")):
            assert table(late_db, unit, zone) == table(live_db, unit, zone)
            assert table(late_db, unit, zone) == expected(rows, lambda ts: window(period, zone, from_us(ts)).start_us)
        assert {z for (z,) in late_db.execute("SELECT zone FROM rollup_zones")} == {"UTC", zone}
    finally:
        live_db.close()
        late_db.close()


def test_backfill_drops_zones_no_longer_configured(db):
    """A zone left out of the configuration loses its local rows and its mark; the others keep theirs."""
    rows = [row(us("2026-11-28T10:00")), row(us("2026-11-29T10:00"))]
    both = Rollups(["UTC", "Europe/Berlin"])
    both.backfill(db)
    both.add(db, rows)
    assert Rollups(["UTC"]).backfill(db) == []  # nothing to build, Berlin dropped
    for unit in ("day", "week", "month"):
        assert table(db, unit, "Europe/Berlin") == {} and table(db, unit, "UTC") != {}
    assert [z for (z,) in db.execute("SELECT zone FROM rollup_zones")] == ["UTC"]


def test_zones_are_kept_once_in_configured_order():
    """A zone named twice gets one calendar."""
    assert Rollups(["UTC", "Europe/Berlin", "UTC"]).zones == ["UTC", "Europe/Berlin"]


def test_local_calendar_on_berlin_dst_days():
    """Spring-forward day (23 h) and fall-back day (25 h, its repeated 02:30 both times the same day): the
    first local midnight of the day, the Monday week and the month, written out in UTC."""
    cal = LocalCalendar("Europe/Berlin")
    spring = (us("2026-03-28T23:00"), us("2026-03-22T23:00"), us("2026-02-28T23:00"))
    for t in ("2026-03-28T23:00", "2026-03-29T00:59", "2026-03-29T01:00", "2026-03-29T21:59:59"):
        assert cal.start(us(t)) == spring
    assert cal.start(us("2026-03-29T22:00")) == (us("2026-03-29T22:00"),) * 2 + (us("2026-02-28T23:00"),)
    autumn = (us("2026-10-24T22:00"), us("2026-10-18T22:00"), us("2026-09-30T22:00"))
    for t in ("2026-10-24T22:00", "2026-10-25T00:30", "2026-10-25T01:30"):  # 02:30 CEST, then 02:30 CET
        assert cal.start(us(t)) == autumn
    assert cal.start(us("2026-10-25T23:00") - 1) == autumn  # twice, once cached
    assert cal.start(us("2026-10-25T23:00") - 1) == autumn
    assert cal.start(us("2026-10-25T23:00")) == (us("2026-10-25T23:00"),) * 2 + (us("2026-09-30T22:00"),)


def test_local_calendar_is_right_on_both_sides_of_a_midnight_inside_a_quarter_hour():
    """Monrovia was UTC-0:44:30 in 1971, so its midnight fell at 00:44:30Z, inside a quarter hour: instants 30 s
    before and 10 s after it get different days, in either order of asking."""
    before, after = us("1971-06-01T00:44:00"), us("1971-06-01T00:44:40")
    may = (us("1971-05-31T00:44:30"), us("1971-05-31T00:44:30"), us("1971-05-01T00:44:30"))  # 31 May: a Monday
    june = (us("1971-06-01T00:44:30"), us("1971-05-31T00:44:30"), us("1971-06-01T00:44:30"))
    cal = LocalCalendar("Africa/Monrovia")
    assert (cal.start(before), cal.start(after)) == (may, june)
    cal = LocalCalendar("Africa/Monrovia")
    assert (cal.start(after), cal.start(before)) == (june, may)


def test_one_batch_across_a_midnight_inside_a_quarter_hour_splits_the_local_days(db):
    """Records of one quarter hour and dims are summed together, unless a local midnight cuts that quarter:
    Monrovia's 1971 midnight at 00:44:30Z, records 30 s before and 10 s after it in one batch, land in two
    local days (and one UTC hour)."""
    rows = [row(us("1971-06-01T00:44:00"), cost=1), row(us("1971-06-01T00:44:40"), cost=2),
            row(us("1971-06-01T00:44:50"), cost=4), row(us("1971-06-01T00:31:00"), cost=8)]
    rollups = Rollups(["UTC", "Africa/Monrovia"])
    rollups.backfill(db)
    rollups.add(db, rows)
    day = lambda ts: window("daily", "Africa/Monrovia", from_us(ts)).start_us  # noqa: E731
    assert table(db, "day", "Africa/Monrovia") == expected(rows, day)
    assert {k[0]: v[5] for k, v in table(db, "day", "Africa/Monrovia").items()} == {
        us("1971-05-31T00:44:30"): 1 + 8, us("1971-06-01T00:44:30"): 2 + 4}
    assert table(db, "hour") == expected(rows, lambda ts: ts // HOUR_US * HOUR_US)
