"""OpenRouter `GET /api/v1/models`: `{data: [{id, context_length, pricing: {prompt, completion,
input_cache_read?, input_cache_write?}, top_provider, supported_parameters}]}`, USD per token as strings."""

from decimal import Decimal, InvalidOperation, Overflow
from typing import Any

from budgetd.model import PriceEntry

NAME = "openrouter"
URL = "https://openrouter.ai/api/v1/models"

#: OpenRouter's author prefixes, as litellm calls those providers.
VENDORS = {"google": "gemini", "mistralai": "mistral", "openai": "openai", "anthropic": "anthropic",
           "deepseek": "deepseek", "x-ai": "xai", "meta-llama": "meta_llama", "qwen": "dashscope",
           "cohere": "cohere"}


def _per_mtok(value: Any, what: str) -> float | None:
    """A per-token price string as USD per million tokens, exactly."""
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{what} is not finite: {value!r}")
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
            inp = _per_mtok(pricing.get("prompt"), "prompt")
            out = _per_mtok(pricing.get("completion"), "completion")
            cache_read = _per_mtok(pricing.get("input_cache_read"), "input_cache_read")
            cache_write = _per_mtok(pricing.get("input_cache_write"), "input_cache_write")
        except ValueError as exc:
            refused.append(f"{item['id']}: {exc}")
            continue
        if inp is None or out is None or (inp == -1 and out == -1):  # -1 marks a router, no fixed price
            continue
        author, name = item["id"].split("/", 1)
        top = item.get("top_provider") if isinstance(item.get("top_provider"), dict) else {}
        context = item.get("context_length")
        max_out = top.get("max_completion_tokens")
        entries.append(PriceEntry(
            model=name[:128], provider=VENDORS.get(author, author),
            input_per_mtok=inp, output_per_mtok=out, cache_read_per_mtok=cache_read,
            cache_write_per_mtok=cache_write,
            max_input_tokens=context if isinstance(context, int) and context > 0 else None,
            max_output_tokens=max_out if isinstance(max_out, int) and max_out > 0 else None,
            source=NAME,
        ))
    return entries, refused
