"""Domain types shared by every part of budgetd.

These Structs *are* the schema: the wire protocol, the client library, the
OpenAPI document and the ledger all use them. Only msgspec is imported here.
"""

from budgetd.model._vocabulary import (  # noqa: F401
    Dim,
    DIMS,
    Tier,
    TIERS,
    ApolloTier,
    TierIn,
    TIER_INPUTS,
    TIER_ALIASES,
    TIER_RANK,
    FUNCTIONAL_CAPABILITIES,
    Period,
    PERIODS,
    Policy,
    POLICIES,
    Action,
    ACTION_RANK,
    BudgetStatus,
    Bucket,
    BUCKETS,
    BUCKET_PERIOD,
    ReportOrder,
    REPORT_ORDERS,
    Topic,
    TOPICS,
    AlertKind,
    Severity,
    Source,
    SOURCES,
    LOCAL_PROVIDERS,
    canonical_tier,
)
from budgetd.model._types import (  # noqa: F401
    Count,
    TokenLimit,
    Usd,
    CallUsd,
    Id,
    PerMtok,
    Name,
    Label,
    Text,
    Time,
    MetaKey,
    MetaValue,
    Metadata,
    BudgetName,
    Struct,
    BudgetInvalid,
)
from budgetd.model._usage import (  # noqa: F401
    UsagePatch,
    Usage,
    UsageRecord,
)
from budgetd.model._admission import (  # noqa: F401
    Estimate,
    Scope,
    BudgetSpec,
    check_budget,
    BudgetState,
    Suggestion,
    Decision,
    Recorded,
    Need,
    Alternative,
)
from budgetd.model._prices import (  # noqa: F401
    LongContext,
    PriceSpec,
    PriceEntry,
    SourceReport,
    PriceDiff,
    SourceStatus,
)
from budgetd.model._reports import (  # noqa: F401
    Alert,
    Totals,
    ReportRow,
    Forecast,
    Spend,
    CallFact,
    CacheFact,
    CheaperModel,
    RecommendationKind,
    Recommendation,
    Facts,
    Filters,
)
from budgetd.model._money import (  # noqa: F401
    NANOS_PER_USD,
    usd,
    nanos,
    format_usd,
)
