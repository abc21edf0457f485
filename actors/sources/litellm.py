"""LiteLLM's `model_prices_and_context_window.json`, normalised to PriceEntry.

The same parser serves the file fetched over HTTP (`litellm`) and the copy
bundled inside the installed package (`litellm_bundled`).
"""

import datetime as dt
import math
import re
from typing import Any

from budgetd.model import LongContext, PriceEntry
from budgetd.pricing import TierRules, per_token_to_per_mtok

NAME = "litellm"
URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"

_LONG_INPUT = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")
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


def _rate(spec: dict[str, Any], key: str) -> float | None:
    """A per-token rate, or None when absent. Garbage raises ValueError."""
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
    return per_token_to_per_mtok(rate)


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


def _long_context(spec: dict[str, Any], output: float) -> LongContext | None:
    thresholds = sorted(int(m.group(1)) for key in spec if (m := _LONG_INPUT.match(key)))
    if not thresholds:
        return None
    k = thresholds[0]
    suffix = f"_above_{k}k_tokens"
    long_input = _rate(spec, "input_cost_per_token" + suffix)
    long_output = _rate(spec, "output_cost_per_token" + suffix)
    if long_input is None:
        return None
    return LongContext(
        threshold_tokens=k * 1000,
        input_per_mtok=long_input,
        output_per_mtok=output if long_output is None else long_output,
        cache_read_per_mtok=_rate(spec, "cache_read_input_token_cost" + suffix),
        cache_write_per_mtok=_rate(spec, "cache_creation_input_token_cost" + suffix),
    )


def parse_entry(key: str, spec: dict[str, Any], source: str, tiers: TierRules) -> PriceEntry | None:
    """One model of the file, or None when it has no per-token price (images, seconds ...)."""
    inp = _rate(spec, "input_cost_per_token")
    out = _rate(spec, "output_cost_per_token")
    if inp is None and out is None:
        return None
    inp = inp or 0.0
    out = out or 0.0
    provider = spec.get("litellm_provider")
    provider = provider if isinstance(provider, str) and provider else None
    mode = spec.get("mode") if isinstance(spec.get("mode"), str) else "chat"
    capabilities = sorted({cap for flag, cap in _CAPABILITIES.items() if spec.get(flag) is True})
    return PriceEntry(
        model=key,
        provider=provider,
        input_per_mtok=inp,
        output_per_mtok=out,
        cache_read_per_mtok=_rate(spec, "cache_read_input_token_cost"),
        cache_write_per_mtok=_rate(spec, "cache_creation_input_token_cost"),
        long_context=_long_context(spec, out),
        max_input_tokens=_count(spec.get("max_input_tokens")),
        max_output_tokens=_count(spec.get("max_output_tokens") or spec.get("max_tokens")),
        mode=mode,
        capabilities=capabilities,
        tier=tiers.tier_of(key, provider, inp, out),  # type: ignore[arg-type]
        source=source,
        deprecated_on=_date(spec.get("deprecation_date")),
    )


def parse(data: Any, source: str, tiers: TierRules) -> tuple[list[PriceEntry], list[str]]:
    """All priced models of the file, and a note for each model that was refused."""
    if not isinstance(data, dict):
        raise ValueError("a LiteLLM price file is a JSON object of model -> spec")
    entries: list[PriceEntry] = []
    refused: list[str] = []
    for key, spec in data.items():
        if key == "sample_spec" or not isinstance(spec, dict) or not 0 < len(key) <= 128:
            continue
        try:
            entry = parse_entry(key, spec, source, tiers)
        except ValueError as exc:
            refused.append(f"{key}: {exc}")
            continue
        if entry is not None:
            entries.append(entry)
    return entries, refused


def parse_feed(data: Any, tiers: TierRules) -> tuple[list[PriceEntry], list[str]]:
    """The file as fetched from LiteLLM's URL."""
    return parse(data, NAME, tiers)
