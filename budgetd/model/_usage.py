"""What a call consumed, as a caller reports it and as the ledger stores it."""

import datetime as dt

from budgetd.model._types import Answer, CallUsd, Count, Label, Metadata, Name, Searches, Struct, Time
from budgetd.model._vocabulary import ServiceTier, TierIn


class UsagePatch(Struct, kw_only=True):
    """Usage whose `component` and `model` may be omitted (commit of a reservation).

    Token kinds, as the provider billed them: `input_tokens` (prompt tokens not read from or written to
    a cache), `output_tokens` (reasoning and audio included), `cache_read_tokens`, `cache_write_tokens`
    (writes with the provider's default lifetime, Anthropic's 5 minutes), `cache_write_1h_tokens`
    (writes kept an hour). `reasoning_tokens` and `audio_output_tokens` say how many of
    `output_tokens` were reasoning and audio, `audio_input_tokens` how many of `input_tokens` were
    audio: parts, never counted twice."""

    component: Name | None = None
    model: Name | None = None
    provider: Name | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0
    cache_write_1h_tokens: Count = 0
    reasoning_tokens: Count = 0
    audio_input_tokens: Count = 0
    audio_output_tokens: Count = 0
    service_tier: ServiceTier = "standard"
    web_search_requests: Searches = 0
    context_id: Label | None = None
    task_type: Name | None = None
    tier: TierIn | None = None
    ts: Time | None = None
    cost_usd: CallUsd | None = None
    request_id: Label | None = None
    metadata: Metadata | None = None


class Usage(UsagePatch, kw_only=True):
    """What one LLM call consumed. `input_tokens` excludes tokens served from cache."""

    component: Name
    model: Name


class UsageRecord(Answer, kw_only=True):
    """A Usage as stored in the ledger."""

    record_id: int
    ts: dt.datetime
    recorded_at: dt.datetime
    component: str
    model: str
    provider: str | None
    tier: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    priced: bool
    price_version: int | None
    context_id: str | None = None
    task_type: str | None = None
    request_id: str | None = None
    reservation_id: str | None = None
    metadata: dict[str, str | int | float | bool] | None = None
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    service_tier: str = "standard"
    web_search_requests: int = 0


def parts_problem(u: UsagePatch) -> tuple[str, str] | None:
    """(field, message) when a usage's parts exceed their whole, else None."""
    if u.reasoning_tokens + u.audio_output_tokens > u.output_tokens:
        field = "reasoning_tokens" if u.reasoning_tokens > u.output_tokens else "audio_output_tokens"
        return field, (f"reasoning_tokens ({u.reasoning_tokens:,}) and audio_output_tokens ({u.audio_output_tokens:,}) "
                       f"are parts of output_tokens ({u.output_tokens:,}) and cannot add up to more")
    if u.audio_input_tokens > u.input_tokens:
        return "audio_input_tokens", (f"audio_input_tokens ({u.audio_input_tokens:,}) is a part of input_tokens "
                                      f"({u.input_tokens:,}) and cannot be more")
    return None
