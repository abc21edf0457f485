"""Costs of real calls, computed by hand from tests/fixtures/litellm_prices.json."""

import datetime as dt

import pytest

from budgetd.client import SyncBudgetClient

CONFIG = """
[pricing]
[[pricing.overrides]]
model = "tiny-model"
provider = "local"
input_per_mtok = 0.0004
output_per_mtok = 0.0004

[[pricing.overrides]]
model = "thinker"
provider = "acme"
input_per_mtok = 1.0
output_per_mtok = 2.0
reasoning_per_mtok = 6.0
[pricing.overrides.long_context]
threshold_tokens = 1000
input_per_mtok = 3.0
output_per_mtok = 4.0

[[pricing.overrides]]
model = "weekender"
provider = "acme"
input_per_mtok = 2.0
output_per_mtok = 2.0
[pricing.overrides.off_peak]
input_per_mtok = 1.0
windows = [{ hours_utc = ["00:00-00:00"], weekdays = [6, 7] }]
"""

# (usage fields, expected nano-dollars, expected resolved model, priced)
CASES = [
    # plain: 1000 x 2.5e-6 + 500 x 1e-5
    (dict(model="gpt-4o", input_tokens=1000, output_tokens=500), 7_500_000, "gpt-4o", True),
    # cache read at its own rate: 200 x 2.5e-6 + 800 x 1.25e-6 + 100 x 1e-5
    (dict(model="gpt-4o", input_tokens=200, cache_read_tokens=800, output_tokens=100), 2_500_000, "gpt-4o", True),
    # cache write: 100 x 3e-6 + 2000 x 3.75e-6 + 300 x 1.5e-5
    (dict(model="claude-sonnet-4-5", input_tokens=100, cache_write_tokens=2000, output_tokens=300),
     12_300_000, "claude-sonnet-4-5", True),
    # long context: 150k + 60k cached > 200k, so the whole request at the long rates:
    # 150000 x 2.5e-6 + 60000 x 2.5e-7 + 1000 x 1.5e-5
    (dict(model="gemini/gemini-2.5-pro", input_tokens=150_000, cache_read_tokens=60_000, output_tokens=1000),
     405_000_000, "gemini/gemini-2.5-pro", True),
    # exactly at the threshold is not above it: 200000 x 1.25e-6 + 1000 x 1e-5
    (dict(model="gemini/gemini-2.5-pro", input_tokens=200_000, output_tokens=1000),
     260_000_000, "gemini/gemini-2.5-pro", True),
    # an explicit 0 cache-write price is a real price: 1000 x 2.8e-7 + 5000 x 0 + 1000 x 4.2e-7
    (dict(model="deepseek/deepseek-chat", input_tokens=1000, cache_write_tokens=5000, output_tokens=1000),
     700_000, "deepseek/deepseek-chat", True),
    # unpriced: the fallback 15/75 per Mtok, flagged
    (dict(model="mystery-model-9", input_tokens=1000, output_tokens=1000), 90_000_000, "mystery-model-9", False),
    # a cost the caller knows wins
    (dict(model="gpt-4o", input_tokens=1000, output_tokens=500, cost_usd=0.123456789), 123_456_789, "gpt-4o", True),
    # provider-prefixed id resolves to the bare key
    (dict(model="openai/gpt-4o", input_tokens=1000, output_tokens=500), 7_500_000, "gpt-4o", True),
    # bare id resolves to the provider-prefixed key
    (dict(model="gemini-2.5-flash", input_tokens=1000, output_tokens=100), 550_000, "gemini/gemini-2.5-flash", True),
    # dated id resolves to its undated family: 1000 x 3e-6 + 100 x 1.5e-5
    (dict(model="claude-sonnet-4-5-20250929", input_tokens=1000, output_tokens=100),
     4_500_000, "claude-sonnet-4-5", True),
    # a local model is priced at zero by its source, and is still priced
    (dict(model="ollama/llama3", input_tokens=5000, output_tokens=5000), 0, "ollama/llama3", True),
    # rounded once per record: 0.4 + 0.4 nano-dollars is 1, not 0 + 0
    (dict(model="tiny-model", input_tokens=1, output_tokens=1), 1, "tiny-model", True),
    # a 1-hour cache write at its own rate: 100 x 3e-6 + 2000 x 6e-6 + 300 x 1.5e-5
    (dict(model="claude-sonnet-4-5", input_tokens=100, cache_write_1h_tokens=2000, output_tokens=300),
     16_800_000, "claude-sonnet-4-5", True),
    # service tiers: 1000 x 4.25e-6 + 500 x 1.7e-5 (priority), 1000 x 1.25e-6 + 500 x 5e-6 (batch)
    (dict(model="gpt-4o", input_tokens=1000, output_tokens=500, service_tier="priority"), 12_750_000, "gpt-4o", True),
    (dict(model="gpt-4o", input_tokens=1000, output_tokens=500, service_tier="batch"), 3_750_000, "gpt-4o", True),
    # a service tier with its long-context rates: 250000 x 4.5e-6 + 1000 x 2.7e-5
    (dict(model="gemini/gemini-2.5-pro", input_tokens=250_000, output_tokens=1000, service_tier="priority"),
     1_152_000_000, "gemini/gemini-2.5-pro", True),
    # audio input at its own rate: 500 x 3e-7 + 1500 x 1e-6 + 100 x 2.5e-6
    (dict(model="gemini/gemini-2.5-flash", input_tokens=2000, audio_input_tokens=1500, output_tokens=100),
     1_900_000, "gemini/gemini-2.5-flash", True),
    # web searches at $0.01 each: 1000 x 3e-6 + 100 x 1.5e-5 + 2 x 0.01
    (dict(model="claude-sonnet-4-5", input_tokens=1000, output_tokens=100, web_search_requests=2),
     24_500_000, "claude-sonnet-4-5", True),
    # reasoning at its own rate: 500 x 1e-6 + 100 x 2e-6 + 200 x 6e-6; above 1k the long-context input and
    # output rates, reasoning at the base's (the band gives none): 2000 x 3e-6 + 100 x 4e-6 + 200 x 6e-6
    (dict(model="thinker", input_tokens=500, output_tokens=300, reasoning_tokens=200), 1_900_000, "thinker", True),
    (dict(model="thinker", input_tokens=2000, output_tokens=300, reasoning_tokens=200), 7_600_000, "thinker", True),
]


@pytest.fixture(scope="module")
def priced_daemon(tmp_path_factory):
    from conftest import Daemon

    d = Daemon(tmp_path_factory.mktemp("cost"), CONFIG).start()
    yield d
    d.stop()


@pytest.mark.parametrize("fields,expected,model,priced", CASES, ids=[c[0]["model"] + str(i) for i, c in enumerate(CASES)])
def test_recorded_cost(priced_daemon, fields, expected, model, priced):
    with SyncBudgetClient(priced_daemon.socket) as client:
        recorded = client.record(component="cost-test", **fields)
        assert recorded.cost_usd == expected / 1e9
        assert recorded.model == model
        assert recorded.priced is priced
        stored = client.usage_list(limit=1).records[0]
        assert stored.record_id == recorded.record_id
        assert stored.cost_usd == expected / 1e9
        assert stored.model == model


def test_totals_are_exact_sums(priced_daemon):
    with SyncBudgetClient(priced_daemon.socket) as client:
        before = client.status().totals
        for fields, _, _, _ in CASES:
            client.record(component="sum-test", **fields)
        after = client.status().totals
    expected = sum(c[1] for c in CASES)
    assert round((after.cost_usd - before.cost_usd) * 1e9) == expected
    assert after.requests - before.requests == len(CASES)


def test_tier_and_provider_are_filled_in(priced_daemon):
    with SyncBudgetClient(priced_daemon.socket) as client:
        mini = client.record(component="t", model="gpt-4o-mini", input_tokens=1)
        opus = client.record(component="t", model="claude-opus-4-5", input_tokens=1)
        local = client.record(component="t", model="ollama/llama3", input_tokens=1)
        apollo = client.record(component="t", model="gpt-4o", input_tokens=1, tier="remote_heavyweight")
        unknown = client.record(component="t", model="acme/rocket-1", input_tokens=1)
    assert (mini.provider, mini.tier) == ("openai", "lightweight")  # (0.15 + 0.6) / 2 < 1
    assert (opus.provider, opus.tier) == ("anthropic", "heavyweight")  # (5 + 25) / 2 >= 10
    assert (local.provider, local.tier) == ("ollama", "lightweight")
    assert apollo.tier == "heavyweight"  # Apollo's name, mapped
    assert (unknown.provider, unknown.priced) == ("acme", False)


def test_unknown_model_zero_policy(make_daemon):
    d = make_daemon('[pricing]\nunknown_model = "zero"\n')
    with SyncBudgetClient(d.socket) as client:
        r = client.record(component="z", model="nobody-prices-me", input_tokens=10_000, output_tokens=10_000)
    assert (r.cost_usd, r.priced) == (0.0, False)


def _last(weekday: int, hour: int) -> dt.datetime:
    """The latest past instant on ISO `weekday` at `hour`:00 UTC, at least an hour ago."""
    when = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    while when.isoweekday() != weekday or when.hour != hour:
        when -= dt.timedelta(hours=1)
    return when


def test_off_peak_rates_apply_by_the_calls_time(priced_daemon):
    with SyncBudgetClient(priced_daemon.socket) as client:
        saturday = client.record(component="t", model="weekender", input_tokens=1000, ts=_last(6, 2))
        wednesday = client.record(component="t", model="weekender", input_tokens=1000, ts=_last(3, 2))
    assert (saturday.cost_usd, wednesday.cost_usd) == (0.001, 0.002)


SONNET_LONG = dict(component="t", model="claude-sonnet-4-5", input_tokens=250_000, output_tokens=1000)


def test_corrections_apply_as_their_own_source(make_daemon):
    d = make_daemon('[pricing]\nsources = ["litellm_bundled", "corrections"]\n')
    with SyncBudgetClient(d.socket) as client:
        # Anthropic's long-context rates on the direct API: 250000 x 6e-6 + 1000 x 2.25e-5
        assert client.record(**SONNET_LONG).cost_usd == 1.5225
        assert client.prices_get("claude-sonnet-4-5").price.source == "corrections"
        assert client.prices_get("claude-opus-4-5").price.source == "litellm_bundled"
        status = {s.source: s for s in client.status().prices.sources}
    assert status["corrections"].last_success is not None and status["corrections"].last_error is None


def test_corrections_shipped_after_a_book_was_applied_apply_at_the_next_start(make_daemon):
    d = make_daemon()  # the bundled file alone
    with SyncBudgetClient(d.socket) as client:
        assert client.record(**SONNET_LONG).cost_usd == 0.765  # the file's flat rates: 250000 x 3e-6 + 1000 x 1.5e-5
    d.stop()
    d.config_file.write_text(d.config_file.read_text().replace(
        'sources = ["litellm_bundled"]', 'sources = ["litellm_bundled", "corrections"]'))
    d.start()
    with SyncBudgetClient(d.socket) as client:
        assert client.record(**SONNET_LONG).cost_usd == 1.5225
        history = client.prices_history("claude-sonnet-4-5").versions
    assert [v.source for v in history] == ["litellm_bundled", "corrections"]
