"""Provider usage objects in budgetd's convention: one normaliser for every caller that reads a
provider's (or litellm's) answer (the litellm callback, the completion wrappers, the assistant).

budgetd counts `input_tokens` without the prompt tokens read from or written to the cache (OpenAI
counts them inside prompt_tokens; litellm's Anthropic adapter adds them there too); output includes
reasoning. Standard library only.
"""

from typing import Any


def _number(obj: Any, name: str) -> int:
    if obj is None:
        return 0
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _part(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def normalise_usage(usage: Any) -> dict[str, int]:
    """An OpenAI-shaped usage (a dict or an object, as litellm returns it) as Usage token fields."""
    details = _part(usage, "prompt_tokens_details")
    cached = _number(details, "cached_tokens") or _number(usage, "cache_read_input_tokens")
    written = _number(usage, "cache_creation_input_tokens")
    return {
        "input_tokens": max(0, _number(usage, "prompt_tokens") - cached - written),
        "output_tokens": _number(usage, "completion_tokens"),
        "cache_read_tokens": cached,
        "cache_write_tokens": written,
    }
