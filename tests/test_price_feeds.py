"""The feed parsers read what OpenRouter and llm-prices.com publish: their fixtures and hand-made payloads in
their formats, matched against the bundled book's keys; and one refresh of a real daemon from real feeds."""

import json

import pytest
from conftest import FIXTURES
from feeds import FeedServer, llm_prices_row, openrouter_model

from actors.prices.rules import canonical_key
from actors.sources import litellm_bundled, llm_prices, openrouter
from budgetd.client import SyncBudgetClient
from budgetd.model import LongContext, PriceEntry
from budgetd.pricing import PriceBook, TierRules


@pytest.fixture(scope="module")
def bundled_book() -> PriceBook:
    """The book of the price file inside the installed litellm: the keys a quote must find."""
    return PriceBook(litellm_bundled.load(TierRules())[0])


@pytest.fixture(scope="module")
def fixture_book() -> PriceBook:
    return PriceBook(litellm_bundled.load(TierRules(), FIXTURES / "litellm_prices.json")[0])


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def by_model(entries: list[PriceEntry]) -> dict[str, PriceEntry]:
    return {e.model: e for e in entries}


def router_feed(**pricing: str) -> dict:
    """An OpenRouter feed of one model, priced as given."""
    data = {"data": []}
    openrouter_model(data, "anthropic/claude-x", **pricing)
    return data


def site_feed(*rows: tuple) -> dict:
    """An llm-prices feed of (id, vendor, input, output, cached) rows."""
    data = {"updated_at": "2026-08-05", "prices": []}
    for row in rows:
        llm_prices_row(data, *row)
    return data


# -- OpenRouter -----------------------------------------------------------------------------------------


def test_openrouter_quotes_each_model_in_its_own_namespace_and_as_its_makers_price(fixture_book):
    entries, refused = openrouter.parse(fixture("openrouter_models.json"))
    assert refused == [] and len(entries) == 2 * 13
    quotes = by_model(entries)
    own, maker = quotes["openrouter/anthropic/claude-sonnet-4-5"], quotes["claude-sonnet-4-5"]
    assert (own.provider, maker.provider) == ("openrouter", "anthropic")
    for entry in (own, maker):  # USD per token as strings, exactly per Mtok
        assert (entry.input_per_mtok, entry.output_per_mtok, entry.cache_read_per_mtok, entry.cache_write_per_mtok,
                entry.max_input_tokens, entry.max_output_tokens) == (3.0, 15.0, 0.3, 3.75, 200_000, 64_000)
    makers = {canonical_key(e, openrouter.NAME, fixture_book) for e in entries if e.provider != "openrouter"}
    assert {"gpt-4o", "claude-sonnet-4-5", "gemini/gemini-2.5-pro", "deepseek/deepseek-chat",
            "mistral/mistral-large-latest"} <= makers


def test_openrouter_keys_match_the_books_openrouter_keys_and_the_makers_apart():
    book = PriceBook([
        PriceEntry(model="gpt-4o", provider="openai", input_per_mtok=2.5, output_per_mtok=10.0),
        PriceEntry(model="openrouter/openai/gpt-4o", provider="openrouter", input_per_mtok=2.5, output_per_mtok=10.0),
    ])
    entries, _ = openrouter.parse(fixture("openrouter_models.json"))
    quoted = ("gpt-4o", "openrouter/openai/gpt-4o")
    keys = {e.model: canonical_key(e, openrouter.NAME, book) for e in entries if e.model in quoted}
    assert keys == {"openrouter/openai/gpt-4o": "openrouter/openai/gpt-4o", "gpt-4o": "gpt-4o"}


@pytest.mark.parametrize("pricing", [
    {"prompt": "-1", "completion": "-1"},                  # a router: priced as whatever it routes to
    {"prompt": "-1", "completion": "0.000015"},            # one rate of no fixed price is no fixed price
    {"prompt": "0.000003", "completion": "-1.0"},
    {"completion": "0.000015"},                            # no price for the prompt at all
])
def test_openrouter_no_fixed_price_quotes_nothing(pricing):
    assert openrouter.parse(router_feed(**pricing)) == ([], [])


def test_openrouter_an_own_model_is_quoted_in_its_namespace_only():
    data = {"data": []}
    openrouter_model(data, "openrouter/auto", prompt="-1", completion="-1")
    openrouter_model(data, "openrouter/house-1", prompt="0", completion="0")
    entries, refused = openrouter.parse(data)
    assert refused == [] and [(e.model, e.provider, e.input_per_mtok) for e in entries] == [
        ("openrouter/openrouter/house-1", "openrouter", 0.0)]


@pytest.mark.parametrize("cache,rate", [
    ("0.0000003", 0.3),
    ("0", 0.0),      # an explicit zero is a price of zero
    ("-1", None),    # no fixed price: left out, never -1 (nor -1e6 per Mtok)
    (None, None),    # absent
])
def test_openrouter_cache_rates_read_like_the_main_rates(cache, rate):
    pricing = {"prompt": "0.000003", "completion": "0.000015"}
    if cache is not None:
        pricing |= {"input_cache_read": cache, "input_cache_write": cache}
    entries, refused = openrouter.parse(router_feed(**pricing))
    assert refused == [] and len(entries) == 2
    for entry in entries:
        assert (entry.input_per_mtok, entry.cache_read_per_mtok, entry.cache_write_per_mtok) == (3.0, rate, rate)


def test_openrouter_a_rate_that_is_not_a_number_refuses_its_model():
    entries, refused = openrouter.parse(router_feed(prompt="0.000003", completion="0.000015", input_cache_read="n/a"))
    assert entries == [] and refused == ["anthropic/claude-x: input_cache_read is not a number: 'n/a'"]


# -- llm-prices -----------------------------------------------------------------------------------------


def test_llm_prices_fixture_is_read_and_matched(fixture_book):
    entries, refused = llm_prices.parse(fixture("llm_prices_current.json"))
    assert refused == [] and len(entries) == 13
    assert {canonical_key(e, llm_prices.NAME, fixture_book) for e in entries} >= {
        "gpt-4o", "claude-sonnet-4-5", "gemini/gemini-2.5-pro", "deepseek/deepseek-chat",
        "mistral/mistral-large-latest"}
    gpt = by_model(entries)["gpt-4o"]
    assert (gpt.provider, gpt.input_per_mtok, gpt.cache_read_per_mtok, gpt.long_context) == ("openai", 2.5, 1.25, None)


# Each vendor of the site with one of its models (ids as the site writes them), and the bundled book's key for it.
# moonshot-ai and qwen: the site's current models are not in the bundled file yet, so models of theirs that are.
VENDOR_MODELS = [
    ("openai", "gpt-4o", "gpt-4o"),
    ("anthropic", "claude-sonnet-4.5", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro", "gemini/gemini-2.5-pro"),
    ("mistral", "mistral-large-latest", "mistral/mistral-large-latest"),
    ("deepseek", "deepseek-chat", "deepseek-chat"),
    ("xai", "grok-4.3", "xai/grok-4.3"),
    ("meta-ai", "muse-spark-1.2", "meta/muse-spark-1.2"),
    ("moonshot-ai", "kimi-k2.5", "moonshot/kimi-k2.5"),
    ("qwen", "qwen3-max", "dashscope/qwen3-max"),
    ("minimax", "minimax-m2", "minimax/MiniMax-M2"),
    ("amazon", "amazon-nova-pro", "amazon.nova-pro-v1:0"),
]


def test_every_vendor_of_the_map_is_checked_against_the_bundled_book():
    assert {vendor for vendor, _, _ in VENDOR_MODELS} == set(llm_prices.VENDORS)


@pytest.mark.parametrize("vendor,site_id,key", VENDOR_MODELS)
def test_llm_prices_vendors_resolve_to_the_bundled_books_keys(bundled_book, vendor, site_id, key):
    (entry,), _ = llm_prices.parse(site_feed((site_id, vendor, 1.0, 2.0)))
    assert entry.provider == llm_prices.VENDORS[vendor]
    assert canonical_key(entry, llm_prices.NAME, bundled_book) == key


def test_llm_prices_long_context_rows_are_the_base_models_long_context_rates():
    entries, refused = llm_prices.parse(site_feed(
        ("gpt-5.4", "openai", 2.5, 15.0, 0.25),
        ("gpt-5.4-272k", "openai", 5.0, 22.5, 0.5),
        ("gemini-x", "google", 1.25, 10.0, 0.125),
        ("gemini-x-1000k", "google", 5.0, 30.0),           # a second threshold, listed before the first
        ("gemini-x-200k", "google", 2.5, 15.0),
        ("moonshot-v1-128k", "moonshot-ai", 2.0, 5.0),     # a model of its own: no `moonshot-v1` row
        ("gpt-5.4-272k", "xai", 1.0, 1.0),                 # another vendor's row is not gpt-5.4's rate
    ))
    assert refused == []
    models = {(e.provider, e.model): e for e in entries}
    assert set(models) == {("openai", "gpt-5.4"), ("gemini", "gemini-x"), ("moonshot", "moonshot-v1-128k"),
                           ("xai", "gpt-5.4-272k")}
    gpt = models["openai", "gpt-5.4"]
    assert (gpt.input_per_mtok, gpt.output_per_mtok, gpt.cache_read_per_mtok) == (2.5, 15.0, 0.25)
    assert gpt.long_context == LongContext(threshold_tokens=272_000, input_per_mtok=5.0, output_per_mtok=22.5,
                                           cache_read_per_mtok=0.5)
    assert gpt.longer_contexts == []
    gemini = models["gemini", "gemini-x"]
    assert gemini.long_context == LongContext(threshold_tokens=200_000, input_per_mtok=2.5, output_per_mtok=15.0)
    assert gemini.longer_contexts == [LongContext(threshold_tokens=1_000_000, input_per_mtok=5.0,
                                                  output_per_mtok=30.0)]
    assert models["moonshot", "moonshot-v1-128k"].long_context is None


def test_llm_prices_a_refused_long_context_row_leaves_the_base_model_without_one():
    data = site_feed(("gpt-5.4", "openai", 2.5, 15.0), ("gpt-5.4-272k", "openai", 5.0, 22.5))
    data["prices"][1]["input"] = "5.00"
    (entry,), refused = llm_prices.parse(data)
    assert (entry.model, entry.long_context) == ("gpt-5.4", None)
    assert refused == ["gpt-5.4-272k: input is not a number: '5.00'"]


# -- through a daemon ----------------------------------------------------------------------------------------


def test_a_refresh_confirms_a_long_context_rate_by_llm_prices_and_reads_no_fixed_price_as_none(make_daemon):
    with FeedServer() as feeds:
        daemon = make_daemon(feeds.config())
        with SyncBudgetClient(daemon.socket) as c:
            c.prices_refresh(timeout=60)
            lite = feeds.edit("litellm")
            lite["gemini/gemini-2.5-pro"]["input_cost_per_token_above_200k_tokens"] = 5e-06  # 2.5 -> 5 per Mtok
            feeds.publish("litellm", lite)
            site = feeds.edit("llm_prices")
            llm_prices_row(site, "gemini-2.5-pro-200k", "google", 5.0, 15.0, 0.25, name="Gemini 2.5 Pro >200k")
            feeds.publish("llm_prices", site)
            router = feeds.edit("openrouter")
            openrouter_model(router, "openrouter/auto", prompt="-1", completion="-1")
            openrouter_model(router, "anthropic/claude-x", prompt="0.000003", completion="-1")
            feeds.publish("openrouter", router)
            report = c.prices_refresh(timeout=60)
            sources = {s.source: s for s in report.sources}
            assert (sources["litellm"].applied, sources["litellm"].held) == (1, 0)  # +100%, confirmed by llm-prices
            assert sources["openrouter"].fetched and sources["openrouter"].rejected == 0
            gemini = c.prices_get("gemini/gemini-2.5-pro").price
    assert (gemini.long_context.threshold_tokens, gemini.long_context.input_per_mtok) == (200_000, 5.0)
    assert gemini.verified is True
