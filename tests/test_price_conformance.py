"""Conformance over the whole book: for every chat model of the installed litellm's bundled price file and
usages that exercise every rate kind, budgetd's cost equals litellm's own calculator to 1e-9 USD, or differs
for a reason in `REASONS`, each of which must prove itself: with the entry read the way the reason says
litellm reads it, budgetd's figure is litellm's. A difference no reason explains fails, and so does a reason
that explains nothing, so a litellm upgrade that changes the schema or its calculator is caught."""

import datetime as dt
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from actors.sources import corrections, litellm_bundled
from budgetd.model import LongContext, PriceEntry, ServiceTierRates
from budgetd.pricing import Billed, TierRules, cost_nanos, per_token_to_per_mtok, rate_card

TOLERANCE_USD = 1e-9
CHAT_MODES = ("chat", "responses", "completion")


def _us(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1_000_000)


# A Wednesday at 02:00 UTC is peak in every off-peak schedule of the file; noon that day and a Saturday are not.
PEAK = _us("2026-11-25T02:00:00+00:00")
OFF_PEAK = (_us("2026-11-25T12:00:00+00:00"), _us("2026-11-28T02:00:00+00:00"))

CORRECTIONS = corrections.load()
PLAIN = Billed(1234, 567)
CACHE = Billed(1000, 200, cache_read=3000, cache_write=2000, cache_write_1h=1500)
PARTS = Billed(2000, 900, reasoning=400, audio_input=1500, audio_output=300)
SEARCH = Billed(100, 10, web_searches=3)
_THRESHOLD_KEY = re.compile(r"_above_(\d+)(k?)_tokens")
_TIER_SUFFIXES = {"_priority": "priority", "_flex": "flex", "_batches": "batch"}


@dataclass(frozen=True)
class Case:
    key: str
    provider: str
    label: str
    billed: Billed
    at_us: int = PEAK

    def as_json(self) -> list:
        b = self.billed
        return [self.key, self.provider, b.service_tier, self.at_us, b.input, b.output, b.cache_read, b.cache_write,
                b.cache_write_1h, b.reasoning, b.audio_input, b.audio_output, b.web_searches]


def _prompt(size: int, tier: str = "standard") -> Billed:
    """A request whose prompt is `size` tokens, 3,000 of them read from the cache."""
    return Billed(size - 3000, 500, cache_read=3000, service_tier=tier)


def cases_of(key: str, spec: dict[str, Any], entry: PriceEntry) -> list[Case]:
    """The usages that exercise every rate the model's spec has (and budgetd's entry: corrections add some), and
    the defaults of those it has not."""
    provider = spec.get("litellm_provider") or ""
    found = [("plain", PLAIN), ("cache", CACHE), ("parts", PARTS), ("search", SEARCH)]
    thresholds = {int(m[1]) * (1000 if m[2] else 1) for k in spec if (m := _THRESHOLD_KEY.search(k))}
    thresholds |= {lc.threshold_tokens for lc in (entry.long_context, *entry.longer_contexts) if lc is not None}
    for t in sorted(thresholds):
        found += [(f"prompt {size:,}", _prompt(size)) for size in (t - 1, t, t + 1)]
    ranges = [tier["range"] for tier in spec.get("tiered_pricing") or () if isinstance(tier.get("range"), list)]
    for start, end in sorted(ranges):
        found += [(f"prompt {size:,}", _prompt(size)) for size in (int(start), int(start) + 1) if size > 3000]
    if ranges:
        last = int(max(end for _, end in ranges)) + 1
        found.append((f"prompt {last:,}", _prompt(last)))
    if any(k.endswith(suffix) for k in spec for suffix in _TIER_SUFFIXES):
        for tier in _TIER_SUFFIXES.values():
            found.append((f"{tier} cache", CACHE._replace(service_tier=tier)))
            found += [(f"{tier} prompt {t + 1:,}", _prompt(t + 1, tier)) for t in sorted(thresholds)]
    cases = [Case(key, provider, label, billed) for label, billed in found]
    if spec.get("off_peak_pricing"):
        cases += [Case(key, provider, f"{label} off-peak {i}", billed, at) for i, at in enumerate(OFF_PEAK)
                  for label, billed in (("cache", CACHE), ("parts", PARTS))]
    return cases


# litellm's calculator for one case: cost_per_token (the batch calculator for `batch`), plus the built-in tools'
# web-search fee; at the case's instant (off-peak windows).
LITELLM = r"""
import datetime as dt, json, os, sys
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"
import litellm
from litellm._internal_context import pinned_billing_time
from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import StandardBuiltInToolCostTracking
from litellm.types.utils import (
    CacheCreationTokenDetails, CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper, ServerToolUse, Usage)

def usage(inp, out, cr, cw, cw1h, reasoning, audio_in, audio_out, searches):
    prompt = inp + cr + cw + cw1h
    u = Usage(
        prompt_tokens=prompt, completion_tokens=out, total_tokens=prompt + out,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            text_tokens=inp - audio_in, audio_tokens=audio_in, cached_tokens=cr, cache_creation_tokens=cw + cw1h,
            cache_creation_token_details=CacheCreationTokenDetails(
                ephemeral_5m_input_tokens=cw, ephemeral_1h_input_tokens=cw1h),
            web_search_requests=searches or None),
        completion_tokens_details=CompletionTokensDetailsWrapper(
            reasoning_tokens=reasoning, audio_tokens=audio_out, text_tokens=out - reasoning - audio_out),
        server_tool_use=ServerToolUse(web_search_requests=searches) if searches else None)
    if searches:
        u.server_side_tool_usage_details = {"web_search_calls": searches}  # how xAI reports them
    return u

out, keys = [], {}
for key, provider, tier, at_us, *counts in json.load(sys.stdin):
    u = usage(*counts)
    try:
        with pinned_billing_time(dt.datetime.fromtimestamp(at_us / 1e6, dt.timezone.utc)):
            kw = {"call_type": "retrieve_batch"} if tier == "batch" else {
                "service_tier": None if tier == "standard" else tier}
            cost = sum(litellm.cost_per_token(model=key, custom_llm_provider=provider, usage_object=u, **kw))
            if counts[-1]:
                cost += StandardBuiltInToolCostTracking.get_cost_for_built_in_tools(
                    model=key, response_object=None, usage=u, custom_llm_provider=provider)
        out.append(cost)
    except Exception as exc:
        out.append(f"{type(exc).__name__}: {exc}")
    if key not in keys:  # the entry litellm prices this key from: a repeated provider prefix is dropped first
        priced = key
        while priced.startswith(f"{provider}/{provider}/"):
            priced = priced[len(provider) + 1:]
        keys[key] = litellm.get_model_info(model=priced, custom_llm_provider=provider)["key"]
print(json.dumps({"costs": out, "keys": keys}))
"""


def litellm_costs(cases: list[Case]) -> tuple[list[float | str], dict[str, str]]:
    """litellm's figure for every case, and the entry it priced each key from; all in one subprocess: importing
    litellm takes seconds."""
    result = subprocess.run([sys.executable, "-c", LITELLM], input=json.dumps([c.as_json() for c in cases]),
                            capture_output=True, text=True, check=True, timeout=600)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return answer["costs"], answer["keys"]


# -- the reasons budgetd and litellm may differ ---------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    spec: dict  # the model's spec in the file
    litellm_key: str  # the entry litellm's lookup prices the key from
    book: dict[str, PriceEntry]  # budgetd's entries, corrections applied
    uncorrected: PriceEntry  # the key's entry as the bundled file gives it


@dataclass(frozen=True)
class Reason:
    why: str
    applies: Callable[[Case, Context], bool]
    litellm_reads: Callable[[PriceEntry, Context], PriceEntry]  # the entry as litellm's calculator prices it


def _rate(spec: dict, key: str) -> float | None:
    value = spec.get(key)
    return None if value is None else per_token_to_per_mtok(value)


def _thresholds(spec: dict, key: str) -> dict[int, float]:
    """The rates of `key` above each threshold (`<prefix>_above_<N>k_tokens<suffix>` for key = prefix+suffix)."""
    prefix, suffix = (key[: -len("_batches")], "_batches") if key.endswith("_batches") else (key, "")
    found = {}
    for name in spec:
        m = re.fullmatch(re.escape(prefix) + r"_above_(\d+)(k?)_tokens" + re.escape(suffix), name)
        if m and spec[name] is not None:
            found[int(m[1]) * (1000 if m[2] else 1)] = _rate(spec, name)
    return found


def _crossed(spec: dict, key: str, start: int, inclusive: bool) -> float | None:
    """`key`'s rate for prompts above `start`: its highest threshold they pass, else its flat rate."""
    passed = [t for t in _thresholds(spec, key) if t <= start + inclusive]
    return _thresholds(spec, key)[max(passed)] if passed else _rate(spec, key)


def _starts(entry: PriceEntry) -> list[int]:
    card = rate_card(entry)
    return [0, *(card.table.thresholds if card.table is not None else ())]


def litellm_batch(entry: PriceEntry, ctx: Context) -> PriceEntry:
    """litellm's batch calculator (`batch_cost_calculator`) as rates: each kind's `_batches` rate at the batch
    thresholds the file gives for that kind; without a batch input rate, half the flat standard rates (a cache
    read without a rate is then free); without a batch output rate, half the standard one; cached and written
    tokens without a batch (or, for reads, standard) rate billed as input; reasoning and audio output at the
    output rate."""
    spec = ctx.spec
    inclusive = spec.get("litellm_provider") == "xai"
    starts = _starts(entry)
    bands = []
    for start in starts:
        def batch(kind: str) -> float | None:
            return _crossed(spec, f"{kind}_batches", start, inclusive)
        output = batch("output_cost_per_token")
        output = output if output is not None else _rate(spec, "output_cost_per_token") / 2
        inp = batch("input_cost_per_token")
        if inp is None:  # half the flat standard rates
            inp = _rate(spec, "input_cost_per_token") / 2
            read = (_rate(spec, "cache_read_input_token_cost") or 0.0) / 2
            write = _rate(spec, "cache_creation_input_token_cost")
            write = write / 2 if write is not None else inp
            rates = dict(cache_read_per_mtok=read, cache_write_per_mtok=write, cache_write_1h_per_mtok=write,
                         audio_input_per_mtok=inp)
        else:
            read = batch("cache_read_input_token_cost")
            read = read if read is not None else _crossed(spec, "cache_read_input_token_cost", start, inclusive)
            write = batch("cache_creation_input_token_cost")
            write_1h = batch("cache_creation_input_token_cost_above_1hr")
            write = write if write is not None else inp
            audio = _crossed(spec, "input_cost_per_audio_token_batches", start, inclusive)
            rates = dict(cache_read_per_mtok=inp if read is None else read, cache_write_per_mtok=write,
                         cache_write_1h_per_mtok=write if write_1h is None else write_1h,
                         audio_input_per_mtok=inp if audio is None else audio)
        bands.append(dict(rates, input_per_mtok=inp, output_per_mtok=output, reasoning_per_mtok=output,
                          audio_output_per_mtok=output))
    batch_rates = ServiceTierRates(**bands[0], long_context=[
        LongContext(threshold_tokens=start, **rates) for start, rates in zip(starts[1:], bands[1:])])
    return msgspec.structs.replace(entry, batch_rates=batch_rates)


def litellm_perplexity(entry: PriceEntry, ctx: Context) -> PriceEntry:
    """litellm's Perplexity calculator: flat input, output, cache-read and reasoning rates; cache writes at the
    input rate; no long-context or service-tier rates."""
    return msgspec.structs.replace(entry, long_context=None, longer_contexts=[], priority_rates=None, flex_rates=None,
                                   batch_rates=None, cache_write_per_mtok=entry.input_per_mtok,
                                   cache_write_1h_per_mtok=entry.input_per_mtok, audio_input_per_mtok=None,
                                   audio_output_per_mtok=None)


# Providers whose litellm calculator takes no service tier: every call is billed at standard rates.
_NO_SERVICE_TIER = ("fireworks_ai", "deepseek", "tencent", "xai", "dashscope", "qwencloud", "qwen_ai_platform",
                    "perplexity", "lemonade")

REASONS: list[Reason] = [
    Reason("litellm prices the key from another entry of the file (`<provider>/<key>`, or the key without its "
           "repeated provider prefix); budgetd from the key's own entry",
           lambda case, ctx: ctx.litellm_key != case.key,
           lambda entry, ctx: ctx.book[ctx.litellm_key]),
    Reason("a correction (actors/sources/corrections.toml): the provider's published rule, which the file "
           "contradicts",
           lambda case, ctx: case.key in CORRECTIONS,
           lambda entry, ctx: ctx.uncorrected),
    Reason("litellm's batch calculator halves the standard rates where the file has no batch rate, ignores the "
           "long-context thresholds it gives no batch rate for, bills 1-hour writes at the batch write rate; budgetd "
           "falls back rate by rate to the standard rate for the same prompt size (a service tier's default)",
           lambda case, ctx: case.billed.service_tier == "batch",
           litellm_batch),
    Reason("litellm's calculator for this provider takes no service tier (priority and flex calls at standard "
           "rates); budgetd bills the file's priority and flex rates",
           lambda case, ctx: case.provider in _NO_SERVICE_TIER and case.billed.service_tier in ("priority", "flex"),
           lambda entry, ctx: msgspec.structs.replace(entry, priority_rates=None, flex_rates=None)),
    Reason("litellm's Perplexity calculator has no long-context rates and bills cache writes at the input rate; "
           "budgetd bills the file's long-context and cache-write rates",
           lambda case, ctx: case.provider == "perplexity",
           litellm_perplexity),
    Reason("litellm's calculator drops the per-request fee (`input_cost_per_request`); budgetd bills it",
           lambda case, ctx: ctx.spec.get("input_cost_per_request") is not None,
           lambda entry, ctx: msgspec.structs.replace(entry, request_usd=None)),
]


# -- the run ----------------------------------------------------------------------------------------------------


def chat_models(data: dict) -> dict[str, dict]:
    """Every chat model of the file, by key: an alias as the spec it names."""
    specs = {k: data.get(v["alias_of"], {}) if isinstance(v.get("alias_of"), str) else v
             for k, v in data.items() if k != "sample_spec" and isinstance(v, dict)}
    return {k: v for k, v in specs.items() if v.get("mode") in CHAT_MODES}


def priced_per_token(spec: dict) -> bool:
    """The file gives the model a standard per-token price (else budgetd charges its unpriced fallback and marks
    the record unpriced, where litellm bills nothing, or by the second or the character)."""
    ranges = [t for t in spec.get("tiered_pricing") or () if isinstance(t, dict) and isinstance(t.get("range"), list)]
    return (spec.get("input_cost_per_token") is not None or spec.get("output_cost_per_token") is not None
            or any(t.get("input_cost_per_token") is not None for t in ranges))


def ours(entry: PriceEntry, case: Case) -> float:
    return cost_nanos(rate_card(entry), case.billed, case.at_us) / 1e9


@dataclass
class Conformance:
    agreed: int = 0
    explained: Counter = field(default_factory=Counter)  # reason -> differences it explains
    unexplained: list = field(default_factory=list)  # (case, budgetd, litellm)
    unpriced: set = field(default_factory=set)  # models the file gives no per-token price

    @property
    def total(self) -> int:
        return self.agreed + sum(self.explained.values()) + len(self.unexplained)


def conformance(data: dict) -> Conformance:
    entries, _ = litellm_bundled.litellm.parse(data, litellm_bundled.NAME, TierRules())
    uncorrected = {e.model: e for e in entries}
    book = {k: corrections.correct(e, CORRECTIONS[k]) if k in CORRECTIONS else e for k, e in uncorrected.items()}
    specs = chat_models(data)
    result = Conformance()
    cases = []
    for key, spec in specs.items():
        if key in book:
            cases += cases_of(key, spec, book[key])
        else:
            assert not priced_per_token(spec), f"{key} has a per-token price budgetd does not read"
            result.unpriced.add(key)
    theirs, litellm_keys = litellm_costs(cases)
    for case, their in zip(cases, theirs):
        entry = book[case.key]
        mine = ours(entry, case)
        if isinstance(their, float) and abs(mine - their) <= TOLERANCE_USD:
            result.agreed += 1
            continue
        ctx = Context(specs[case.key], litellm_keys[case.key], book, uncorrected[case.key])
        reasons = [r for r in REASONS if r.applies(case, ctx)]
        if reasons and isinstance(their, float) and _agrees(entry, case, ctx, reasons, their):
            # credited to the reasons it takes: those without which the figures differ (else all of them)
            needed = [r for r in reasons if not _agrees(entry, case, ctx, [o for o in reasons if o is not r], their)]
            result.explained.update(r.why for r in needed or reasons)
        else:
            result.unexplained.append((case, mine, their))
    return result


def _agrees(entry: PriceEntry, case: Case, ctx: Context, reasons: list[Reason], their: float) -> bool:
    """budgetd's figure with the entry read the way `reasons` say litellm reads it is litellm's."""
    for reason in reasons:
        entry = reason.litellm_reads(entry, ctx)
    return abs(ours(entry, case) - their) <= TOLERANCE_USD


def test_every_price_of_the_bundled_file_agrees_with_litellm_or_differs_for_a_stated_reason():
    data = msgspec.json.decode(litellm_bundled.bundled_path().read_bytes())
    result = conformance(data)
    print(f"\nprice conformance: {result.agreed:,} of {result.total:,} costs over {len(chat_models(data)):,} chat "
          f"models agree with litellm to {TOLERANCE_USD} USD; {sum(result.explained.values()):,} differ for a "
          f"stated reason, {len(result.unexplained):,} unexplained; {len(result.unpriced):,} models have no "
          "per-token price in the file (budgetd's unpriced fallback)")
    for why, count in result.explained.most_common():
        print(f"  {count:6,}  {why}")
    assert not result.unexplained, "\n".join(f"{c.key} [{c.provider}] {c.label}: budgetd {m!r}, litellm {t!r}"
                                             for c, m, t in result.unexplained[:40])
    stale = [r.why for r in REASONS if r.why not in result.explained]
    assert not stale, f"reasons that explain no difference any more (did litellm change?): {stale}"
