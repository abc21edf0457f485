"""In-process tests of `actors.allocator.admission`: an estimate priced with a hand-made price book and
weighed against budgets, with the action, reasons and states worked out by hand.

Prices are USD per million tokens, so one token at rate r costs r * 1,000 nano-dollars.
"""

import datetime as dt

import pytest

from actors.allocator.admission import Admission, AdmissionRules, decision, over
from actors.allocator.budgets import Budget, Budgets, Counter
from budgetd.clock import Clock
from budgetd.model import BudgetSpec, Estimate, PriceEntry, Scope
from budgetd.pricing import PriceBook, TierRules, UnpricedPolicy

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # mid-day: a test never runs into the next window

BOOK = [
    PriceEntry(model="gpt-big", provider="openai", input_per_mtok=10.0, output_per_mtok=30.0,
               cache_read_per_mtok=1.0, max_output_tokens=16_384, tier="heavyweight", capabilities=["tools"]),
    PriceEntry(model="gpt-short", provider="openai", input_per_mtok=2.0, output_per_mtok=8.0,
               max_output_tokens=1_000, tier="midweight"),
]
# gpt-big, 1,000 in + 500 out: 1,000 * 10,000 + 500 * 30,000 = 25,000,000 nanos ($0.025), 1,500 tokens.
BIG_COST, BIG_TOKENS = 25_000_000, 1_500


def admission(*specs: BudgetSpec, unpriced: UnpricedPolicy = UnpricedPolicy(), **rules) -> Admission:
    budgets = Budgets({s.name: Budget.of(s, lambda m: m) for s in specs})
    a = Admission(budgets, TierRules(), unpriced, AdmissionRules(**rules), Clock(start=NOW))
    a.book = PriceBook(BOOK)
    return a


def spec(name: str, policy: str = "hard", **kw) -> BudgetSpec:
    return BudgetSpec(name=name, period=kw.pop("period", "daily"), policy=policy, **kw)


def est(**kw) -> Estimate:
    return Estimate(**{"component": "rhetor", "model": "gpt-big", "input_tokens": 1000, "max_output_tokens": 500,
                       **kw})


def charge(a: Admission, name: str, key: tuple = (), spent: int = 0, reserved: int = 0) -> Counter:
    b = a.budgets[name]
    c = b.counter(key, b.window_at(a.clock.now_us()))
    c.spent_nanos, c.reserved_nanos = spent, reserved
    return c


def test_an_estimate_is_priced_exactly_and_allowed_without_budgets():
    """No budget: allow, no reasons; cost and tokens as computed by hand; dated ids resolve to the family."""
    a = admission()
    r = a.assess(est())
    assert (r.action, r.reasons, r.matches) == ("allow", [], [])
    assert (r.cost_nanos, r.tokens) == (BIG_COST, BIG_TOKENS)
    assert (r.attrs["model"], r.attrs["provider"], r.attrs["tier"]) == ("gpt-big", "openai", "heavyweight")
    assert a.assess(est(model="gpt-big-20250929")).cost_nanos == BIG_COST


def test_max_output_defaults_to_the_model_maximum_capped_by_the_default_and_cache_reads_count():
    """Without max_output_tokens: min(model max, default_output_tokens). Cache reads cost the cache rate and
    count as tokens."""
    a = admission()
    p = a.priced(est(max_output_tokens=None, cache_read_tokens=2000))
    # 1,000 * 10,000 + 2,000 * 1,000 + 4,096 * 30,000 = 134,880,000
    assert (p.max_output_tokens, p.cost_nanos, p.tokens) == (4096, 134_880_000, 1000 + 2000 + 4096)
    short = a.priced(est(model="gpt-short", max_output_tokens=None))
    assert short.max_output_tokens == 1000 and short.cost_nanos == 1000 * 2000 + 1000 * 8000
    assert admission(default_output_tokens=100).priced(est(max_output_tokens=None)).max_output_tokens == 100


@pytest.mark.parametrize("policy, action", [("ignore", "allow"), ("warn", "warn"), ("soft", "downgrade"),
                                            ("hard", "deny")])
def test_each_policy_answers_its_action_when_the_estimate_does_not_fit(policy, action):
    """$0.025 against a $0.02 limit: the policy decides, and the reason is listed whatever it is."""
    a = admission(spec("cap", policy, limit_usd=0.02))
    r = a.assess(est())
    assert r.action == action
    assert r.reasons == [f"budget cap: $0 spent + $0 reserved + $0.025 estimated > $0.02 ({policy})"]


def test_the_exact_limit_fits_and_one_nano_dollar_more_does_not():
    """spent + reserved + estimate == limit is allowed; one nano-dollar already spent tips it over."""
    a = admission(spec("cap", limit_usd=0.035))
    charge(a, "cap", spent=6_000_000, reserved=4_000_000)  # 6M + 4M + 25M = 35M = $0.035
    assert a.assess(est()).action == "allow" and a.assess(est()).reasons == []
    charge(a, "cap", spent=6_000_001, reserved=4_000_000)
    assert a.assess(est()).action == "deny"


def test_a_token_limit_is_checked_on_input_plus_cache_plus_output():
    """1,500 tokens fit a 1,500-token limit, not a 1,499-token one; the reason counts tokens."""
    assert admission(spec("t", limit_tokens=1500)).assess(est()).action == "allow"
    r = admission(spec("t", limit_tokens=1499)).assess(est())
    assert r.action == "deny"
    assert r.reasons == ["budget t: 0 + 0 reserved + 1,500 estimated tokens > 1,499 (hard)"]


def test_the_most_severe_action_wins_and_every_reason_is_listed():
    """warn + soft + hard over: deny with three reasons; warn + soft: downgrade; a budget that fits or does
    not match adds nothing."""
    a = admission(spec("w", "warn", limit_usd=0.01), spec("s", "soft", limit_usd=0.01),
                  spec("h", "hard", limit_usd=0.01), spec("roomy", limit_usd=1.0),
                  spec("other", limit_usd=0.0, scope=Scope(component="scribe")))
    r = a.assess(est())
    assert r.action == "deny"
    assert [reason.split(":")[0] for reason in r.reasons] == ["budget w", "budget s", "budget h"]
    assert [m.budget.name for m in r.matches] == ["w", "s", "h", "roomy"]
    del a.budgets["h"]
    assert a.assess(est()).action == "downgrade"
    del a.budgets["s"]
    assert a.assess(est()).action == "warn"


@pytest.mark.parametrize("priority, bypass, action", [(10, True, "warn"), (9, True, "deny"), (10, False, "deny")])
def test_critical_bypass_needs_both_priority_ten_and_the_budget_flag(priority, bypass, action):
    """Only a priority-10 request on a budget with critical_bypass passes a hard limit (as warn, said so)."""
    a = admission(spec("cap", limit_usd=0.01, critical_bypass=bypass))
    r = a.assess(est(priority=priority))
    assert r.action == action
    assert r.reasons[0].endswith("; critical request bypasses the hard limit") == (action == "warn")


def test_critical_bypass_does_not_lift_soft_budgets_or_other_hard_ones():
    """A bypassing hard budget says warn, but a soft budget still says downgrade and a hard one without the
    flag still denies."""
    a = admission(spec("vip", limit_usd=0.01, critical_bypass=True), spec("s", "soft", limit_usd=0.01))
    assert a.assess(est(priority=10)).action == "downgrade"
    a.budgets["h"] = Budget.of(spec("h", limit_usd=0.01), lambda m: m)
    assert a.assess(est(priority=10)).action == "deny"


def test_max_reservation_usd_caps_a_hold_not_a_check():
    """An estimate above the cap is denied for a hold; at the cap it is allowed; a check is not capped."""
    r = admission(max_reservation_usd=0.02).assess(est(), for_hold=True)
    assert r.action == "deny"
    assert r.reasons == ["estimate $0.025 is above admission.max_reservation_usd ($0.02)"]
    assert admission(max_reservation_usd=0.025).assess(est(), for_hold=True).action == "allow"
    assert admission(max_reservation_usd=0.02).assess(est()).action == "allow"


def test_unknown_models_are_denied_charged_at_the_fallback_or_free_as_configured():
    """deny refuses with a reason naming the model; fallback prices 15/75 per million; zero is free but a
    budget still matches it."""
    r = admission(unpriced=UnpricedPolicy(mode="deny")).assess(est(model="mystery"))
    assert r.action == "deny" and r.entry is None
    assert r.reasons == ["model 'mystery' has no price and pricing.unknown_model is 'deny'"]
    fallback = admission().assess(est(model="mystery"))
    assert fallback.action == "allow" and fallback.cost_nanos == 1000 * 15_000 + 500 * 75_000
    zero = admission(spec("cap", limit_usd=0.0), unpriced=UnpricedPolicy(mode="zero")).assess(est(model="mystery"))
    assert (zero.action, zero.cost_nanos, len(zero.matches)) == ("allow", 0, 1)


def test_reasons_name_the_budget_and_its_key_with_both_limits():
    """A "*" budget names the key; a budget over in dollars and tokens lists both, joined by '; '."""
    a = admission(spec("daily-total", limit_usd=0.03, limit_tokens=1000, scope=Scope(component="*")))
    c = charge(a, "daily-total", ("rhetor",), spent=10_000_000)
    c.spent_tokens, c.reserved_tokens = 200, 50
    r = a.assess(est())
    assert r.reasons == ["budget daily-total (component=rhetor): $0.01 spent + $0 reserved + $0.025 estimated "
                         "> $0.03; 200 + 50 reserved + 1,500 estimated tokens > 1,000 (hard)"]
    soft = Budget.of(spec("soft-cap", "soft", limit_usd=0.02), lambda m: m)
    held = Counter(spent_nanos=15_000_000)
    held.reserved_nanos = 5_000_000
    assert over(soft, (), held, 1_000, 0, 10) == (  # one micro-dollar over
        "downgrade", "budget soft-cap: $0.015 spent + $0.005 reserved + $0.000001 estimated > $0.02 (soft)")


def test_a_check_peeks_at_counters_and_a_hold_keeps_them():
    """A check leaves the budget's counters as they were; a hold creates the counter it will charge."""
    a = admission(spec("cap", limit_usd=1.0, scope=Scope(component="*")))
    a.assess(est())
    assert a.budgets["cap"].counters == {}
    r = a.assess(est(), for_hold=True)
    assert list(a.budgets["cap"].counters.values()) == [r.matches[0].counter]


def test_decision_carries_the_estimate_and_every_matching_budget_state():
    """decision(): allowed unless deny, dollars from nanos, tokens, one state per match, hold fields passed."""
    a = admission(spec("cap", limit_usd=0.05), spec("tok", "warn", limit_tokens=2000))
    charge(a, "cap", spent=40_000_000)
    r = a.assess(est(), for_hold=True)
    d = decision(r, r.action, reservation_id="res-1")
    assert (d.allowed, d.action, d.estimated_cost_usd, d.estimated_tokens) == (False, "deny", 0.025, 1500)
    assert d.reservation_id == "res-1" and d.suggestion is None
    assert [(s.budget, s.status, s.used_fraction, s.spent_usd) for s in d.budgets] == [
        ("cap", "warning", 0.8, 0.04), ("tok", "ok", 0.0, 0.0)]
    assert decision(r, "warn").allowed is True
