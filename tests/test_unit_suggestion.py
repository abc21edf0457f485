"""The suggestion a denial offers, on the whole price book of the installed litellm: the short search
(`routing.suggest`, which prices only the models its lowest rates leave below the bound and weighs only those)
gives exactly what ranking every chat model and taking the first cheaper one that fits gives (`rank`, which
route uses and tests/test_unit_routing.py checks by hand), for random requests and budgets."""

import datetime as dt
import random

import msgspec
import pytest

from actors.allocator.admission import Admission, AdmissionRules
from actors.allocator.budgets import Budget, Budgets
from actors.allocator.routing import CHEAPEST_KEPT, Candidates, rank, suggest
from actors.sources import litellm_bundled
from budgetd.clock import Clock
from budgetd.model import FUNCTIONAL_CAPABILITIES, BudgetSpec, Estimate, Need, Scope, Suggestion, usd
from budgetd.pricing import PriceBook, TierRules, UnpricedPolicy

NOW = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.timezone.utc)  # a Saturday night: off-peak windows are open


@pytest.fixture(scope="module")
def book() -> PriceBook:
    data = msgspec.json.decode(litellm_bundled.bundled_path().read_bytes())
    entries, _ = litellm_bundled.litellm.parse(data, litellm_bundled.NAME, TierRules())
    return PriceBook(entries, version=1)


def by_ranking(a: Admission, est: Estimate, assessment, chat_models) -> Suggestion | None:
    """The first model of the whole ranking that fits and is cheaper than the request."""
    caps = sorted(FUNCTIONAL_CAPABILITIES & set(assessment.entry.capabilities)) if assessment.entry else []
    requested = assessment.attrs.get("model")
    for r in rank(a, est, chat_models, Need(capabilities=caps), assessment.attrs.get("tier") or "heavyweight",
                  requested):
        if r.fits and r.cost_nanos < assessment.cost_nanos and r.entry.model != requested:
            return Suggestion(model=r.entry.model, provider=r.entry.provider, tier=r.entry.tier,
                              estimated_cost_usd=usd(r.cost_nanos))
    return None


def budgets(rng: random.Random, book: PriceBook, request_cost: int, models: list[str]) -> list[BudgetSpec]:
    """A budget on the component that refuses the request (its headroom tight, loose or none), hard budgets
    that refuse some cheap models, and a few that judge every model by its provider, tier or tokens."""
    headroom = rng.choice([-1, 0, request_cost // 1000, request_cost // 10, request_cost // 2, request_cost - 1])
    specs = [BudgetSpec(name="component", period="daily", policy=rng.choice(["hard", "soft"]),
                        limit_usd=max(headroom, 0) / 1e9, scope=Scope(component="rhetor"))]
    for i, model in enumerate(rng.sample(models, 40)):
        specs.append(BudgetSpec(name=f"model-{i}", period="daily", policy=rng.choice(["hard", "soft", "warn"]),
                                limit_usd=0.0, scope=Scope(model=model)))
    if rng.random() < 0.5:
        specs.append(BudgetSpec(name="providers", period="daily", policy="hard", limit_usd=request_cost / 4e9,
                                scope=Scope(provider="*")))
    if rng.random() < 0.5:
        specs.append(BudgetSpec(name="light", period="daily", policy="soft", limit_usd=0.0,
                                scope=Scope(tier=rng.choice(["lightweight", "midweight"]))))
    if rng.random() < 0.3:
        specs.append(BudgetSpec(name="tokens", period="daily", policy="hard", limit_tokens=rng.choice([2_000, 60_000]),
                                scope=Scope(component="rhetor", model="*")))
    return specs


def test_the_short_search_suggests_what_the_whole_ranking_does(book):
    rng = random.Random(20261201)
    chat = book.chat_models()
    candidates = Candidates(book, chat)
    names = [e.model for e in chat]
    offered = refused = 0
    for case in range(150):
        requested = rng.choice(names)
        est = Estimate(component="rhetor", model=requested, input_tokens=rng.choice([0, 10, 1_000, 50_000, 250_000]),
                       max_output_tokens=rng.choice([None, 1, 500, 8_000]),
                       cache_read_tokens=rng.choice([0, 0, 20_000]), cache_write_tokens=rng.choice([0, 0, 3_000]),
                       audio_input_tokens=rng.choice([0, 0, 0, 400]),
                       service_tier=rng.choice(["standard", "standard", "priority", "flex", "batch"]),
                       priority=rng.choice([0, 0, 10]))
        a = Admission(Budgets({}), TierRules(), UnpricedPolicy(), AdmissionRules(), Clock(start=NOW))
        a.book = book
        cost = a.priced(est).cost_nanos
        specs = budgets(rng, book, cost, names)
        a.budgets = Budgets({s.name: Budget.of(s, lambda m: m) for s in specs})
        assessment = a.assess(est)
        if assessment.action not in ("deny", "downgrade"):
            continue
        fast = suggest(a, est, assessment, candidates)
        assert fast == by_ranking(a, est, assessment, chat), (case, est, [s.name for s in specs])
        offered += fast is not None
        refused += fast is None
    # both outcomes are exercised, often
    assert offered >= 30 and refused >= 30, (offered, refused)


def test_past_the_cheapest_kept_the_tier_is_walked_again(book):
    """A request shape keeps each tier's cheapest models (CHEAPEST_KEPT); when budgets refuse every one of
    them, the suggestion is the next model that fits, the first time the shape is seen and every time after."""
    chat = book.chat_models()
    candidates = Candidates(book, chat)
    est = Estimate(component="rhetor", model="gpt-4o", input_tokens=1_000, max_output_tokens=500)
    a = Admission(Budgets({}), TierRules(), UnpricedPolicy(), AdmissionRules(), Clock(start=NOW))
    a.book = book
    refuse = [BudgetSpec(name="no-gpt-4o", period="daily", policy="hard", limit_usd=0.0, scope=Scope(model="gpt-4o"))]
    answers = []
    for refused in (0, CHEAPEST_KEPT - 1, CHEAPEST_KEPT, CHEAPEST_KEPT + 5):
        # refuse the cheapest models that fit, one at a time, until `refused` of them are refused
        while len(refuse) - 1 < refused:
            last = suggest(a, est, a.assess(est), candidates)
            refuse.append(BudgetSpec(name=f"no-{len(refuse)}", period="daily", policy="hard", limit_usd=0.0,
                                     scope=Scope(model=book.resolve(last.model, last.provider).entry.model)))
            a.budgets = Budgets({s.name: Budget.of(s, lambda m: m) for s in refuse})
        for _ in range(2):  # the shape's first suggestion, then one from what the shape keeps
            a.budgets = Budgets({s.name: Budget.of(s, lambda m: m) for s in refuse})
            assessment = a.assess(est)
            assert assessment.action == "deny"
            fast = suggest(a, est, assessment, candidates)
            assert fast is not None and fast == by_ranking(a, est, assessment, chat), (refused, fast)
            answers.append(fast.model)
    assert len(set(answers)) == 4, answers  # each round suggests a model the one before could not
