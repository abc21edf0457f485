"""OpenRouter `GET /api/v1/models`: `{data: [{id, context_length, pricing: {prompt, completion,
input_cache_read?, input_cache_write?}, top_provider, supported_parameters}]}`, USD per token as strings.

Each model is quoted twice: in OpenRouter's own namespace (`openrouter/<id>`, provider `openrouter`: what a call
through OpenRouter costs), and as its maker's price (`gpt-4o` of `openai`), which OpenRouter passes through and so
confirms or contradicts. A price of `-1` is OpenRouter's "no fixed price" (a router such as `openrouter/auto`, or
a rate that depends on where the call is sent): never a number."""

from decimal import Decimal, InvalidOperation, Overflow
from typing import Any

from budgetd.model import PriceEntry

NAME = "openrouter"
URL = "https://openrouter.ai/api/v1/models"

#: OpenRouter's author prefixes, as litellm calls those providers.
VENDORS = {"google": "gemini", "mistralai": "mistral", "openai": "openai", "anthropic": "anthropic",
           "deepseek": "deepseek", "x-ai": "xai", "meta-llama": "meta_llama", "qwen": "dashscope",
           "cohere": "cohere"}

#: OpenRouter's pricing fields -> ours.
RATES = {"prompt": "input_per_mtok", "completion": "output_per_mtok",
         "input_cache_read": "cache_read_per_mtok", "input_cache_write": "cache_write_per_mtok"}
NO_FIXED_PRICE = Decimal(-1)


def _per_mtok(value: Any, what: str) -> float | None:
    """A per-token price string as USD per million tokens, exactly; None when absent or of no fixed price."""
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{what} is not finite: {value!r}")
    if amount == NO_FIXED_PRICE:  # before scaling: -1 per token is the marker, -1e6 per Mtok would be a price
        return None
    try:
        return float(amount.scaleb(6))
    except Overflow:  # an exponent beyond what Decimal holds
        raise ValueError(f"{what} is out of range: {value!r}") from None


def parse(data: Any, tiers: object = None) -> tuple[list[PriceEntry], list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError("an OpenRouter models feed is an object with a `data` list")
    entries, refused = [], []
    for item in data["data"]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or "/" not in item["id"]:
            continue
        pricing = item.get("pricing") if isinstance(item.get("pricing"), dict) else {}
        try:
            rates = {ours: _per_mtok(pricing.get(theirs), theirs) for theirs, ours in RATES.items()}
        except ValueError as exc:
            refused.append(f"{item['id']}: {exc}")
            continue
        if rates["input_per_mtok"] is None or rates["output_per_mtok"] is None:
            continue  # no fixed price for a call: nothing to quote (a cache rate without one is only left out)
        author, name = item["id"].split("/", 1)
        top = item.get("top_provider") if isinstance(item.get("top_provider"), dict) else {}
        context = item.get("context_length")
        max_out = top.get("max_completion_tokens")
        limits = {"max_input_tokens": context if isinstance(context, int) and context > 0 else None,
                  "max_output_tokens": max_out if isinstance(max_out, int) and max_out > 0 else None}
        entries.append(PriceEntry(model=f"{NAME}/{item['id']}", provider=NAME, **rates, **limits, source=NAME))
        if author != NAME:  # OpenRouter's own models (`openrouter/auto`) have no other maker
            entries.append(PriceEntry(model=name, provider=VENDORS.get(author, author), **rates, **limits,
                                      source=NAME))
    return entries, refused
