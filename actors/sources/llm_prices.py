"""llm-prices.com `current-v1.json`: `{updated_at, prices: [{id, vendor, name, input, output, input_cached?}]}`,
in USD per million tokens."""

from typing import Any

from budgetd.model import PriceEntry

NAME = "llm_prices"
URL = "https://www.llm-prices.com/current-v1.json"

#: The site's vendor names, as litellm calls those providers.
VENDORS = {"google": "gemini", "mistral": "mistral", "openai": "openai", "anthropic": "anthropic",
           "deepseek": "deepseek", "xai": "xai", "x-ai": "xai", "meta": "meta_llama", "amazon": "bedrock"}


def _per_mtok(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is not a number: {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(f"{what} is out of range") from None


def parse(data: Any, tiers: object = None) -> tuple[list[PriceEntry], list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
        raise ValueError("an llm-prices feed is an object with a `prices` list")
    entries, refused = [], []
    for item in data["prices"]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        try:
            inp = _per_mtok(item.get("input"), "input")
            out = _per_mtok(item.get("output"), "output")
            cached = _per_mtok(item.get("input_cached"), "input_cached")
        except ValueError as exc:
            refused.append(f"{item['id']}: {exc}")
            continue
        if inp is None or out is None:
            continue
        vendor = str(item.get("vendor") or "").lower()
        entries.append(PriceEntry(
            model=item["id"][:128], provider=VENDORS.get(vendor, vendor or None),
            input_per_mtok=inp, output_per_mtok=out, cache_read_per_mtok=cached, source=NAME,
        ))
    return entries, refused

