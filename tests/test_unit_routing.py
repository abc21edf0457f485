"""In-process tests of `actors.allocator.routing`: ranking, route and the suggestion of a denial, on a
hand-made price book whose costs are computed independently in the test."""

import datetime as dt
from decimal import Decimal

import pytest

from actors.allocator.admission import Admission, AdmissionRules
from actors.allocator.budgets import Budget, Budgets
from actors.allocator.routing import Candidates, rank, route, suggest
from budgetd.clock import Clock
from budgetd.model import BudgetSpec, Estimate, Need, PriceEntry, Scope
from budgetd.pricing import PriceBook, TierRules, UnpricedPolicy
from budgetd.protocol import OpError

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)

#: model -> (tier, input and output USD per million, capabilities, context window)
MODELS = {
    "big": ("heavyweight", "10", "30", ["tools", "vision"], 200_000),
    "big2": ("heavyweight", "5", "15", ["tools", "vision"], 200_000),
    "mid": ("midweight", "1", "4", ["tools", "vision"], 128_000),
    "mid-cheap": ("midweight", "0.5", "2", ["tools"], 128_000),
    "small": ("lightweight", "0.1", "0.4", ["tools", "vision"], 8_000),
    "tiny": ("lightweight", "0.05", "0.2", [], None),
}
ENTRIES = [PriceEntry(model=m, provider="p", tier=t, input_per_mtok=float(i), output_per_mtok=float(o),
                      capabilities=caps, max_input_tokens=window) for m, (t, i, o, caps, window) in MODELS.items()]
ENTRIES.append(PriceEntry(model="embedder", provider="p", input_per_mtok=0.01, output_per_mtok=0.0, mode="embedding"))


def cost(model: str, input_tokens: int = 1000, output_tokens: int = 500) -> int:
    """Nano-dollars, by hand: tokens * USD-per-million * 1,000."""
    _, i, o, _, _ = MODELS[model]
    return int(input_tokens * Decimal(i) * 1000 + output_tokens * Decimal(o) * 1000)


def admission(*specs: BudgetSpec) -> Admission:
    a = Admission(Budgets({s.name: Budget.of(s, lambda m: m) for s in specs}), TierRules(), UnpricedPolicy(),
                  AdmissionRules(), Clock(start=NOW))
    a.book = PriceBook(ENTRIES)
    return a


def hard(name: str, limit_nanos: int, policy: str = "hard", **scope) -> BudgetSpec:
    return BudgetSpec(name=name, period="daily", policy=policy, limit_usd=limit_nanos / 1e9, scope=Scope(**scope))


def est(model: str = "mid", **kw) -> Estimate:
    return Estimate(**{"component": "rhetor", "model": model, "input_tokens": 1000, "max_output_tokens": 500, **kw})


def ranking(a: Admission, e: Estimate, need: Need | None = None, candidates=None):
    result, chosen = route(a, e, candidates, need, a.book.chat_models())
    return result, chosen, [(alt.model, alt.fits) for alt in result.alternatives]


def test_the_requested_model_comes_first_then_the_same_tier_then_lower_then_higher_tiers():
    """Everything fits: mid (requested), mid-cheap (same tier), tiny and small (lower, cheapest first), big2
    and big (higher, cheapest first); embedding models are not candidates; estimates are the hand costs."""
    a = admission()
    result, chosen, order = ranking(a, est())
    assert order == [("mid", True), ("mid-cheap", True), ("tiny", True), ("small", True), ("big2", True),
                     ("big", True)]
    assert result.choice == "mid" and chosen.model == "mid" and chosen.tier is None
    assert {alt.model: alt.estimated_cost_usd for alt in result.alternatives} == {
        m: cost(m) / 1e9 for m in MODELS}
    assert [alt.why for alt in result.alternatives[:3]] == [
        "the requested model", "same tier (midweight)", "lower tier (lightweight)"]
    assert result.alternatives[-1].why == "higher tier (heavyweight)"


def test_a_requested_model_over_budget_yields_to_the_same_tier_and_says_why():
    """A hard budget on mid alone: mid-cheap is chosen and mid goes to the end, with its budget's reason."""
    limit = cost("mid") - 1
    a = admission(hard("mid-cap", limit, model="mid"))
    result, chosen, order = ranking(a, est())
    assert result.choice == "mid-cheap" and chosen.model == "mid-cheap"
    assert order[-1] == ("mid", False)
    assert result.alternatives[-1].why.startswith("the requested model: budget mid-cap: ")


def test_models_that_fit_come_before_any_that_do_not_and_soft_counts_as_not_fitting():
    """A $0.001 limit: only tiny and small fit and lead; the rest follow in their tier order. A soft budget
    excludes just as a hard one does, a warn budget does not."""
    limit = 1_000_000
    assert cost("small") < limit < cost("mid-cheap")
    for policy in ("hard", "soft"):
        _, _, order = ranking(admission(hard("cap", limit, policy)), est())
        assert order == [("tiny", True), ("small", True), ("mid", False), ("mid-cheap", False), ("big2", False),
                         ("big", False)]
    _, _, order = ranking(admission(hard("cap", limit, "warn")), est())
    assert all(fits for _, fits in order) and order[0] == ("mid", True)


def test_a_model_lacking_a_needed_capability_is_never_ranked():
    """Needing vision drops mid-cheap and tiny; needing audio drops everything."""
    _, _, order = ranking(admission(), est(), Need(capabilities=["vision"]))
    assert [m for m, _ in order] == ["mid", "small", "big2", "big"]
    result, chosen, order = ranking(admission(), est(), Need(capabilities=["vision", "audio"]))
    assert (result.choice, chosen, order) == (None, None, [])


def test_the_context_window_must_hold_input_cache_and_output():
    """small's 8,000-token window holds 7,000 + 500 cached + 500 out exactly, not one input token more;
    a model whose window is unknown is kept unless a minimum context is needed."""
    _, _, fits = ranking(admission(), est(input_tokens=7000, cache_read_tokens=500))
    assert "small" in [m for m, _ in fits] and "tiny" in [m for m, _ in fits]
    _, _, over = ranking(admission(), est(input_tokens=7001, cache_read_tokens=500))
    assert "small" not in [m for m, _ in over] and "tiny" in [m for m, _ in over]
    _, _, long = ranking(admission(), est(), Need(min_context_tokens=150_000))
    assert [m for m, _ in long] == ["big2", "big"]
    _, _, exact = ranking(admission(), est(), Need(min_context_tokens=128_000))
    assert [m for m, _ in exact] == ["mid", "mid-cheap", "big2", "big"]


@pytest.mark.parametrize("max_tier, models", [
    ("midweight", ["mid", "mid-cheap", "tiny", "small"]),
    ("local_lightweight", ["tiny", "small"]),  # Apollo's name for lightweight
    ("heavyweight", ["mid", "mid-cheap", "tiny", "small", "big2", "big"]),
])
def test_max_tier_drops_every_model_above_it(max_tier, models):
    """No model of a tier above `max_tier` is ranked."""
    _, _, order = ranking(admission(), est(), Need(max_tier=max_tier))
    assert [m for m, _ in order] == models


def test_candidates_limit_the_ranking_and_an_unpriced_candidate_is_invalid():
    """Only the named candidates are ranked (mid itself is not one); an unknown one is an OpError on
    $.candidates naming it."""
    result, chosen, order = ranking(admission(), est(), candidates=["big", "small"])
    assert order == [("small", True), ("big", True)] and chosen.model == "small"
    with pytest.raises(OpError) as caught:
        ranking(admission(), est(), candidates=["small", "nonesuch"])
    assert (caught.value.code, caught.value.field) == ("invalid", "$.candidates")
    assert "'nonesuch'" in caught.value.message


def test_rank_dedupes_repeated_entries():
    """A model listed twice is ranked once."""
    a = admission()
    entries = a.book.chat_models()
    ranked = rank(a, est(), entries + entries, Need(), "midweight", "mid")
    assert sorted(r.entry.model for r in ranked) == sorted(MODELS)


def test_nothing_fitting_gives_no_choice():
    """A zero limit: every model is listed as not fitting and nothing is chosen."""
    result, chosen, order = ranking(admission(hard("cap", 0)), est())
    assert result.choice is None and chosen is None
    assert len(order) == len(MODELS) and not any(fits for _, fits in order)


def test_a_denied_request_is_offered_the_cheapest_capable_model_that_fits():
    """big is over a budget on big alone: big2 (same tier, same capabilities) is suggested; with a global
    limit that only small and tiny fit, small is (tiny lacks vision). Both are cheaper than the estimate."""
    a = admission(hard("big-cap", cost("big") - 1, model="big"))
    denied = a.assess(est("big"))
    assert denied.action == "deny"
    s = suggest(a, est("big"), denied, Candidates(a.book, a.book.chat_models()))
    assert (s.model, s.tier, s.estimated_cost_usd) == ("big2", "heavyweight", cost("big2") / 1e9)
    a = admission(hard("cap", 1_000_000))
    denied = a.assess(est("big"))
    s = suggest(a, est("big"), denied, Candidates(a.book, a.book.chat_models()))
    assert (s.model, s.estimated_cost_usd) == ("small", cost("small") / 1e9)
    assert s.estimated_cost_usd * 1e9 < denied.cost_nanos


def test_no_suggestion_when_nothing_cheaper_fits():
    """tiny, the cheapest model, over its own budget: others fit but cost more, so nothing is suggested; and
    under a limit nothing fits, nothing is suggested either."""
    a = admission(hard("tiny-cap", cost("tiny") - 1, model="tiny"))
    denied = a.assess(est("tiny"))
    assert denied.action == "deny" and suggest(a, est("tiny"), denied, Candidates(a.book, a.book.chat_models())) is None
    a = admission(hard("cap", cost("tiny") - 1))
    denied = a.assess(est("big"))
    assert suggest(a, est("big"), denied, Candidates(a.book, a.book.chat_models())) is None


def test_an_unpriced_request_is_offered_a_cheaper_priced_model():
    """mystery at the fallback rate (15/75 per million: $0.0525, heavyweight) over a $0.02 limit: big2 at
    $0.0125 is the cheapest heavyweight that fits."""
    a = admission(hard("cap", 20_000_000))
    denied = a.assess(est("mystery"))
    assert denied.cost_nanos == 1000 * 15_000 + 500 * 75_000 and denied.action == "deny"
    s = suggest(a, est("mystery"), denied, Candidates(a.book, a.book.chat_models()))
    assert (s.model, s.estimated_cost_usd) == ("big2", cost("big2") / 1e9)
