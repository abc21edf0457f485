"""LiteLLM's `model_prices_and_context_window.json`, normalised to PriceEntry.

The same parser serves the file fetched over HTTP (`litellm`) and the copy
bundled inside the installed package (`litellm_bundled`).

Every per-token rate of the file is a key `<kind>[_above_<N>k_tokens][_<tier>]`: the kind of token, the
long-context threshold above which it applies, the service tier (`_priority`, `_flex`, `_batches`, which is
our `batch`). `tiered_pricing` ranges are long-context thresholds too; `off_peak_pricing` holds the rates of
its windows; `search_context_cost_per_query` the web-search fee; `alias_of` names the entry a key is priced as.
Where a provider publishes a default the file leaves out, the entry carries it (`_provider_defaults`).
"""

import datetime as dt
import math
import re
from typing import Any

import msgspec

from budgetd.model import (
    LongContext, OffPeak, OffPeakWindow, PriceEntry, ServiceTierRates, WebSearchBilling,
)
from budgetd.pricing import TierRules, per_token_to_per_mtok

NAME = "litellm"
URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"

# the file's name of each kind of token rate -> ours
_KINDS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cache_read_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_per_mtok",
    "output_cost_per_reasoning_token": "reasoning_per_mtok",
    "input_cost_per_audio_token": "audio_input_per_mtok",
    "output_cost_per_audio_token": "audio_output_per_mtok",
}
_TIERS = {"priority": "priority_rates", "flex": "flex_rates", "batches": "batch_rates"}
_RATE_KEY = re.compile(
    rf"^(?P<kind>{'|'.join(sorted(_KINDS, key=len, reverse=True))})"
    rf"(?:_above_(?P<above>\d+)(?P<k>k?)_tokens)?(?:_(?P<tier>{'|'.join(_TIERS)}))?$"
)
# tiered_pricing and off_peak_pricing blocks name the kinds they price the same way
_BLOCK_KINDS = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                "cache_creation_input_token_cost", "output_cost_per_reasoning_token")
_WEEKDAYS = {"mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3, "thu": 4,
             "thur": 4, "thurs": 4, "thursday": 4, "fri": 5, "friday": 5, "sat": 6, "saturday": 6, "sun": 7,
             "sunday": 7}
# Providers' published defaults for what the file leaves out.
_FIREWORKS_CACHED_INPUT = 0.5  # Fireworks bills cached input at 50% of input unless a model says otherwise
_GEMINI_GROUNDING_USD = 0.035  # Google: $35 per 1,000 grounded prompts
_XAI_WEB_SEARCH_USD = 0.005  # xAI: $5 per 1,000 web-search calls
_INCLUSIVE_THRESHOLDS = frozenset({"xai"})  # bill the long-context rate from the threshold itself
_CAPABILITIES = {
    "supports_vision": "vision",
    "supports_function_calling": "tools",
    "supports_response_schema": "json",
    "supports_reasoning": "reasoning",
    "supports_audio_input": "audio",
    "supports_pdf_input": "pdf",
    "supports_prompt_caching": "caching",
    "supports_web_search": "web_search",
    "supports_computer_use": "computer_use",
    "supports_video_input": "video",
}


def _per_token(spec: dict[str, Any], key: str) -> float | None:
    """A per-token price in USD, or None when absent. Garbage raises ValueError."""
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number: {value!r}")
    try:
        rate = float(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(f"{key} is out of range") from None
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"{key} is negative or not finite: {value!r}")
    return rate


def _rate(spec: dict[str, Any], key: str) -> float | None:
    """A per-token rate as USD per Mtok, or None when absent."""
    rate = _per_token(spec, key)
    return None if rate is None else per_token_to_per_mtok(rate)


def _count(value: Any) -> int | None:
    """A token limit within the schema's bound (10**9), else None: a limit never refuses a price."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10**9:
        return None
    return int(value)


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _block(block: dict[str, Any], where: str) -> dict[str, float]:
    """The rates a tiered_pricing range or an off_peak_pricing block gives, by our field names."""
    if not isinstance(block, dict):
        raise ValueError(f"{where} is not an object")
    rates = {}
    for key in _BLOCK_KINDS:
        rate = _rate(block, key)
        if rate is not None:
            rates[_KINDS[key]] = rate
    return rates


def _rate_sets(spec: dict[str, Any]) -> dict[tuple[str | None, int], dict[str, float]]:
    """Every per-token rate of a model by (service tier field or None for standard, threshold or 0)."""
    sets: dict[tuple[str | None, int], dict[str, float]] = {}
    for key in spec:
        m = _RATE_KEY.match(key)
        if m is None:
            continue
        rate = _rate(spec, key)
        if rate is None:
            continue
        above = 0 if m["above"] is None else int(m["above"]) * (1000 if m["k"] else 1)
        tier = None if m["tier"] is None else _TIERS[m["tier"]]
        sets.setdefault((tier, above), {})[_KINDS[m["kind"]]] = rate
    return sets


def _tiered(spec: dict[str, Any], flat_output: float | None) -> dict[tuple[None, int], dict[str, float]]:
    """`tiered_pricing`: the whole request at the rates of the range its prompt falls in, as thresholds at the
    ranges' starts. A range without an output rate bills the model's own; one without a cache or reasoning rate
    that another range gives bills its own input (cache) or output (reasoning) rate (litellm's rules)."""
    ranges = spec.get("tiered_pricing")
    starts = []
    for i, tier in enumerate(ranges if isinstance(ranges, list) else []):
        bounds = tier.get("range") if isinstance(tier, dict) else None
        rates = _block(tier, f"tiered_pricing[{i}]")
        # a range of something else than prompt tokens (search results ...) or without a token rate is no tier
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
                and "input_per_mtok" in rates):
            continue
        if "output_per_mtok" not in rates and flat_output is not None:
            rates["output_per_mtok"] = flat_output
        starts.append((int(bounds[0]), rates))
    if not starts:
        return {}
    starts.sort(key=lambda s: s[0])
    given = {kind for _, rates in starts for kind in rates}
    for _, rates in starts:
        for kind, stand_in in (("cache_read_per_mtok", "input_per_mtok"), ("cache_write_per_mtok", "input_per_mtok"),
                               ("reasoning_per_mtok", "output_per_mtok")):
            if kind in given and kind not in rates and stand_in in rates:
                rates[kind] = rates[stand_in]
    return {(None, 0 if i == 0 else start): rates for i, (start, rates) in enumerate(starts)}


def _long_contexts(sets: dict[tuple[str | None, int], dict[str, float]], tier: str | None,
                   inclusive: bool) -> list[LongContext]:
    return [LongContext(threshold_tokens=above - 1 if inclusive else above, **rates)
            for (t, above), rates in sorted(sets.items(), key=lambda s: s[0][1]) if t == tier and above]


def _window(rule: Any, where: str) -> OffPeakWindow:
    if not isinstance(rule, dict):
        raise ValueError(f"{where} is not an object")
    hours = rule.get("hours_utc")
    hours = [hours] if isinstance(hours, str) else hours
    if not isinstance(hours, list) or not all(isinstance(h, str) for h in hours):
        raise ValueError(f"{where}.hours_utc is not a window or a list of them")
    days = rule.get("weekdays")
    if days is None:
        return OffPeakWindow(hours_utc=hours)
    if not isinstance(days, list):
        raise ValueError(f"{where}.weekdays is not a list")
    weekdays = [d if isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7
                else _WEEKDAYS.get(d.strip().lower()) if isinstance(d, str) else None for d in days]
    return OffPeakWindow(hours_utc=hours, weekdays=[d for d in weekdays if d is not None])


def _off_peak(spec: dict[str, Any]) -> OffPeak | None:
    """`off_peak_pricing`: rates and the windows they apply in (`hours_utc` every day, `windows` on weekdays
    read on `weekday_timezone`'s calendar)."""
    block = spec.get("off_peak_pricing")
    if block is None:
        return None
    rates = _block(block, "off_peak_pricing")
    windows = []
    if block.get("hours_utc") is not None:
        windows.append(_window({"hours_utc": block["hours_utc"]}, "off_peak_pricing"))
    rules = block.get("windows") or []
    if not isinstance(rules, list):
        raise ValueError("off_peak_pricing.windows is not a list")
    windows += [_window(rule, f"off_peak_pricing.windows[{i}]") for i, rule in enumerate(rules)]
    zone = block.get("weekday_timezone")
    return OffPeak(windows=windows, weekday_timezone=zone.strip() if isinstance(zone, str) and zone.strip() else "UTC",
                   **rates)


def _web_search(key: str, spec: dict[str, Any], provider: str | None) -> tuple[float | None, WebSearchBilling]:
    """The web-search fee (USD per query, at the default search context size, medium) and how it is counted,
    as each provider bills it."""
    table = spec.get("search_context_cost_per_query")
    sizes = {size: _per_token(table, f"search_context_size_{size}") for size in ("low", "medium", "high")} \
        if isinstance(table, dict) else {}
    provider = provider or ""
    if provider == "perplexity":  # Perplexity's default search context size is low
        return sizes.get("low"), "per_query"
    if provider == "xai":
        fee = next((fee for size in ("medium", "low", "high") if (fee := sizes.get(size))), _XAI_WEB_SEARCH_USD)
        return fee, "per_query"
    if (provider == "gemini" or provider.startswith("vertex_ai")) and "claude" not in key.lower():
        fee = sizes["medium"] if sizes.get("medium") is not None else _GEMINI_GROUNDING_USD
        return fee, "per_query" if spec.get("web_search_billing_unit") == "per_query" else "per_request"
    return sizes.get("medium"), "per_query"


def _provider_defaults(entry: PriceEntry, provider: str | None) -> PriceEntry:
    if provider != "fireworks_ai":
        return entry
    changes: dict[str, Any] = {}
    if entry.cache_read_per_mtok is None:
        changes["cache_read_per_mtok"] = entry.input_per_mtok * _FIREWORKS_CACHED_INPUT
    off_peak = entry.off_peak
    if off_peak is not None and off_peak.cache_read_per_mtok is None and off_peak.input_per_mtok is not None:
        changes["off_peak"] = msgspec.structs.replace(
            off_peak, cache_read_per_mtok=off_peak.input_per_mtok * _FIREWORKS_CACHED_INPUT)
    return msgspec.structs.replace(entry, **changes) if changes else entry


def parse_entry(key: str, spec: dict[str, Any], source: str, tiers: TierRules) -> PriceEntry | None:
    """One model of the file, or None when it has no per-token price (images, seconds ...)."""
    sets = _rate_sets(spec)
    flat = sets.get((None, 0), {})
    tiered = _tiered(spec, flat.get("output_per_mtok"))
    if tiered:  # its ranges win over flat rates beside them
        sets = {k: v for k, v in sets.items() if k[0] is not None} | tiered
        flat = tiered[(None, 0)]
    if "input_per_mtok" not in flat and "output_per_mtok" not in flat:
        return None
    inp = flat.get("input_per_mtok") or 0.0
    out = flat.get("output_per_mtok") or 0.0
    provider = spec.get("litellm_provider")
    provider = provider if isinstance(provider, str) and provider else None
    inclusive = provider in _INCLUSIVE_THRESHOLDS
    long = _long_contexts(sets, None, inclusive)
    mode = spec.get("mode") if isinstance(spec.get("mode"), str) else "chat"
    capabilities = sorted({cap for flag, cap in _CAPABILITIES.items() if spec.get(flag) is True})
    web_search_usd, web_search_billing = _web_search(key, spec, provider)
    entry = PriceEntry(
        model=key,
        provider=provider,
        **(flat | {"input_per_mtok": inp, "output_per_mtok": out}),
        long_context=long[0] if long else None,
        longer_contexts=long[1:],
        **{field: ServiceTierRates(**sets.get((field, 0), {}), long_context=_long_contexts(sets, field, inclusive))
           for field in _TIERS.values() if any(t == field for t, _ in sets)},
        off_peak=_off_peak(spec),
        web_search_usd=web_search_usd,
        web_search_billing=web_search_billing,
        request_usd=_per_token(spec, "input_cost_per_request"),
        max_input_tokens=_count(spec.get("max_input_tokens")),
        max_output_tokens=_count(spec.get("max_output_tokens") or spec.get("max_tokens")),
        mode=mode,
        capabilities=capabilities,
        tier=tiers.tier_of(key, provider, inp, out),  # type: ignore[arg-type]
        source=source,
        deprecated_on=_date(spec.get("deprecation_date")),
    )
    return _provider_defaults(entry, provider)


def parse(data: Any, source: str, tiers: TierRules) -> tuple[list[PriceEntry], list[str]]:
    """All priced models of the file, and a note for each model that was refused. A key whose `alias_of` names
    a priced model is that model's price under another name; one naming nothing priced (or another alias) is
    refused, as litellm drops it."""
    if not isinstance(data, dict):
        raise ValueError("a LiteLLM price file is a JSON object of model -> spec")
    entries: dict[str, PriceEntry] = {}
    aliases: dict[str, str] = {}
    refused: list[str] = []
    for key, spec in data.items():
        if key == "sample_spec" or not isinstance(spec, dict) or not 0 < len(key) <= 128:
            continue
        if isinstance(spec.get("alias_of"), str):
            aliases[key] = spec["alias_of"]
            continue
        try:
            entry = parse_entry(key, spec, source, tiers)
        except ValueError as exc:
            refused.append(f"{key}: {exc}")
            continue
        if entry is not None:
            entries[key] = entry
    for key, target in aliases.items():
        if target in entries:
            entries[key] = msgspec.structs.replace(entries[target], model=key, alias_of=target)
        elif target not in aliases and isinstance(data.get(target), dict):
            continue  # an alias of a model with no per-token price is no more priced than its target
        else:
            refused.append(f"{key}: alias_of {target!r} names no priced model")
    return list(entries.values()), refused


def parse_feed(data: Any, tiers: TierRules) -> tuple[list[PriceEntry], list[str]]:
    """The file as fetched from LiteLLM's URL."""
    return parse(data, NAME, tiers)
