"""In-process tests of `actors.allocator.holds` (reserved counters and expiry) and
`actors.allocator.forecast` (burn rates in five-minute buckets and the forecast of a window's end)."""

import datetime as dt
import random

from actors.allocator.budgets import Budget, Counter
from actors.allocator.forecast import Burn, forecast
from actors.allocator.holds import Charge, Hold, Holds
from budgetd.model import BudgetSpec, Estimate
from budgetd.periods import to_us, window

UTC = dt.timezone.utc
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
USD = 1_000_000_000
EST = Estimate(component="c", model="m", input_tokens=1)


def hold(hold_id: str, expires: float, *charges: Charge) -> Hold:
    return Hold(hold_id, list(charges), expires, EST, {"component": "c"}, 0, 0)


def reserved(*counters: Counter) -> list[tuple[int, int]]:
    return [(c.reserved_nanos, c.reserved_tokens) for c in counters]


# -- holds ------------------------------------------------------------------------------------------


def test_a_hold_reserves_on_every_counter_and_its_release_gives_back_exactly_that():
    """Two holds on shared counters add up; releasing one leaves exactly the other's amounts, releasing both
    leaves zero; spend is never touched."""
    a, b = Counter(spent_nanos=5, spent_tokens=7), Counter()
    holds = Holds()
    holds.add(hold("h1", 10.0, Charge(a, 300, 30), Charge(b, 300, 30)))
    holds.add(hold("h2", 20.0, Charge(a, 10**15, 4_000)))
    assert reserved(a, b) == [(300 + 10**15, 4_030), (300, 30)]
    assert holds.release("h2").id == "h2"
    assert reserved(a, b) == [(300, 30), (300, 30)]
    holds.release("h1")
    assert reserved(a, b) == [(0, 0), (0, 0)] and (a.spent_nanos, a.spent_tokens) == (5, 7)
    assert len(holds) == 0


def test_releasing_twice_or_an_unknown_hold_changes_nothing():
    """The second release of a hold answers None and does not take its amounts back again."""
    c = Counter()
    holds = Holds()
    holds.add(hold("h1", 10.0, Charge(c, 100, 1)))
    holds.add(hold("h2", 10.0, Charge(c, 50, 2)))
    assert holds.release("h1") is not None
    assert holds.release("h1") is None and holds.release("nope") is None
    assert reserved(c) == [(50, 2)] and holds.get("h1") is None and holds.get("h2") is not None


def test_expire_releases_holds_due_at_or_before_now_in_any_insertion_order():
    """Holds added out of expiry order: expire(20) releases those due at 10 and exactly 20, keeps 30."""
    c = Counter()
    holds = Holds()
    for hold_id, expires, amount in (("late", 30.0, 1), ("first", 10.0, 10), ("edge", 20.0, 100)):
        holds.add(hold(hold_id, expires, Charge(c, amount, amount)))
    holds.expire(9.999)
    assert len(holds) == 3 and c.reserved_nanos == 111
    holds.expire(20.0)
    assert sorted(h.id for h in holds) == ["late"] and reserved(c) == [(1, 1)]
    holds.expire(1e9)
    assert len(holds) == 0 and reserved(c) == [(0, 0)]


def test_expire_skips_holds_released_before_and_a_reused_id_with_a_later_expiry():
    """A hold already released is not taken back again at its expiry; an id opened again with a later
    expiry is not closed by its old expiry entry."""
    c = Counter()
    holds = Holds()
    holds.add(hold("a", 10.0, Charge(c, 5, 5)))
    holds.add(hold("b", 10.0, Charge(c, 7, 7)))
    holds.release("a")
    holds.add(hold("b2", 50.0, Charge(c, 1, 1)))
    holds.release("b")
    holds.add(hold("b", 40.0, Charge(c, 3, 3)))  # the same id again, later
    holds.expire(15.0)
    assert reserved(c) == [(4, 4)] and sorted(h.id for h in holds) == ["b", "b2"]
    holds.expire(40.0)
    assert reserved(c) == [(1, 1)] and [h.id for h in holds] == ["b2"]


# -- forecast ---------------------------------------------------------------------------------------

DAY = dt.datetime(2026, 11, 28, tzinfo=UTC)


def daily(limit_usd: float | None = 10.0, limit_tokens: int | None = None) -> Budget:
    return Budget.of(BudgetSpec(name="d", period="daily", policy="hard", limit_usd=limit_usd,
                                limit_tokens=limit_tokens), lambda m: m)


def test_forecast_on_the_window_average_projects_the_end_and_the_exhaustion_inside_the_window():
    """$3 spent by 06:00: $0.50 an hour; 18 hours left: $12 at the end; $10 is reached after 14 more hours."""
    now = DAY + dt.timedelta(hours=6)
    f = forecast(daily(), (), window("daily", "UTC", now), Counter(3 * USD, 600), None, to_us(now))
    assert (f.rate_basis, f.rate_usd_per_hour, f.rate_tokens_per_hour) == ("window_average", 0.5, 100.0)
    assert (f.projected_usd, f.projected_tokens) == (12.0, 600 + 18 * 100)
    assert f.exhausted_at == DAY + dt.timedelta(hours=20) and f.window_end == DAY + dt.timedelta(days=1)
    assert (f.spent_usd, f.spent_tokens, f.limit_usd, f.limit_tokens) == (3.0, 600, 10.0, None)


def test_exhaustion_at_or_after_the_window_end_is_none():
    """At $0.50 an hour, a $12 limit is reached exactly at midnight (not before the end: None), $20 after it;
    $11.50 at 23:00, inside."""
    now = DAY + dt.timedelta(hours=6)
    win, counter = window("daily", "UTC", now), Counter(3 * USD)
    assert forecast(daily(12.0), (), win, counter, None, to_us(now)).exhausted_at is None
    assert forecast(daily(20.0), (), win, counter, None, to_us(now)).exhausted_at is None
    assert forecast(daily(11.5), (), win, counter, None, to_us(now)).exhausted_at == DAY + dt.timedelta(hours=23)


def test_a_window_s_first_minutes_count_as_five_and_a_spent_limit_is_not_exhausted_again():
    """$1 in the first minute is $1 per five minutes ($12/h), not $60/h; a limit already reached gives no
    exhaustion time though the projection runs on."""
    now = DAY + dt.timedelta(minutes=1)
    win = window("daily", "UTC", now)
    f = forecast(daily(1000.0), (), win, Counter(1 * USD), None, to_us(now))
    assert f.rate_usd_per_hour == 12.0
    assert f.projected_usd == 1.0 + 12.0 * (23 * 60 + 59) / 60  # $288.80
    done = forecast(daily(10.0), (), win, Counter(10 * USD), None, to_us(now))
    assert done.exhausted_at is None and done.rate_usd_per_hour == 120.0


def test_the_token_limit_can_run_out_first():
    """6,000 tokens by 06:00 is 1,000 an hour: 10,000 is reached at 10:00, long before $100."""
    now = DAY + dt.timedelta(hours=6)
    f = forecast(daily(100.0, 10_000), (), window("daily", "UTC", now), Counter(3 * USD, 6_000), None, to_us(now))
    assert f.exhausted_at == DAY + dt.timedelta(hours=10) and f.projected_tokens == 6_000 + 18_000


def test_the_last_hour_basis_starts_once_the_process_has_watched_a_full_hour():
    """born exactly an hour ago: the last hour's $2 is the rate; one microsecond less: the window average."""
    now = DAY + dt.timedelta(hours=12)
    now_us = to_us(now)
    win = window("daily", "UTC", now)
    counter = Counter(6 * USD)

    def burn(born: int) -> Burn:
        b = Burn((now_us - 2 * HOUR_US) // Burn.BUCKET_US, born)
        b.add(now_us - 90 * MINUTE_US, 5 * USD, 0)  # before the last hour
        b.add(now_us - 30 * MINUTE_US, 2 * USD, 0)
        return b

    f = forecast(daily(), (), win, counter, burn(now_us - HOUR_US), now_us)
    assert (f.rate_basis, f.rate_usd_per_hour, f.projected_usd) == ("last_hour", 2.0, 6.0 + 12 * 2.0)
    assert f.exhausted_at == now + dt.timedelta(hours=2)
    f = forecast(daily(), (), win, counter, burn(now_us - HOUR_US + 1), now_us)
    assert (f.rate_basis, f.rate_usd_per_hour) == ("window_average", 0.5)


def test_a_total_budget_projects_nothing_and_uses_the_last_hour_at_once():
    """`total` has no window end: no projection; without a burn the rate is zero; with one (however young)
    it is the last hour's, and a trickle that would take over a century gives no exhaustion time."""
    total = Budget.of(BudgetSpec(name="t", period="total", policy="hard", limit_usd=10.0), lambda m: m)
    win = window("total", "UTC", DAY)
    now_us = to_us(DAY)
    f = forecast(total, (), win, Counter(4 * USD), None, now_us)
    assert (f.rate_basis, f.rate_usd_per_hour, f.projected_usd, f.exhausted_at, f.window_end) == (
        "last_hour", 0.0, None, None, None)
    young = Burn(now_us // Burn.BUCKET_US, born=now_us)
    young.add(now_us - MINUTE_US, USD, 0)
    f = forecast(total, (), win, Counter(4 * USD), young, now_us)
    assert (f.rate_basis, f.rate_usd_per_hour, f.exhausted_at) == ("last_hour", 1.0, DAY + dt.timedelta(hours=6))
    trickle = Burn(now_us // Burn.BUCKET_US, born=now_us)
    trickle.add(now_us, 1, 0)  # one nano-dollar an hour: $6 takes 685,000 years
    assert forecast(total, (), win, Counter(4 * USD), trickle, now_us).exhausted_at is None


# -- burn buckets -----------------------------------------------------------------------------------


T0 = to_us(DAY)  # on a bucket boundary
SLOT0 = T0 // Burn.BUCKET_US


def test_a_bucket_leaves_the_last_hour_after_twelve_buckets_and_the_day_after_three_hundred():
    """Spend at T0 counts in the last hour until T0 + 55 min, moves to the day before at T0 + 60 min, stays
    there until T0 + 24 h 55 min and is gone (its bucket too) at T0 + 25 h."""
    b = Burn(SLOT0, born=T0)
    b.add(T0 + 1, 100, 10)
    assert b.last_hour_at(T0 + 59 * MINUTE_US) == (100, 10) and b.before == [0, 0]
    assert b.last_hour_at(T0 + 60 * MINUTE_US) == (0, 0) and b.before == [100, 10]
    assert b.last_hour_at(T0 + (25 * 60 - 1) * MINUTE_US) == (0, 0) and b.before == [100, 10]
    assert not b.stale(T0 + (25 * 60 - 1) * MINUTE_US)
    b.last_hour_at(T0 + 25 * HOUR_US)
    assert b.before == [0, 0] and b.buckets == {}


def test_a_jump_of_more_than_a_day_drops_the_last_hour_without_passing_it_to_the_day_before():
    """Spend of the last hour, then nothing for 26 hours: both sums are zero (not moved into `before`)."""
    b = Burn(SLOT0, born=T0)
    b.add(T0, 7, 1)
    assert b.last_hour_at(T0 + 26 * HOUR_US) == (0, 0) and b.before == [0, 0] and b.buckets == {}


def test_late_records_land_in_their_own_bucket_and_records_older_than_25_hours_are_ignored():
    """A record 30 minutes late counts in the last hour, 2 hours late in the day before, 25 hours late in
    neither; a record from a day back gives a day of history."""
    now = T0 + 30 * HOUR_US
    b = Burn(now // Burn.BUCKET_US, born=now)
    b.add(now, 1, 1)
    assert not b.day_of_history()
    b.add(now - 30 * MINUTE_US, 10, 10)
    b.add(now - 2 * HOUR_US, 100, 100)
    b.add(now - 25 * HOUR_US, 1000, 1000)
    assert b.last_hour == [11, 11] and b.before == [100, 100]
    assert b.day_of_history()
    assert not b.stale(now + 25 * HOUR_US - 1) and b.stale(now + 25 * HOUR_US)


def test_burn_sums_equal_a_brute_force_sum_over_a_random_stream():
    """Against sums recomputed from every record: last hour = buckets (head - 12, head], day before =
    (head - 300, head - 12], where head is the latest bucket seen by an add or a read."""
    rng = random.Random(20261128)
    b = Burn(SLOT0, born=T0)
    records: list[tuple[int, int, int]] = []
    head, now = SLOT0, T0
    for _ in range(3000):
        now += rng.choice([0, MINUTE_US, 7 * MINUTE_US, HOUR_US, 3 * HOUR_US, 26 * HOUR_US if rng.random() < .01
                           else 0])
        if rng.random() < 0.2:
            last = b.last_hour_at(now)
            head = max(head, now // Burn.BUCKET_US)
        else:
            ts = now - rng.choice([0, 0, 0, 20 * MINUTE_US, 2 * HOUR_US, 24 * HOUR_US, 30 * HOUR_US])
            n, t = rng.randrange(10**9), rng.randrange(10**5)
            b.add(ts, n, t)
            records.append((ts // Burn.BUCKET_US, n, t))
            last = tuple(b.last_hour)
            head = max(head, ts // Burn.BUCKET_US)
        records = [r for r in records if r[0] > head - 300]  # older ones can never count again
        expect_last = [sum(r[i] for r in records if head - 12 < r[0] <= head) for i in (1, 2)]
        expect_before = [sum(r[i] for r in records if head - 300 < r[0] <= head - 12) for i in (1, 2)]
        assert list(last) == expect_last and b.before == expect_before
