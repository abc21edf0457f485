"""Every word budgetd uses for a kind of thing, defined once: the Literal types are the schema, the
tuples beside them are derived from them (for choices, loops and messages)."""

from typing import Literal, get_args

Dim = Literal["component", "model", "provider", "tier", "context_id", "task_type"]
DIMS: tuple[str, ...] = get_args(Dim)

Tier = Literal["lightweight", "midweight", "heavyweight"]
TIERS: tuple[str, ...] = get_args(Tier)
#: Apollo's tier names are accepted wherever a tier is given.
ApolloTier = Literal["local_lightweight", "local_midweight", "remote_heavyweight"]
TierIn = Literal[Tier, ApolloTier]
TIER_INPUTS: tuple[str, ...] = (*TIERS, *get_args(ApolloTier))
TIER_ALIASES = dict(zip(get_args(ApolloTier), TIERS))
TIER_RANK = {tier: rank for rank, tier in enumerate(TIERS)}

#: What a model can do (not how well): a replacement must keep these.
FUNCTIONAL_CAPABILITIES = frozenset({"tools", "json", "vision", "reasoning", "audio", "pdf"})

#: The provider's processing tier a call was billed at (`batch`: a batch API's rates).
ServiceTier = Literal["standard", "priority", "flex", "batch"]
SERVICE_TIERS: tuple[str, ...] = get_args(ServiceTier)

Period = Literal["hourly", "daily", "weekly", "monthly", "total"]
PERIODS: tuple[str, ...] = get_args(Period)
Policy = Literal["ignore", "warn", "soft", "hard"]
POLICIES: tuple[str, ...] = get_args(Policy)
Action = Literal["allow", "warn", "downgrade", "deny"]
#: The most severe action wins across budgets.
ACTION_RANK = {action: rank for rank, action in enumerate(get_args(Action))}
BudgetStatus = Literal["ok", "warning", "exceeded"]
Bucket = Literal["hour", "day", "week", "month"]
BUCKETS: tuple[str, ...] = get_args(Bucket)
#: A bucket of a report is the window of this budget period.
BUCKET_PERIOD = dict(zip(BUCKETS, PERIODS))
ReportOrder = Literal["cost", "tokens", "requests", "group"]
REPORT_ORDERS: tuple[str, ...] = get_args(ReportOrder)
Topic = Literal["usage", "budget", "alert", "price", "system"]
TOPICS: tuple[str, ...] = get_args(Topic)
AlertKind = Literal[
    "threshold", "limit_exceeded", "denied", "projected_exhaustion", "anomaly",
    "critical_bypass", "price_changed", "price_held", "unpriced_model", "source_failed",
]
Severity = Literal["info", "warning", "critical"]

#: Where prices come from (`corrections`: reviewed facts shipped with budgetd where a feed contradicts the
#: provider; `overrides`: the config and `prices.set`).
Source = Literal["litellm_bundled", "litellm", "llm_prices", "openrouter", "corrections", "overrides"]
SOURCES: tuple[str, ...] = get_args(Source)
#: Providers that run on the caller's own machines: priced at zero, tier lightweight.
LOCAL_PROVIDERS = frozenset({
    "ollama", "ollama_chat", "lm_studio", "vllm", "hosted_vllm", "llamafile", "llama.cpp", "llamacpp", "local",
})


def canonical_tier(tier: str | None) -> str | None:
    """Map Apollo's tier names onto ours."""
    if tier is None:
        return None
    return TIER_ALIASES.get(tier, tier)
