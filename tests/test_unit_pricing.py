"""In-process tests of the cost rule (`budgetd.pricing`: cards, arithmetic, off-peak windows) and of reading the
whole price schema from litellm's file (`actors.sources.litellm`) and the corrections: each class of price
that was wrong, with its expected figure computed by hand, and every fallback."""

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from actors.prices import rules
from actors.sources import corrections, litellm, litellm_bundled
from budgetd.model import LongContext, OffPeak, OffPeakWindow, PriceEntry, ServiceTierRates
from budgetd.pricing import (
    Billed, PriceBook, TierRules, UnpricedPolicy, cost_atto, cost_nanos, price_call, rate_card,
)


def nanos(usd: str) -> int:
    return int(Decimal(usd) * 10**9)


def at(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def bundled() -> dict[str, PriceEntry]:
    """litellm's bundled file as the daemon prices it: corrections applied."""
    fixes = corrections.load()
    entries, _ = litellm_bundled.load(TierRules())
    return {e.model: corrections.correct(e, fixes[e.model]) if e.model in fixes else e for e in entries}


def cost(entry: PriceEntry, billed: Billed, at_us: int | None = None) -> int:
    return cost_nanos(rate_card(entry), billed, at_us)


# -- each class of price that was wrong, on litellm's bundled file ----------------------------------------------


def test_tiered_pricing_as_the_only_price(bundled):
    # 1,234 x $0.05/M + 567 x $0.40/M (the first range), not the unpriced fallback's $0.061035
    assert cost(bundled["dashscope/qwen-flash"], Billed(1234, 567)) == nanos("0.0002885")
    # above the first range's end, every token of the request at the second range's rates
    assert cost(bundled["dashscope/qwen-flash"], Billed(256_001, 1000)) == nanos("0.06600025")
    assert cost(bundled["dashscope/qwen-flash"], Billed(256_000, 1000)) == nanos("0.0132")  # the end is in range


def test_tiered_pricing_beside_a_base_price(bundled):
    # 250k in at the second range ($0.50/M) and 1k out at $2.50/M, not the base $0.0255
    assert cost(bundled["opencode_go/claude-haiku-5-5"], Billed(250_000, 1000)) == nanos("0.1275")


def test_several_thresholds_the_highest_passed_applies(bundled):
    kyma = bundled["kyma/qwen3.7-flash"]
    assert cost(kyma, Billed(300_000, 1000)) == nanos("0.08208")  # above 256k: $0.27/M in, $1.08/M out
    assert cost(kyma, Billed(100_000, 1000)) == nanos("0.01404")  # above 32k only: $0.135/M, $0.54/M
    # the prompt counts cached tokens: 250k + 10k read is above 256k; the reads at the base's explicit rate
    assert cost(kyma, Billed(250_000, 1000, cache_read=10_000)) == nanos("0.068661")


def test_one_hour_cache_writes_at_their_own_rate(bundled):
    haiku = bundled["claude-haiku-4-5"]
    assert cost(haiku, Billed(cache_write_1h=2000)) == nanos("0.004")  # 2x input ($2/M), not 1.25x
    assert cost(haiku, Billed(cache_write=2000)) == nanos("0.0025")


def test_service_tiers(bundled):
    gpt5 = bundled["gpt-5"]
    standard = cost(gpt5, Billed(1234, 567))
    assert standard == nanos("0.0072125")
    assert cost(gpt5, Billed(1234, 567, service_tier="priority")) == 2 * standard
    assert cost(gpt5, Billed(1234, 567, service_tier="flex")) * 2 == standard
    assert cost(gpt5, Billed(1234, 567, service_tier="batch")) * 2 == standard
    # with the long-context tier: Gemini 2.5 Pro, priority, above 200k
    assert cost(bundled["gemini/gemini-2.5-pro"], Billed(250_000, 1000, service_tier="priority")) == nanos("1.152")


def test_reasoning_tokens_at_the_reasoning_rate(bundled):
    # 1,234 x $0.40/M + 267 x $1.20/M + 300 reasoning x $4/M
    assert cost(bundled["dashscope/qwen-plus-2025-04-28"], Billed(1234, 567, reasoning=300)) == nanos("0.002014")


def test_audio_tokens_at_the_audio_rates(bundled):
    audio = bundled["gpt-4o-audio-preview-2024-12-17"]
    assert cost(audio, Billed(1234, 567)) == nanos("0.008755")
    # 960 x $2.50/M + 274 audio x $40/M + 446 x $10/M + 121 audio x $80/M
    assert cost(audio, Billed(1234, 567, audio_input=274, audio_output=121)) == nanos("0.0275")


def test_web_search_fee_per_query(bundled):
    gpt5 = bundled["gpt-5"]
    assert cost(gpt5, Billed(1234, 567, web_searches=3)) - cost(gpt5, Billed(1234, 567)) == nanos("0.03")
    # Gemini 2.x grounding: one fee per grounded request, however many queries
    gemini = bundled["gemini/gemini-2.5-pro"]
    assert gemini.web_search_billing == "per_request"
    assert cost(gemini, Billed(web_searches=3)) == nanos("0.035")


def test_fireworks_cached_input_at_half_the_input_rate(bundled):
    v3 = bundled["fireworks_ai/accounts/fireworks/models/deepseek-v3"]
    # 50k x $0.90/M + 180k cached x $0.45/M + 1k x $0.90/M, not $0.2079
    assert cost(v3, Billed(50_000, 1000, cache_read=180_000)) == nanos("0.1269")


def test_off_peak_windows(bundled):
    pro = bundled["deepseek-v4-pro"]
    call = Billed(1234, 567)
    peak = cost(pro, call, at("2026-11-25T02:00:00+00:00"))  # a Wednesday, 02:00 UTC
    assert peak == nanos("0.0038742")
    assert cost(pro, call, at("2026-11-28T02:00:00+00:00")) * 2 == peak  # a Saturday: half
    assert cost(pro, call, at("2026-11-25T12:00:00+00:00")) * 2 == peak  # a weekday's off-peak hours
    assert cost(pro, call) == peak  # no time: peak


def test_an_alias_is_priced_as_the_entry_it_names(bundled):
    alias = bundled["claude-sonnet-latest"]
    assert alias.alias_of == "claude-sonnet-5-5"
    assert rate_card(alias) == rate_card(bundled["claude-sonnet-5-5"])
    resolved = PriceBook(bundled.values()).resolve("claude-sonnet-latest")
    assert resolved is not None and resolved.card == rate_card(bundled["claude-sonnet-5-5"])


def test_a_correction_applies_anthropics_long_context_rule(bundled):
    sonnet = bundled["claude-sonnet-4-5"]
    assert sonnet.source == "corrections"
    assert cost(sonnet, Billed(250_000, 1000)) == nanos("1.5225")  # 250k x $6/M + 1k x $22.50/M
    assert cost(sonnet, Billed(200_000, 1000)) == nanos("0.615")  # at the threshold: not above it


# -- the rule and its fallbacks ----------------------------------------------------------------------------


BASE = PriceEntry(model="m", input_per_mtok=2.0, output_per_mtok=8.0)


def priced(**fields) -> PriceEntry:
    return msgspec.structs.replace(BASE, **fields)


def test_missing_rates_fall_back_and_an_explicit_zero_is_a_price():
    call = Billed(1000, 1000, cache_read=1000, cache_write=1000, cache_write_1h=1000, reasoning=500,
                  audio_input=500, audio_output=250)
    # every input kind at the input rate, every output kind at the output rate
    assert cost(BASE, call) == 4000 * 2000 + 1000 * 8000
    zero = priced(cache_read_per_mtok=0.0, cache_write_per_mtok=0.0, reasoning_per_mtok=0.0)
    # reads and writes free (the 1-hour write falls back to the write rate: free too), reasoning free
    assert cost(zero, call) == 1000 * 2000 + 500 * 8000
    written = priced(cache_write_per_mtok=2.5)
    assert cost(written, Billed(cache_write_1h=1000)) == 1000 * 2500  # the 1-hour write at the default write rate


def test_the_cost_rule_by_kind():
    e = priced(cache_read_per_mtok=0.2, cache_write_per_mtok=2.5, cache_write_1h_per_mtok=4.0, reasoning_per_mtok=12.0,
               audio_input_per_mtok=20.0, audio_output_per_mtok=40.0, web_search_usd=0.01, request_usd=0.005)
    b = Billed(1000, 1000, cache_read=1000, cache_write=1000, cache_write_1h=1000, reasoning=300, audio_input=400,
               audio_output=200, web_searches=2)
    by_hand = (600 * 2 + 400 * 20 + 1000 * 0.2 + 1000 * 2.5 + 1000 * 4 + 500 * 8 + 300 * 12 + 200 * 40) * 1000 \
        + 2 * 10_000_000 + 5_000_000
    assert cost(e, b) == by_hand


def test_rounded_once_per_record_and_rates_never_rounded():
    tiny = priced(input_per_mtok=0.0004, output_per_mtok=0.0004)  # 0.4 nano-dollars a token
    assert cost(tiny, Billed(1, 1)) == 1  # 0.4 + 0.4 = 0.8, rounded once: 1, not 0 + 0
    assert cost_atto(rate_card(tiny), Billed(1, 0)) == 400_000_000  # 4e-10 USD a token, in atto-dollars exactly
    assert cost(priced(input_per_mtok=0.3), Billed(10**9)) == 300 * 10**9  # 0.3 is exact, not 0.2999...


def test_long_context_bands():
    e = priced(cache_read_per_mtok=0.5,
               long_context=LongContext(threshold_tokens=100_000, input_per_mtok=4.0, output_per_mtok=12.0),
               longer_contexts=[LongContext(threshold_tokens=200_000, input_per_mtok=6.0)])
    assert cost(e, Billed(100_000, 1000)) == 100_000 * 2000 + 1000 * 8000  # at a threshold: not above it
    assert cost(e, Billed(100_001, 1000)) == 100_001 * 4000 + 1000 * 12000
    # above 200k: its input rate; the output rate it leaves out is the band below's; the cache-read rate
    # none of them gives is the base's explicit one
    assert cost(e, Billed(150_000, 1000, cache_read=60_000)) == 150_000 * 6000 + 60_000 * 500 + 1000 * 12000
    no_read = priced(long_context=LongContext(threshold_tokens=100, input_per_mtok=4.0, output_per_mtok=12.0))
    assert cost(no_read, Billed(100, 0, cache_read=1)) == 100 * 4000 + 4000  # no explicit read: the band's input


def test_service_tier_rates_fall_back_to_the_standard_ones_for_the_same_prompt_size():
    e = priced(cache_read_per_mtok=0.5,
               long_context=LongContext(threshold_tokens=1000, input_per_mtok=4.0, output_per_mtok=16.0),
               priority_rates=ServiceTierRates(input_per_mtok=3.0, long_context=[
                   LongContext(threshold_tokens=1000, output_per_mtok=30.0)]))
    assert cost(e, Billed(500, 100, cache_read=500, service_tier="priority")) == 500 * 3000 + 500 * 500 + 100 * 8000
    # above 1k: the priority long output, the standard long input (the tier gives no long input)
    assert cost(e, Billed(2000, 100, service_tier="priority")) == 2000 * 4000 + 100 * 30_000
    assert cost(e, Billed(500, 100, service_tier="flex")) == cost(e, Billed(500, 100))  # no flex rates: standard


def test_off_peak_schedules():
    night = OffPeak(windows=[OffPeakWindow(hours_utc=["22:00-02:00", "bad"])], input_per_mtok=1.0)
    e = priced(off_peak=night, long_context=LongContext(threshold_tokens=10, input_per_mtok=4.0, output_per_mtok=8.0))
    for iso, off in (("2026-11-25T23:30:00+00:00", True), ("2026-11-26T01:59:59+00:00", True),
                     ("2026-11-26T02:00:00+00:00", False), ("2026-11-25T21:59:00+00:00", False)):
        # off-peak rates replace every other, long-context ones too; the output rate it leaves out stays
        assert cost(e, Billed(100, 10), at(iso)) == (100 * 1000 if off else 100 * 4000) + 10 * 8000, iso
    # weekdays are read on the schedule's calendar: Friday 20:00 UTC is Saturday in Shanghai
    weekend = OffPeak(windows=[OffPeakWindow(hours_utc=["00:00-00:00"], weekdays=[6, 7])],
                      weekday_timezone="Asia/Shanghai", input_per_mtok=1.0)
    friday_night = at("2026-11-27T20:00:00+00:00")
    assert cost(priced(off_peak=weekend), Billed(1000), friday_night) == 1000 * 1000
    assert cost(priced(off_peak=msgspec.structs.replace(weekend, weekday_timezone="UTC")), Billed(1000),
                friday_night) == 1000 * 2000


def test_web_search_and_request_fees():
    per_query = priced(web_search_usd=0.01)
    assert cost(per_query, Billed(web_searches=3)) == nanos("0.03")
    per_request = priced(web_search_usd=0.035, web_search_billing="per_request")
    assert cost(per_request, Billed(web_searches=3)) == cost(per_request, Billed(web_searches=1)) == nanos("0.035")
    assert cost(per_request, Billed(1000)) == 1000 * 2000  # no search, no fee
    assert cost(priced(request_usd=0.005), Billed()) == nanos("0.005")


def test_an_estimates_parts_never_exceed_their_whole():
    e = priced(audio_input_per_mtok=100.0, reasoning_per_mtok=100.0)
    assert cost(e, Billed(10, 10, reasoning=50, audio_input=50)) == 10 * 100_000 + 10 * 100_000


def test_a_callers_cost_wins_and_an_unpriced_model_is_never_free():
    book = PriceBook([BASE])
    given = price_call(book, UnpricedPolicy(), TierRules(), "m", None, None, Billed(1000, 1000), None, 123)
    assert given.cost_nanos == 123 and given.priced
    unpriced = price_call(book, UnpricedPolicy(), TierRules(), "nobody", None, None, Billed(1000, 1000,
                          cache_write_1h=1000, reasoning=500))
    assert (unpriced.cost_nanos, unpriced.priced) == (2000 * 15_000 + 1000 * 75_000, False)


# -- reading litellm's schema --------------------------------------------------------------------------------


def parse(key: str, **spec) -> PriceEntry:
    entry = litellm.parse_entry(key, spec, "litellm", TierRules())
    assert entry is not None
    return entry


def test_every_rate_key_of_the_file_is_read():
    e = parse("gemini/x", litellm_provider="gemini", input_cost_per_token=1e-6, output_cost_per_token=4e-6,
              cache_creation_input_token_cost_above_1hr=2e-6, output_cost_per_reasoning_token=5e-6,
              input_cost_per_audio_token=3e-6, output_cost_per_audio_token=8e-6,
              input_cost_per_token_above_200k_tokens=2e-6, output_cost_per_token_above_200k_tokens=8e-6,
              input_cost_per_token_above_500k_tokens=3e-6, cache_read_input_token_cost_above_200k_tokens_priority=9e-7,
              input_cost_per_token_priority=1.8e-6, output_cost_per_token_batches=2e-6,
              search_context_cost_per_query={"search_context_size_medium": 0.014}, web_search_billing_unit="per_query")
    assert (e.cache_write_1h_per_mtok, e.reasoning_per_mtok, e.audio_input_per_mtok, e.audio_output_per_mtok) == (
        2.0, 5.0, 3.0, 8.0)
    assert e.long_context == LongContext(threshold_tokens=200_000, input_per_mtok=2.0, output_per_mtok=8.0)
    assert e.longer_contexts == [LongContext(threshold_tokens=500_000, input_per_mtok=3.0)]
    assert e.priority_rates == ServiceTierRates(input_per_mtok=1.8, long_context=[
        LongContext(threshold_tokens=200_000, cache_read_per_mtok=0.9)])
    assert e.batch_rates == ServiceTierRates(output_per_mtok=2.0) and e.flex_rates is None
    assert (e.web_search_usd, e.web_search_billing) == (0.014, "per_query")


def test_provider_defaults_and_rules_the_file_leaves_out():
    # xAI bills the long-context rate from the threshold itself
    grok = parse("xai/g", litellm_provider="xai", input_cost_per_token=2e-7, output_cost_per_token=5e-7,
                 input_cost_per_token_above_128k_tokens=4e-7, output_cost_per_token_above_128k_tokens=1e-6)
    assert grok.long_context.threshold_tokens == 127_999 and grok.web_search_usd == 0.005
    gemini = parse("gemini/g", litellm_provider="gemini", input_cost_per_token=1e-7, output_cost_per_token=4e-7)
    assert (gemini.web_search_usd, gemini.web_search_billing) == (0.035, "per_request")
    fireworks = parse("fireworks_ai/f", litellm_provider="fireworks_ai", input_cost_per_token=9e-7,
                      output_cost_per_token=9e-7)
    assert fireworks.cache_read_per_mtok == 0.45
    assert parse("openai/o", litellm_provider="openai", input_cost_per_token=1e-6, output_cost_per_token=1e-6,
                 cache_read_input_token_cost=0.0).cache_read_per_mtok == 0.0  # an explicit 0 stays


def test_tiered_ranges_off_peak_and_aliases_are_read():
    data = {
        "q": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
            {"range": [32000, 128000], "input_cost_per_token": 2e-7, "output_cost_per_token": 2e-6},
            {"range": [0, 32000], "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-6,
             "cache_read_input_token_cost": 2e-8}]},
        "d": {"litellm_provider": "deepseek", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
              "off_peak_pricing": {"input_cost_per_token": 5e-7, "hours_utc": "16:30-00:30",
                                   "windows": [{"hours_utc": ["00:00-00:00"], "weekdays": ["sat", 7]}],
                                   "weekday_timezone": "Asia/Shanghai"}},
        "q-latest": {"alias_of": "q"},
        "gone": {"alias_of": "nothing"},
    }
    entries, refused = litellm.parse(data, "litellm", TierRules())
    by = {e.model: e for e in entries}
    q = by["q"]
    assert (q.input_per_mtok, q.cache_read_per_mtok) == (0.1, 0.02)
    # a range without the cache rate another gives bills its own input rate
    assert q.long_context == LongContext(threshold_tokens=32000, input_per_mtok=0.2, output_per_mtok=2.0,
                                         cache_read_per_mtok=0.2)
    assert by["d"].off_peak == OffPeak(input_per_mtok=0.5, weekday_timezone="Asia/Shanghai", windows=[
        OffPeakWindow(hours_utc=["16:30-00:30"]), OffPeakWindow(hours_utc=["00:00-00:00"], weekdays=[6, 7])])
    assert by["q-latest"].alias_of == "q" and rate_card(by["q-latest"]) == rate_card(q)
    assert refused == ["gone: alias_of 'nothing' names no priced model"]


def test_the_verification_judges_every_rate_of_every_rate_set():
    e = priced(priority_rates=ServiceTierRates(long_context=[LongContext(threshold_tokens=1000, input_per_mtok=-1.0)]))
    assert "priority_rates.long_context[0].input_per_mtok is negative" in rules.insane(e, rules.Rules())
    rich = priced(longer_contexts=[LongContext(threshold_tokens=9, input_per_mtok=1.0)],
                  off_peak=OffPeak(windows=[], output_per_mtok=1.0), web_search_usd=0.01)
    assert rules.terms(rich).keys() == rules.terms(BASE).keys()  # any two entries have the same terms
    assert rules.changed(rules.terms(BASE), rules.terms(rich)) == {
        "longer_contexts[0].input_per_mtok", "longer_contexts[0].threshold_tokens", "off_peak.output_per_mtok",
        "web_search_usd"}


def test_the_corrections_file_is_one_fact_a_row_with_its_source(tmp_path):
    rows = corrections.load()
    assert rows and all(r.source_url.startswith("https://") and r.fact for fixes in rows.values() for r in fixes)
    bad = tmp_path / "c.toml"
    bad.write_text('[[correction]]\nmodel = "m"\nfact = "f"\nsource_url = "https://x"\nset.model = "other"\n')
    with pytest.raises(ValueError, match="must set price terms"):
        corrections.load(bad)
    bad.write_text('[[correction]]\nmodel = "m"\nfact = "f"\nsource_url = "https://x"\nset.input_per_mtok = -1\n')
    with pytest.raises(ValueError, match="correction of m"):
        corrections.load(bad)
