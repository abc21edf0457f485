"""Domain types shared by every part of budgetd.

These Structs *are* the schema: the wire protocol, the client library, the
OpenAPI document and the ledger all use them. Only msgspec is imported here.
"""

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# -- scalar types with their bounds ---------------------------------------------

#: Token counts: integers >= 0, bounded so a typo cannot poison a sum.
Count = Annotated[int, Meta(ge=0, le=10**12)]
#: Dollars on the wire (the ledger keeps integer nano-dollars).
Usd = Annotated[float, Meta(ge=0.0, le=1e9)]
#: Prices on the wire: USD per million tokens.
PerMtok = Annotated[float, Meta(ge=0.0, le=1e6)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Label = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=4096)]
#: Times are RFC 3339 with an offset; naive times are refused.
Time = Annotated[dt.datetime, Meta(tz=True)]
MetaKey = Annotated[str, Meta(min_length=1, max_length=64)]
MetaValue = Annotated[str, Meta(max_length=1024)] | int | float | bool
Metadata = Annotated[dict[MetaKey, MetaValue], Meta(max_length=32)]
BudgetName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]

Dim = Literal["component", "model", "provider", "tier", "context_id", "task_type"]
DIMS: tuple[str, ...] = ("component", "model", "provider", "tier", "context_id", "task_type")

Tier = Literal["lightweight", "midweight", "heavyweight"]
#: Apollo's tier names are accepted wherever a tier is given.
TierIn = Literal[
    "lightweight", "midweight", "heavyweight",
    "local_lightweight", "local_midweight", "remote_heavyweight",
]
TIER_ALIASES = {
    "local_lightweight": "lightweight",
    "local_midweight": "midweight",
    "remote_heavyweight": "heavyweight",
}
TIER_RANK = {"lightweight": 0, "midweight": 1, "heavyweight": 2}
#: What a model can do (not how well): a replacement must keep these.
FUNCTIONAL_CAPABILITIES = frozenset({"tools", "json", "vision", "reasoning", "audio", "pdf"})

Period = Literal["hourly", "daily", "weekly", "monthly", "total"]
Policy = Literal["ignore", "warn", "soft", "hard"]
Action = Literal["allow", "warn", "downgrade", "deny"]
BudgetStatus = Literal["ok", "warning", "exceeded"]
Bucket = Literal["hour", "day", "week", "month"]
Topic = Literal["usage", "budget", "alert", "price", "system"]
AlertKind = Literal[
    "threshold", "limit_exceeded", "denied", "projected_exhaustion", "anomaly",
    "critical_bypass", "price_changed", "price_held", "unpriced_model", "source_failed",
]
Severity = Literal["info", "warning", "critical"]


def canonical_tier(tier: str | None) -> str | None:
    """Map Apollo's tier names onto ours."""
    if tier is None:
        return None
    return TIER_ALIASES.get(tier, tier)


class Struct(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every schema type: keyword-only, immutable, strict."""


class BudgetInvalid(ValueError):
    """A BudgetSpec that decodes but does not make sense; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- usage ----------------------------------------------------------------------


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
    cost_usd: Usd | None = None
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


# -- admission ------------------------------------------------------------------


class Estimate(Struct, kw_only=True):
    """What a call may consume."""

    component: Name
    model: Name
    provider: Name | None = None
    tier: TierIn | None = None
    context_id: Label | None = None
    task_type: Name | None = None
    input_tokens: Count
    max_output_tokens: Count | None = None
    cache_read_tokens: Count | None = None
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
    limit_tokens: Count | None = None
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


class BudgetState(Struct, kw_only=True):
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


class Suggestion(Struct, kw_only=True):
    model: str
    provider: str | None
    tier: str | None
    estimated_cost_usd: float


class Decision(Struct, kw_only=True):
    allowed: bool
    action: Action
    estimated_cost_usd: float
    estimated_tokens: int
    reasons: list[str] = msgspec.field(default_factory=list)
    budgets: list[BudgetState] = msgspec.field(default_factory=list)
    suggestion: Suggestion | None = None
    reservation_id: str | None = None
    expires_at: dt.datetime | None = None
    duplicate: bool = False


class Recorded(Struct, kw_only=True):
    record_id: int
    cost_usd: float
    priced: bool
    price_version: int | None
    model: str
    provider: str | None
    tier: str | None
    budgets: list[BudgetState] = msgspec.field(default_factory=list)
    duplicate: bool = False


class Need(Struct, kw_only=True):
    capabilities: list[Name] = msgspec.field(default_factory=list)
    min_context_tokens: Count | None = None
    max_tier: TierIn | None = None


class Alternative(Struct, kw_only=True):
    model: str
    tier: str | None
    estimated_cost_usd: float
    fits: bool
    why: str


# -- prices ---------------------------------------------------------------------


class LongContext(Struct, kw_only=True):
    """Rates that apply to the whole request above `threshold_tokens` of input."""

    threshold_tokens: Count
    input_per_mtok: PerMtok
    output_per_mtok: PerMtok
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None


class PriceSpec(Struct, kw_only=True):
    """The part of a price a person sets (`prices.set`, `[[pricing.overrides]]`)."""

    model: Name
    provider: Name | None = None
    input_per_mtok: PerMtok
    output_per_mtok: PerMtok
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None
    long_context: LongContext | None = None
    max_input_tokens: Count | None = None
    max_output_tokens: Count | None = None
    mode: Name = "chat"
    capabilities: list[Name] = msgspec.field(default_factory=list)
    tier: Tier | None = None


class PriceEntry(PriceSpec, kw_only=True):
    """A price as the book holds it: with where it came from and when it applied."""

    source: Name = "override"
    version: int = 0
    effective_from: dt.datetime | None = None
    effective_to: dt.datetime | None = None
    verified: bool = True
    deprecated_on: dt.date | None = None


class SourceReport(Struct, kw_only=True):
    source: str
    fetched: bool
    models: int = 0
    applied: int = 0
    held: int = 0
    rejected: int = 0
    error: str | None = None


class PriceDiff(Struct, kw_only=True):
    """One model's price as a refresh found it: `new`, `changed` (applied) or `held`."""

    model: str
    source: str
    status: Literal["new", "changed", "held"]
    old_input_per_mtok: float | None = None
    old_output_per_mtok: float | None = None
    new_input_per_mtok: float
    new_output_per_mtok: float


class SourceStatus(Struct, kw_only=True):
    source: str
    models: int
    last_success: dt.datetime | None = None
    last_error: str | None = None


# -- alerts ---------------------------------------------------------------------


class Alert(Struct, kw_only=True):
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


class Totals(Struct, kw_only=True):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class ReportRow(Struct, kw_only=True):
    group: dict[str, str | None]
    bucket_start: dt.datetime | None = None
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    tokens: int
    cost_usd: float
    other: bool = False  # the groups past `limit`, folded together so the rows still add up to the totals


class Forecast(Struct, kw_only=True):
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


class Spend(Struct, kw_only=True):
    """One component, model or tier over the question's horizon, and over the same span before it."""

    name: str
    cost_usd: float
    tokens: int
    requests: int
    share: float  # of the horizon's cost
    previous_cost_usd: float


class CallFact(Struct, kw_only=True):
    record_id: int
    ts: dt.datetime
    component: str
    model: str
    tokens: int
    cost_usd: float


class CacheFact(Struct, kw_only=True):
    component: str
    model: str
    requests: int
    prompt_tokens: int  # input + cache read + cache write
    cache_read_tokens: int
    hit_ratio: float
    cache_read_per_mtok: float | None  # None: the model has no cheaper cached rate


class CheaperModel(Struct, kw_only=True):
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


class Recommendation(Struct, kw_only=True):
    kind: RecommendationKind
    message: str
    saving_usd: float | None = None
    budget: str | None = None
    component: str | None = None
    model: str | None = None


class Facts(Struct, kw_only=True):
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


# -- money ----------------------------------------------------------------------

NANOS_PER_USD = 1_000_000_000


def usd(nanos: int) -> float:
    """Nano-dollars (the ledger's unit) to wire dollars."""
    return nanos / NANOS_PER_USD


def nanos(usd_amount: float) -> int:
    """Wire dollars to nano-dollars, rounded once to the nearest nano-dollar.

    Goes through the shortest decimal form of the float, so 0.1 is exactly
    100,000,000 nano-dollars and large sums never pick up float noise.
    """
    return int(Decimal(repr(usd_amount)).scaleb(9).quantize(Decimal(1), ROUND_HALF_EVEN))


def format_usd(value: float | None) -> str:
    """Dollars for people: cents above $1, up to micro-dollars below."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    if abs(value) < 1:
        digits = f"{value:.6f}".rstrip("0")
        return "$" + (digits if len(digits.split(".")[1]) >= 2 else f"{value:.2f}")
    return f"${value:,.2f}"
