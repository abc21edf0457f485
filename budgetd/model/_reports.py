"""Alerts, reports, forecasts and the assistant's facts."""

import datetime as dt
from typing import Any, Literal

import msgspec

from budgetd.model._types import Answer, Label, Name, Struct
from budgetd.model._vocabulary import AlertKind, Severity

class Alert(Answer, kw_only=True):
    id: int
    ts: dt.datetime
    kind: AlertKind
    severity: Severity
    budget: str | None = None
    key: dict[str, str] | None = None
    window_start: dt.datetime | None = None
    message: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    acked: bool = False
    acked_by: str | None = None
    acked_at: dt.datetime | None = None


# -- reports --------------------------------------------------------------------


class Totals(Answer, kw_only=True):
    """Sums over records. `tokens` = input + output + cache read + both cache writes; reasoning and audio
    are parts of output and input, not added again."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    web_search_requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class ReportRow(Totals, kw_only=True):
    group: dict[str, str | None]
    bucket_start: dt.datetime | None = None
    other: bool = False  # the groups past `limit`, folded together so the rows still add up to the totals


class Forecast(Answer, kw_only=True):
    """Where a budget's current window is heading at the current burn rate."""

    budget: str
    key: dict[str, str] = msgspec.field(default_factory=dict)
    window_end: dt.datetime | None
    spent_usd: float
    spent_tokens: int
    limit_usd: float | None
    limit_tokens: int | None
    rate_usd_per_hour: float
    rate_tokens_per_hour: float
    rate_basis: Literal["last_hour", "window_average"]
    projected_usd: float | None  # at the window's end (None for `total` budgets)
    projected_tokens: int | None
    exhausted_at: dt.datetime | None  # when a limit is reached at this rate, if before the window ends


# -- the assistant's facts --------------------------------------------------------


class Spend(Answer, kw_only=True):
    """One component, model or tier over the question's horizon, and over the same span before it."""

    name: str
    cost_usd: float
    tokens: int
    requests: int
    share: float  # of the horizon's cost
    previous_cost_usd: float


class CallFact(Answer, kw_only=True):
    record_id: int
    ts: dt.datetime
    component: str
    model: str
    tokens: int
    cost_usd: float


class CacheFact(Answer, kw_only=True):
    component: str
    model: str
    requests: int
    prompt_tokens: int  # input + cache read + cache write
    cache_read_tokens: int
    hit_ratio: float
    cache_read_per_mtok: float | None  # None: the model has no cheaper cached rate


class CheaperModel(Answer, kw_only=True):
    """What the recorded traffic of `instead_of` would have cost on `model` (same capabilities, enough context)."""

    instead_of: str
    model: str
    provider: str | None
    tier: str | None
    actual_cost_usd: float
    would_cost_usd: float
    saving_usd: float


RecommendationKind = Literal[
    "switch_model", "enable_caching", "lower_tier", "raise_limit", "lower_limit", "budget_running_out"]


class Recommendation(Answer, kw_only=True):
    kind: RecommendationKind
    message: str
    saving_usd: float | None = None
    budget: str | None = None
    component: str | None = None
    model: str | None = None


class Facts(Answer, kw_only=True):
    """What the assistant knows when it answers: computed from the ledger, the budgets and the price book."""

    horizon: str  # e.g. "yesterday", "the last 7 days"
    since: dt.datetime
    until: dt.datetime
    totals: Totals
    previous: Totals  # the same span just before
    change: float | None  # totals / previous - 1 (cost), None when there was nothing before
    by_component: list[Spend] = msgspec.field(default_factory=list)
    by_model: list[Spend] = msgspec.field(default_factory=list)
    by_tier: list[Spend] = msgspec.field(default_factory=list)
    budgets_at_risk: list[Forecast] = msgspec.field(default_factory=list)
    expensive_calls: list[CallFact] = msgspec.field(default_factory=list)
    cache: list[CacheFact] = msgspec.field(default_factory=list)
    cheaper_models: list[CheaperModel] = msgspec.field(default_factory=list)
    recommendations: list[Recommendation] = msgspec.field(default_factory=list)


class Filters(Struct, kw_only=True):
    component: Name | None = None
    model: Name | None = None
    provider: Name | None = None
    tier: Name | None = None
    context_id: Label | None = None
    task_type: Name | None = None
