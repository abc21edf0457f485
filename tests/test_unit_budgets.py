"""In-process tests of `actors.allocator.budgets`: scope matching, windows, counters, fitting and states.

Expectations are worked out by hand in each test (nano-dollars: $1 = 1,000,000,000).
"""

import datetime as dt

import pytest

from actors.allocator.budgets import Budget, Counter, describe_key, money
from budgetd.model import BudgetSpec, Scope
from budgetd.periods import to_us

UTC = dt.timezone.utc
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def us(text: str) -> int:
    return to_us(at(text))


def budget(scope: Scope = Scope(), period: str = "daily", policy: str = "hard", **kw) -> Budget:
    spec = BudgetSpec(name=kw.pop("name", "b"), scope=scope, period=period, policy=policy, **kw)
    return Budget.of(spec, lambda model: {"gpt-4o": "openai/gpt-4o"}.get(model, model))


REQUEST = {"component": "rhetor", "model": "openai/gpt-4o", "provider": "openai", "tier": "midweight",
           "context_id": None, "task_type": "chat"}


def test_of_converts_the_limit_to_exact_nanos_and_resolves_model_and_tier_scopes():
    """0.1 USD is exactly 100,000,000 nano-dollars; a model scope is stored as its price key and an
    Apollo tier name as ours; exact and "*" dims are split in DIMS order."""
    b = budget(Scope(model="gpt-4o", tier="local_midweight", component="*", task_type="*"), limit_usd=0.1)
    assert b.limit_nanos == 100_000_000
    assert b.exact == (("model", "openai/gpt-4o"), ("tier", "midweight"))
    assert b.star == ("component", "task_type")
    assert budget(limit_tokens=5).limit_nanos is None
    assert budget(limit_usd=1e9).limit_nanos == 10**18  # the largest wire amount, still exact


def test_key_of_exact_scope_matches_only_equal_values():
    """An exact scope gives the empty key on a match, None on any other value or a missing one."""
    b = budget(Scope(component="rhetor", provider="openai"), limit_usd=1.0)
    assert b.key_of(REQUEST) == ()
    assert b.key_of({**REQUEST, "provider": "anthropic"}) is None
    assert b.key_of({**REQUEST, "provider": None}) is None
    assert b.key_of({"component": "rhetor"}) is None


def test_key_of_star_scope_keys_by_value_and_skips_requests_without_one():
    """"*" makes one counter per value (key in DIMS order); a request lacking the value is not covered."""
    b = budget(Scope(task_type="*", component="*", model="gpt-4o"), limit_usd=1.0)
    assert b.key_of(REQUEST) == ("rhetor", "chat")
    assert b.key_of({**REQUEST, "component": "scribe"}) == ("scribe", "chat")
    assert b.key_of({**REQUEST, "task_type": None}) is None
    assert b.key_of({**REQUEST, "model": "gpt-4o"}) is None  # scopes match the resolved key only


def test_an_unscoped_budget_covers_everything_and_a_disabled_one_nothing():
    """No scope: every request (even one with no attributes) has the key (); disabled: never covered."""
    assert budget(limit_usd=1.0).key_of({}) == ()
    assert budget(limit_usd=1.0).key_of(REQUEST) == ()
    off = budget(Scope(component="*"), limit_usd=1.0, enabled=False)
    assert off.key_of(REQUEST) is None
    assert budget(limit_usd=1.0, enabled=False).key_of({}) is None


def test_window_at_follows_dst_and_the_year_boundary_and_does_not_keep_a_stale_window():
    """A Berlin day at spring-forward is 23 h (23:00Z to 22:00Z); the last microsecond of a UTC year is
    December's, the next one January's; asking again after a cached window gives the new one."""
    berlin = budget(limit_usd=1.0, timezone="Europe/Berlin")
    w = berlin.window_at(us("2026-03-29T12:00:00"))
    assert (w.start, w.end) == (at("2026-03-28T23:00:00"), at("2026-03-29T22:00:00"))
    assert w.end_us - w.start_us == 23 * HOUR_US
    monthly = budget(limit_usd=1.0, period="monthly")
    last = us("2027-01-01T00:00:00") - 1
    dec = monthly.window_at(last)
    assert (dec.start, dec.end) == (at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00"))
    jan = monthly.window_at(last + 1)
    assert (jan.start, jan.end) == (at("2027-01-01T00:00:00"), at("2027-02-01T00:00:00"))
    assert monthly.window_at(last) == dec  # and back again
    total = budget(limit_usd=1.0, period="total").window_at(0)
    assert (total.start, total.end, total.start_us) == (None, None, None) and total.contains_us(10**17)


def test_counter_is_kept_per_key_and_window_but_peek_keeps_nothing():
    """`counter` creates and keeps one Counter per (key, window); `peek` returns the kept one or a
    fresh empty one that is not stored."""
    b = budget(Scope(component="*"), limit_usd=1.0)
    today, tomorrow = b.window_at(us("2026-11-28T10:00:00")), b.window_at(us("2026-11-29T10:00:00"))
    assert b.peek(("rhetor",), today).spent_nanos == 0 and b.counters == {}
    c = b.counter(("rhetor",), today)
    c.spent_nanos = 7
    assert b.counter(("rhetor",), today) is c and b.peek(("rhetor",), today) is c
    assert b.counter(("rhetor",), tomorrow) is not c and b.counter(("scribe",), today) is not c
    assert sorted(b.counters) == [(("rhetor",), today.start_us), (("rhetor",), tomorrow.start_us),
                                  (("scribe",), today.start_us)]


def test_fits_at_the_exact_limit_but_not_one_nano_dollar_or_one_token_over():
    """spent + reserved + estimate may equal the limit; one unit more in dollars or tokens does not fit."""
    b = budget(limit_usd=1.0, limit_tokens=1000)
    c = Counter(spent_nanos=400_000_000, spent_tokens=600)
    c.reserved_nanos, c.reserved_tokens = 100_000_000, 100
    assert b.fits(c, 500_000_000, 300)
    assert not b.fits(c, 500_000_001, 300)
    assert not b.fits(c, 500_000_000, 301)
    assert b.fits(c, 0, 0)


def test_fits_with_one_limit_or_none():
    """A dollar-only budget ignores tokens and vice versa; a budget without limits fits anything;
    a zero limit fits only a free, empty request."""
    dollars, tokens = budget(limit_usd=0.5), budget(limit_tokens=10)
    assert dollars.fits(Counter(), 500_000_000, 10**12) and not dollars.fits(Counter(), 500_000_001, 0)
    assert tokens.fits(Counter(), 10**18, 10) and not tokens.fits(Counter(), 0, 11)
    assert budget(policy="ignore").fits(Counter(10**18, 10**12), 10**18, 10**12)
    zero = budget(limit_usd=0.0)
    assert zero.fits(Counter(), 0, 5) and not zero.fits(Counter(), 1, 0)


def test_used_fraction_is_the_larger_of_dollars_and_tokens_and_infinite_over_a_zero_limit():
    """$0.25 of $1 and 600 of 1,000 tokens: 0.6; a zero limit is 0.0 used until anything is spent."""
    b = budget(limit_usd=1.0, limit_tokens=1000)
    assert b.used_fraction(250_000_000, 600) == pytest.approx(0.6)
    assert b.used_fraction(900_000_000, 100) == pytest.approx(0.9)
    assert b.used_fraction(0, 0) == 0.0
    zero = budget(limit_usd=0.0)
    assert zero.used_fraction(0, 0) == 0.0 and zero.used_fraction(1, 0) == float("inf")
    assert budget(policy="ignore").used_fraction(10**18, 10**12) == 0.0


@pytest.mark.parametrize("thresholds, spent_nanos, status", [
    ([0.5, 0.8, 1.0], 799_999_999, "ok"),        # just under the highest threshold below 1
    ([0.5, 0.8, 1.0], 800_000_000, "warning"),
    ([0.5, 0.8, 1.0], 999_999_999, "warning"),
    ([0.5, 0.8, 1.0], 1_000_000_000, "exceeded"),  # exactly at the limit
    ([0.5, 0.8, 1.0], 5_000_000_000, "exceeded"),
    ([1.0], 999_999_999, "ok"),                  # no threshold below 1: never "warning"
    ([0.3, 0.6, 1.5], 600_000_000, "warning"),
    ([0.3, 0.6, 1.5], 1_000_000_000, "exceeded"),  # exceeded at 100% even if a threshold is above
])
def test_state_status_follows_the_highest_threshold_below_one(thresholds, spent_nanos, status):
    """ok below the warn threshold, warning from it, exceeded from 100% used."""
    b = budget(limit_usd=1.0, thresholds=thresholds)
    win = b.window_at(us("2026-11-28T10:00:00"))
    assert b.state((), win, Counter(spent_nanos=spent_nanos)).status == status


def test_state_reports_dollars_key_window_and_rounded_fraction():
    """The state carries the counter in dollars, the "*" key as a dict, the window and the policy."""
    b = budget(Scope(component="*"), limit_usd=3.0, limit_tokens=10**6, policy="soft", name="day-cap",
               timezone="Europe/Berlin")
    win = b.window_at(us("2026-10-25T12:00:00"))  # the 25-hour Berlin day
    c = Counter(spent_nanos=1_000_000_000, spent_tokens=1234)
    c.reserved_nanos, c.reserved_tokens = 250_000_000, 99
    s = b.state(("rhetor",), win, c)
    assert (s.budget, s.key, s.policy) == ("day-cap", {"component": "rhetor"}, "soft")
    assert (s.window_start, s.window_end) == (at("2026-10-24T22:00:00"), at("2026-10-25T23:00:00"))
    assert (s.spent_usd, s.spent_tokens, s.reserved_usd, s.reserved_tokens) == (1.0, 1234, 0.25, 99)
    assert (s.limit_usd, s.limit_tokens) == (3.0, 10**6)
    assert s.used_fraction == 0.333333 and s.status == "ok"  # 1/3 rounded to six places
    assert describe_key(b, ("rhetor",)) == "component=rhetor"
    assert money(1_000_000_000) == "$1.00" and money(25_000_000) == "$0.025" and money(0) == "$0"


def test_prune_forgets_only_old_empty_windows():
    """Counters of windows older than the horizon that hold nothing go; the current window, windows
    inside the horizon and windows with an open reservation stay; `total` budgets are never pruned."""
    b = budget(limit_usd=1.0)
    now = us("2026-11-28T12:00:00")
    old, held, recent = (b.window_at(now - n * DAY_US) for n in (5, 4, 1))
    current = b.window_at(now)
    b.counter((), old).spent_nanos = 10
    b.counter((), held).reserved_nanos = 1
    b.counter((), recent).spent_nanos = 10
    b.counter((), current)
    b.prune(now, 2 * DAY_US)
    assert sorted(w for _, w in b.counters) == [held.start_us, recent.start_us, current.start_us]
    total = budget(limit_usd=1.0, period="total")
    total.counter((), total.window_at(0)).spent_nanos = 5
    total.prune(10**17, 0)
    assert len(total.counters) == 1


def test_prune_keeps_a_window_that_ended_less_than_keep_ago():
    """The allocator keeps counters of windows that ended less than `keep_us` ago (actor.py: "counters of
    windows that ended longer ago are forgotten"), so a late record for last month still adds to last
    month's spend. At 00:30 on March 1st February ended half an hour ago: its counter must stay."""
    b = budget(limit_usd=100.0, period="monthly")
    now = us("2026-03-01T00:30:00")
    february = b.window_at(us("2026-02-15T00:00:00"))
    assert february.end_us == us("2026-03-01T00:00:00")
    b.counter((), february).spent_nanos = 80_000_000_000
    b.prune(now, 2 * DAY_US)
    assert b.peek((), february).spent_nanos == 80_000_000_000


def test_the_index_finds_exactly_the_budgets_that_cover_a_request_in_their_order():
    """`Budgets.matching` agrees with asking every budget, and keeps the order they were defined in."""
    from actors.allocator.budgets import Budgets

    specs = [
        BudgetSpec(name="all", period="daily", limit_usd=1, policy="hard"),
        BudgetSpec(name="per-c", period="daily", limit_usd=1, policy="hard", scope=Scope(component="*")),
        BudgetSpec(name="rhetor", period="daily", limit_usd=1, policy="hard", scope=Scope(component="rhetor")),
        BudgetSpec(name="rhetor-4o", period="daily", limit_usd=1, policy="hard",
                   scope=Scope(component="rhetor", model="gpt-4o")),
        BudgetSpec(name="4o", period="daily", limit_usd=1, policy="hard", scope=Scope(model="gpt-4o")),
        BudgetSpec(name="off", period="daily", limit_usd=1, policy="hard", scope=Scope(component="rhetor"),
                   enabled=False),
        BudgetSpec(name="ctx", period="daily", limit_usd=1, policy="hard", scope=Scope(context_id="*",
                                                                                        component="apollo")),
    ]
    budgets = Budgets({s.name: Budget.of(s, lambda m: m) for s in specs})
    for attrs in ({"component": "rhetor", "model": "gpt-4o"}, {"component": "rhetor", "model": "gpt-4o-mini"},
                  {"component": "apollo", "model": "gpt-4o", "context_id": "s1"}, {"component": "apollo"},
                  {"model": "gpt-4o"}, {}):
        expected = [(b.name, b.key_of(attrs)) for b in budgets.values() if b.key_of(attrs) is not None]
        assert [(b.name, key) for b, key in budgets.matching(attrs)] == expected, attrs
    budgets.pop("rhetor")
    assert "rhetor" not in [b.name for b, _ in budgets.matching({"component": "rhetor", "model": "gpt-4o"})]


def test_the_index_follows_every_change_one_budget_at_a_time():
    """Set, replace (a new scope, the same place in the order), delete and pop, at random: `matching` always
    agrees with asking every budget, in the order the names were first defined."""
    import random

    from actors.allocator.budgets import Budgets

    rng = random.Random(7)
    scopes = [Scope(), Scope(component="*"), Scope(component="rhetor"), Scope(component="apollo"),
              Scope(model="gpt-4o"), Scope(component="rhetor", model="*"), Scope(task_type="chat")]
    budgets = Budgets()
    for step in range(400):
        name = f"b{rng.randrange(12)}"
        if name in budgets and rng.random() < 0.3:
            if rng.random() < 0.5:
                del budgets[name]
            else:
                assert budgets.pop(name) is not None
        else:
            budgets[name] = Budget.of(BudgetSpec(name=name, period="daily", limit_usd=1, policy="hard",
                                                 scope=rng.choice(scopes)), lambda m: m)
        for attrs in ({"component": "rhetor", "model": "gpt-4o", "task_type": "chat"}, {"component": "apollo"}, {}):
            expected = [(b.name, b.key_of(attrs)) for b in budgets.values() if b.key_of(attrs) is not None]
            assert [(b.name, key) for b, key in budgets.matching(attrs)] == expected, (step, attrs)
    assert budgets.pop("nope", None) is None


def test_a_state_is_kept_until_its_counter_changes():
    """A stream of checks builds a counter's state once; any change to its spend or holds, or another
    window, builds it afresh with the new figures."""
    b = budget(limit_usd=1.0, limit_tokens=1_000)
    win = b.window_at(us("2026-12-01T10:00"))
    counter = b.counter((), win)
    first = b.state((), win, counter)
    assert b.state((), win, counter) is first and first.spent_tokens == 0 and first.status == "ok"
    counter.spent_tokens += 900
    after = b.state((), win, counter)
    assert after is not first and after.spent_tokens == 900 and after.status == "warning"
    counter.reserved_nanos += 5
    assert b.state((), win, counter).reserved_usd == 5e-9
    tomorrow = b.window_at(us("2026-12-02T10:00"))
    assert b.state((), tomorrow, b.peek((), tomorrow)).window_start == at("2026-12-02T00:00")
