"""What a call consumed, as a caller reports it and as the ledger stores it."""

import datetime as dt

from budgetd.model._types import CallUsd, Count, Label, Metadata, Name, Struct, Time
from budgetd.model._vocabulary import TierIn

class UsagePatch(Struct, kw_only=True):
    """Usage whose `component` and `model` may be omitted (commit of a reservation)."""

    component: Name | None = None
    model: Name | None = None
    provider: Name | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0
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


class UsageRecord(Struct, kw_only=True):
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
