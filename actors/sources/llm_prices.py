"""llm-prices.com `current-v1.json`: `{updated_at, prices: [{id, vendor, name, input, output, input_cached?}]}`,
in USD per million tokens.

A model priced above a prompt size has a second row: its id plus `-<N>k` ("Gemini 2.5 Pro >200k" is
`gemini-2.5-pro-200k` beside `gemini-2.5-pro`). Such a row is the base model's long-context rate above N * 1000
tokens, not a model of its own."""

import re
from typing import Any

from budgetd.model import LongContext, PriceEntry

NAME = "llm_prices"
URL = "https://www.llm-prices.com/current-v1.json"

#: Every vendor the site publishes, as litellm calls the provider of the book's keys for its models (the book
#: matches a quote by that exact name: `meta/muse-spark-1.2` is `meta`'s, `amazon.nova-pro-v1:0` Bedrock's).
VENDORS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini", "mistral": "mistral",
           "deepseek": "deepseek", "xai": "xai", "meta-ai": "meta", "moonshot-ai": "moonshot", "qwen": "dashscope",
           "minimax": "minimax", "amazon": "bedrock_converse"}

#: A vendor whose ids on the site are not its provider's model ids: (the site's spelling, the provider's).
MODEL_IDS = {
    "amazon": (re.compile(r"^amazon-(nova-.+)$"), r"amazon.\1-v1:0"),  # amazon-nova-pro: Bedrock's amazon.nova-pro-v1:0
    "minimax": (re.compile(r"^minimax-m"), "MiniMax-M"),  # the book's keys are MiniMax's own, case and all
}

_LONG_CONTEXT_ID = re.compile(r"^(?P<base>.+)-(?P<thousands>\d+)k$")


def _per_mtok(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is not a number: {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(f"{what} is out of range") from None


def _model_id(vendor: str, site_id: str) -> str:
    spelling = MODEL_IDS.get(vendor)
    return site_id if spelling is None else spelling[0].sub(spelling[1], site_id)


def parse(data: Any, tiers: object = None) -> tuple[list[PriceEntry], list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
        raise ValueError("an llm-prices feed is an object with a `prices` list")
    rows: list[tuple[str, str, dict[str, float | None]]] = []  # (vendor, id, rates) of every priced row
    refused = []
    for item in data["prices"]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        try:
            rates = {"input_per_mtok": _per_mtok(item.get("input"), "input"),
                     "output_per_mtok": _per_mtok(item.get("output"), "output"),
                     "cache_read_per_mtok": _per_mtok(item.get("input_cached"), "input_cached")}
        except ValueError as exc:
            refused.append(f"{item['id']}: {exc}")
            continue
        if rates["input_per_mtok"] is None or rates["output_per_mtok"] is None:
            continue
        rows.append((str(item.get("vendor") or "").lower(), item["id"], rates))

    priced = {(vendor, site_id) for vendor, site_id, _ in rows}
    long_contexts: dict[tuple[str, str], list[LongContext]] = {}
    models = []
    for vendor, site_id, rates in rows:
        long_row = _LONG_CONTEXT_ID.match(site_id)
        if long_row and (vendor, long_row["base"]) in priced:
            long_contexts.setdefault((vendor, long_row["base"]), []).append(
                LongContext(threshold_tokens=int(long_row["thousands"]) * 1000, **rates))
        else:
            models.append((vendor, site_id, rates))

    entries = []
    for vendor, site_id, rates in models:
        above = sorted(long_contexts.get((vendor, site_id), []), key=lambda lc: lc.threshold_tokens)
        entries.append(PriceEntry(
            model=_model_id(vendor, site_id), provider=VENDORS.get(vendor, vendor or None), **rates,
            long_context=above[0] if above else None, longer_contexts=above[1:], source=NAME,
        ))
    return entries, refused
