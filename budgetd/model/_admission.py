"""Budgets and what admission answers: estimates, decisions, records, routes."""

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

from budgetd.model._types import (
    Answer,
    BudgetInvalid,
    BudgetName,
    Count,
    Label,
    Name,
    Searches,
    Struct,
    Text,
    TokenLimit,
    Usd,
)
from budgetd.model._vocabulary import Action, BudgetStatus, Period, Policy, ServiceTier, TierIn


class Estimate(Struct, kw_only=True):
    """What a call may consume (the same token kinds as a Usage, where they change the price)."""

    component: Name
    model: Name
    provider: Name | None = None
    tier: TierIn | None = None
    context_id: Label | None = None
    task_type: Name | None = None
    input_tokens: Count
    max_output_tokens: Count | None = None
    cache_read_tokens: Count | None = None
    cache_write_tokens: Count = 0
    cache_write_1h_tokens: Count = 0
    audio_input_tokens: Count = 0
    service_tier: ServiceTier = "standard"
    web_search_requests: Searches = 0
    priority: Annotated[int, Meta(ge=1, le=10)] = 5


class Scope(Struct, kw_only=True):
    """Which requests a budget covers: an exact value, or "*" for one counter per value."""

    component: Name | None = None
    context_id: Label | None = None
    provider: Name | None = None
    model: Name | None = None
    tier: Name | None = None
    task_type: Name | None = None


class BudgetSpec(Struct, kw_only=True):
    name: BudgetName
    scope: Scope = Scope()
    period: Period
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    limit_usd: Usd | None = None
    limit_tokens: TokenLimit | None = None
    policy: Policy
    thresholds: Annotated[
        list[Annotated[float, Meta(gt=0.0, le=10.0)]], Meta(max_length=16)
    ] = msgspec.field(default_factory=lambda: [0.5, 0.8, 1.0])
    critical_bypass: bool = False
    enabled: bool = True
    description: Text | None = None


def check_budget(spec: "BudgetSpec", prefix: str = "$.budget") -> None:
    """The rules of a BudgetSpec that its types cannot express; raises BudgetInvalid."""
    from zoneinfo import (  # stdlib, loaded only when budgets change
        ZoneInfo,
        ZoneInfoNotFoundError,
    )

    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BudgetInvalid(
            f"{prefix}.timezone",
            f"unknown time zone {spec.timezone!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'",
        ) from None
    if spec.policy != "ignore" and spec.limit_usd is None and spec.limit_tokens is None:
        raise BudgetInvalid(
            f"{prefix}.limit_usd",
            f"budget {spec.name!r} has policy {spec.policy!r} but no limit: set limit_usd and/or limit_tokens",
        )
    if sorted(spec.thresholds) != list(spec.thresholds):
        raise BudgetInvalid(f"{prefix}.thresholds", "thresholds must be in increasing order")


class BudgetState(Answer, kw_only=True):
    budget: str
    key: dict[str, str] = msgspec.field(default_factory=dict)
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    spent_usd: float
    spent_tokens: int
    reserved_usd: float
    reserved_tokens: int
    limit_usd: float | None
    limit_tokens: int | None
    used_fraction: float
    status: BudgetStatus
    policy: Policy


class Suggestion(Answer, kw_only=True):
    model: str
    provider: str | None
    tier: str | None
    estimated_cost_usd: float


class Decision(Answer, kw_only=True):
    allowed: bool
    action: Action
    estimated_cost_usd: float
    estimated_tokens: int
    reasons: list[str] = msgspec.field(default_factory=list)
    budgets: list[BudgetState] = msgspec.field(default_factory=list)
    suggestion: Suggestion | None = None
    reservation_id: str | None = None
    # A reserve of several calls (a lease): one hold per call, the first of them `reservation_id`.
    reservation_ids: list[str] = msgspec.field(default_factory=list)
    expires_at: dt.datetime | None = None
    duplicate: bool = False
    priced: bool = True  # False: the model has no price; the estimate is at pricing.unknown_model's rate
    did_you_mean: list[str] = msgspec.field(default_factory=list)  # priced names close to an unpriced one


class Recorded(Answer, kw_only=True):
    record_id: int
    cost_usd: float
    priced: bool
    price_version: int | None
    model: str
    provider: str | None
    tier: str | None
    budgets: list[BudgetState] = msgspec.field(default_factory=list)
    duplicate: bool = False
    did_you_mean: list[str] = msgspec.field(default_factory=list)  # when unpriced: priced names close to it


class Need(Struct, kw_only=True):
    capabilities: Annotated[list[Name], Meta(max_length=64)] = msgspec.field(default_factory=list)
    min_context_tokens: TokenLimit | None = None
    max_tier: TierIn | None = None


class Alternative(Answer, kw_only=True):
    model: str
    tier: str | None
    estimated_cost_usd: float
    fits: bool
    why: str
