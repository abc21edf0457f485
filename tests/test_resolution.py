"""A real daemon prices a request that names its provider from that provider's entry, never another's."""

from budgetd.client import SyncBudgetClient

# The fixture file prices gpt-4o as OpenAI (2.5 / 10 per million); OpenRouter's own quote is an override here.
CONFIG = """
[pricing]
[[pricing.overrides]]
model = "openrouter/openai/gpt-4o"
provider = "openrouter"
input_per_mtok = 5.0
output_per_mtok = 20.0
"""
MILLION = 1_000_000


def test_a_provider_named_request_is_priced_from_that_providers_entry(make_daemon):
    d = make_daemon(CONFIG)
    with SyncBudgetClient(d.socket) as client:
        for model, provider in [("gpt-4o", "openrouter"), ("openai/gpt-4o", "openrouter"),
                                ("openrouter/openai/gpt-4o", None)]:
            r = client.record(component="resolution", model=model, provider=provider, input_tokens=MILLION)
            assert (r.model, r.provider, r.priced, r.cost_usd) == ("openrouter/openai/gpt-4o", "openrouter", True,
                                                                   5.0), (model, provider)
        maker = client.record(component="resolution", model="gpt-4o", input_tokens=MILLION)
        assert (maker.model, maker.provider, maker.cost_usd) == ("gpt-4o", "openai", 2.5)
        # a provider with no price of its own for the model: unpriced (the fallback 15 per million), not OpenAI's
        groq = client.record(component="resolution", model="gpt-4o", provider="groq", input_tokens=MILLION)
        assert (groq.model, groq.provider, groq.priced, groq.cost_usd) == ("gpt-4o", "groq", False, 15.0)
        price = client.prices_get("gpt-4o", provider="openrouter")
        assert (price.price.model, price.resolved_from) == ("openrouter/openai/gpt-4o", "gpt-4o")
        stored = client.usage_list(limit=5).records
        assert [s.model for s in stored].count("openrouter/openai/gpt-4o") == 3


def test_an_unpriced_name_is_answered_with_what_it_may_have_meant_on_every_door(make_daemon):
    from conftest import run_cli

    d = make_daemon()
    with SyncBudgetClient(d.socket) as client:
        recorded = client.record(component="typo", model="gtp-4o", input_tokens=1000)
        assert not recorded.priced and "gpt-4o" in recorded.did_you_mean
        decision = client.check(component="typo", model="gtp-4o", input_tokens=1000)
        assert not decision.priced and "gpt-4o" in decision.did_you_mean
        assert any("has no price" in r and "did you mean gpt-4o" in r for r in decision.reasons), decision.reasons
        routed = client.route(component="typo", model="gtp-4o", input_tokens=1000)
        assert not routed.priced and "gpt-4o" in routed.did_you_mean
        priced = client.check(component="typo", model="gpt-4o", input_tokens=1000)
        assert priced.priced and priced.did_you_mean == [] and priced.reasons == []
    out = run_cli("record", "--component", "typo", "--model", "gtp-4o", "--input", "10", socket=d.socket)
    assert out.returncode == 0 and "did you mean gpt-4o" in out.stdout, out
    out = run_cli("route", "--component", "typo", "--model", "gtp-4o", "--input", "10", socket=d.socket)
    assert "'gtp-4o' has no price; did you mean gpt-4o" in out.stdout, out
