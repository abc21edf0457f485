"""Apollo's `TokenBudgetManager`, backed by budgetd: the method names, types and meanings Apollo's code
uses, with budgetd's ledger and allocator behind them.

Where Apollo's own behaviour was a bug, this does the right thing:

- usage over an allocation is recorded in full (Apollo clipped it to what was left and lost the rest);
- a policy without a component or task type covers every component and task type of its tier (Apollo's
  counters were keyed by component, so tier-wide policies never saw any usage and never fired);
- an allocation that would cross a hard limit is refused (Apollo only refused once the limit was already
  exceeded, so the crossing request went through). CRITICAL priority still bypasses, as in Apollo.
"""

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field, fields, replace
from enum import Enum, IntEnum
from typing import Any, Callable

import anyio

from budgetd.client import SyncBudgetClient
from budgetd.model import BudgetSpec, Scope
from budgetd.protocol import OpError

log = logging.getLogger("budgetd.integrations.apollo")
PREFIX = "apollo-"


class BudgetTier(str, Enum):
    LOCAL_LIGHTWEIGHT = "local_lightweight"
    LOCAL_MIDWEIGHT = "local_midweight"
    REMOTE_HEAVYWEIGHT = "remote_heavyweight"


class BudgetPeriod(str, Enum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    PER_SESSION = "per_session"
    PER_TASK = "per_task"


class BudgetPolicyType(str, Enum):
    IGNORE = "ignore"
    WARN = "warn"
    SOFT_LIMIT = "soft_limit"
    HARD_LIMIT = "hard_limit"


class TaskPriority(IntEnum):
    LOW = 1
    NORMAL = 5
    HIGH = 8
    CRITICAL = 10


POLICY = {BudgetPolicyType.IGNORE: "ignore", BudgetPolicyType.WARN: "warn", BudgetPolicyType.SOFT_LIMIT: "soft",
          BudgetPolicyType.HARD_LIMIT: "hard"}
TIER = {BudgetTier.LOCAL_LIGHTWEIGHT: "lightweight", BudgetTier.LOCAL_MIDWEIGHT: "midweight",
        BudgetTier.REMOTE_HEAVYWEIGHT: "heavyweight"}
DEFAULT_ALLOCATIONS = {  # Apollo's token allocations per task type and priority
    "default": {TaskPriority.LOW: 1000, TaskPriority.NORMAL: 2000, TaskPriority.HIGH: 4000, TaskPriority.CRITICAL: 8000},
    "chat": {TaskPriority.LOW: 2000, TaskPriority.NORMAL: 4000, TaskPriority.HIGH: 8000, TaskPriority.CRITICAL: 16000},
    "coding": {TaskPriority.LOW: 4000, TaskPriority.NORMAL: 8000, TaskPriority.HIGH: 16000,
               TaskPriority.CRITICAL: 32000},
    "analysis": {TaskPriority.LOW: 4000, TaskPriority.NORMAL: 8000, TaskPriority.HIGH: 16000,
                 TaskPriority.CRITICAL: 32000},
}


@dataclass
class BudgetPolicy:
    type: BudgetPolicyType
    period: BudgetPeriod
    tier: BudgetTier
    limit: int  # tokens per period
    policy_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    component: str | None = None
    task_type: str | None = None
    warning_threshold: float = 0.8
    action_threshold: float = 0.95
    start_date: dt.datetime = field(default_factory=dt.datetime.now)
    end_date: dt.datetime | None = None
    enabled: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BudgetPolicy":
        """One entry of Apollo's budget_policies.json; ValueError says what is wrong with it."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        missing = [k for k in ("type", "period", "tier", "limit") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        values = dict(data)
        try:
            values["type"] = BudgetPolicyType(values["type"])
            values["period"] = BudgetPeriod(values["period"])
            values["tier"] = BudgetTier(values["tier"])
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(values["limit"], int) or isinstance(values["limit"], bool) or values["limit"] < 0:
            raise ValueError(f"limit must be a whole number of tokens >= 0, got {values['limit']!r}")
        for key in ("start_date", "end_date"):
            if isinstance(values.get(key), str):
                values[key] = dt.datetime.fromisoformat(values[key])
        return cls(**values)


@dataclass
class BudgetAllocation:
    context_id: str
    component: str
    tier: BudgetTier
    task_type: str
    tokens_allocated: int
    allocation_id: str = ""  # budgetd's reservation id
    provider: str | None = None
    model: str | None = None
    priority: int = 5
    tokens_used: int = 0
    creation_time: dt.datetime = field(default_factory=dt.datetime.now)
    expiration_time: dt.datetime | None = None
    is_active: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    committed: bool = False  # the reservation has been replaced by recorded usage

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.tokens_allocated - self.tokens_used)

    @property
    def usage_percentage(self) -> float:
        return self.tokens_used / self.tokens_allocated if self.tokens_allocated else 0.0

    @property
    def is_expired(self) -> bool:
        return self.expiration_time is not None and dt.datetime.now() > self.expiration_time


@dataclass
class BudgetSummary:
    period: BudgetPeriod
    tier: BudgetTier
    total_allocated: int
    total_used: int
    limit: int
    usage_percentage: float
    active_allocations: int
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    component: str | None = None
    task_type: str | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.total_used)

    @property
    def is_exceeded(self) -> bool:
        return self.total_used > self.limit


def budget_name(policy_id: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in policy_id.lower()).strip("-._")
    return (PREFIX + safe)[:64]


def policy_to_spec(policy: BudgetPolicy) -> BudgetSpec:
    """An Apollo policy as a budgetd budget: token limits per tier (and component, task type) and period;
    per-session and per-task periods become a limit per context id over its whole life."""
    per_context = policy.period in (BudgetPeriod.PER_SESSION, BudgetPeriod.PER_TASK)
    thresholds = sorted({round(t, 4) for t in (policy.warning_threshold, policy.action_threshold, 1.0) if 0 < t <= 10})
    return BudgetSpec(
        name=budget_name(policy.policy_id),
        scope=Scope(tier=TIER[policy.tier], component=policy.component, task_type=policy.task_type,
                    context_id="*" if per_context else None),
        period="total" if per_context else policy.period.value,  # type: ignore[arg-type]
        limit_tokens=policy.limit, policy=POLICY[policy.type],  # type: ignore[arg-type]
        thresholds=thresholds, critical_bypass=policy.type == BudgetPolicyType.HARD_LIMIT,
        enabled=policy.enabled, description=f"Apollo policy {policy.policy_id}",
    )


def spec_to_policy(spec: BudgetSpec) -> BudgetPolicy:
    tiers = {v: k for k, v in TIER.items()}
    policies = {v: k for k, v in POLICY.items()}
    period = BudgetPeriod.PER_SESSION if spec.period == "total" else BudgetPeriod(spec.period)
    below = [t for t in spec.thresholds if t < 1.0] or [0.8]
    return BudgetPolicy(
        type=policies[spec.policy], period=period, tier=tiers.get(spec.scope.tier or "heavyweight",
                                                                  BudgetTier.REMOTE_HEAVYWEIGHT),
        limit=spec.limit_tokens or 0, policy_id=(spec.description or "").removeprefix("Apollo policy ")
        or spec.name.removeprefix(PREFIX), component=spec.scope.component, task_type=spec.scope.task_type,
        warning_threshold=min(below), action_threshold=max(below), enabled=spec.enabled,
    )


class TokenBudgetManager:
    """Apollo's budget manager over budgetd (socket or http URL)."""

    def __init__(self, socket: str | None = None, timeout: float = 10.0) -> None:
        self.client = SyncBudgetClient(socket, timeout=timeout)
        self.allocations: dict[str, BudgetAllocation] = {}
        self.component_tiers: dict[str, BudgetTier] = {}
        self.model_tiers: dict[str, BudgetTier] = {}
        self.provider_tiers: dict[str, BudgetTier] = {}
        self.callbacks: dict[str, list[Callable]] = {name: [] for name in (
            "on_allocation_created", "on_allocation_updated", "on_allocation_expired", "on_budget_exceeded",
            "on_policy_updated")}

    async def start(self) -> None:
        """Nothing to start: the daemon runs on its own."""

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.client.close)

    def _tier(self, component: str | None, provider: str | None, model: str | None) -> BudgetTier | None:
        if model and model.lower() in self.model_tiers:
            return self.model_tiers[model.lower()]
        if component and component in self.component_tiers:
            return self.component_tiers[component]
        if provider and provider.lower() in self.provider_tiers:
            return self.provider_tiers[provider.lower()]
        return None  # budgetd's own tier rules decide

    def _priced_tier(self, model: str | None) -> BudgetTier:
        """The tier budgetd's price book gives the model (heavyweight when it has no price)."""
        if model:
            try:
                tier = self.client.prices_get(model).price.tier
            except OpError:
                tier = None
            for apollo_tier, name in TIER.items():
                if name == tier:
                    return apollo_tier
        return BudgetTier.REMOTE_HEAVYWEIGHT

    # -- allocations -------------------------------------------------------------------

    async def allocate_budget(self, context_id: str, component: str, task_type: str = "default",
                              provider: str | None = None, model: str | None = None, priority: int = 5,
                              token_count: int | None = None, expiration: dt.datetime | None = None,
                              metadata: dict[str, Any] | None = None) -> BudgetAllocation | None:
        """Reserve `token_count` tokens (Apollo's default for the task type and priority when absent);
        None when a budget refuses."""
        return await anyio.to_thread.run_sync(lambda: self._allocate(
            context_id, component, task_type, provider, model, priority, token_count, expiration, metadata))

    def _allocate(self, context_id: str, component: str, task_type: str, provider: str | None, model: str | None,
                  priority: int, token_count: int | None, expiration: dt.datetime | None,
                  metadata: dict[str, Any] | None) -> BudgetAllocation | None:
        if token_count is None:
            table = DEFAULT_ALLOCATIONS.get(task_type, DEFAULT_ALLOCATIONS["default"])
            token_count = table.get(priority, table[TaskPriority.NORMAL])  # type: ignore[call-overload]
        now = dt.datetime.now()
        expiration = expiration or now + dt.timedelta(hours=24)
        tier = self._tier(component, provider, model)
        fields_: dict[str, Any] = {"component": component, "model": model or "unknown", "input_tokens": token_count,
                                   "max_output_tokens": 0, "context_id": context_id, "task_type": task_type,
                                   "priority": max(1, min(10, priority))}
        if provider:
            fields_["provider"] = provider
        if tier is not None:
            fields_["tier"] = tier.value
        ttl = max(1.0, min((expiration - now).total_seconds(), 7 * 86400))
        decision = self.client.reserve(ttl_s=ttl, **fields_)
        if not decision.allowed:
            log.warning("allocation refused for %s: %s", context_id, "; ".join(decision.reasons))
            for state in decision.budgets:
                if state.status == "exceeded":
                    self._trigger("on_budget_exceeded", state)
            return None
        allocation = BudgetAllocation(
            context_id=context_id, component=component, tier=tier or self._priced_tier(model), task_type=task_type,
            tokens_allocated=token_count, allocation_id=decision.reservation_id, provider=provider, model=model,
            priority=priority, creation_time=now, expiration_time=expiration, metadata=metadata or {},
        )
        self.allocations[context_id] = allocation
        self._trigger("on_allocation_created", allocation)
        return allocation

    def record_usage(self, context_id: str, tokens: int, usage_type: str = "total", operation_id: str | None = None,
                     metadata: dict[str, Any] | None = None) -> int:
        """Record usage against the context's allocation: every token (Apollo clipped to the allocation).
        The first usage replaces the reservation; later ones are recorded on their own."""
        allocation = self.allocations.get(context_id)
        if allocation is None or tokens <= 0:
            if allocation is None:
                log.warning("no active allocation for context %s", context_id)
            return 0
        if not allocation.is_active or allocation.is_expired:
            log.warning("allocation for context %s is inactive or expired", context_id)
            return 0
        usage: dict[str, Any] = {
            "component": allocation.component, "model": allocation.model or "unknown",
            "input_tokens" if usage_type != "output" else "output_tokens": tokens,
            "context_id": context_id, "task_type": allocation.task_type,
        }
        if allocation.provider:
            usage["provider"] = allocation.provider
        if allocation.tier is not None and self._tier(allocation.component, allocation.provider, allocation.model):
            usage["tier"] = allocation.tier.value
        if operation_id:
            usage["request_id"] = operation_id[:256]
        if metadata:
            usage["metadata"] = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}
        key = f"apollo:{allocation.allocation_id}:{operation_id}" if operation_id else None
        if not allocation.committed:
            recorded = self.client.commit(allocation.allocation_id, idempotency_key=key, **usage)
            allocation.committed = True
        else:
            recorded = self.client.record(idempotency_key=key, **usage)
        allocation.tokens_used += tokens
        for state in recorded.budgets:
            if state.status == "exceeded":
                self._trigger("on_budget_exceeded", state)
        self._trigger("on_allocation_updated", allocation)
        return tokens

    def get_allocation(self, context_id: str) -> BudgetAllocation | None:
        return self.allocations.get(context_id)

    def update_allocation(self, context_id: str, additional_tokens: int | None = None,
                          extend_expiration: dt.timedelta | None = None,
                          is_active: bool | None = None) -> BudgetAllocation | None:
        allocation = self.allocations.get(context_id)
        if allocation is None:
            return None
        if additional_tokens:
            allocation.tokens_allocated += additional_tokens
        if extend_expiration is not None and allocation.expiration_time:
            allocation.expiration_time += extend_expiration
        if is_active is not None:
            allocation.is_active = is_active
            if not is_active and not allocation.committed:
                self.client.release(allocation.allocation_id)  # nothing was used: give the hold back
                allocation.committed = True
        self._trigger("on_allocation_updated", allocation)
        return allocation

    # -- summaries and policies ------------------------------------------------------------------

    def get_budget_summary(self, tier: BudgetTier | None = None, period: BudgetPeriod = BudgetPeriod.DAILY,
                           component: str | None = None, task_type: str | None = None) -> list[BudgetSummary]:
        """One summary per Apollo policy of `period` (and `tier`, `component`, `task_type`), from budgetd's
        live window: used tokens, the limit, active allocations."""
        states = {s.budget: s for s in self.client.status().budgets if not s.key}
        out = []
        for spec in self.client.budget_list():
            if not spec.name.startswith(PREFIX):
                continue
            policy = spec_to_policy(spec)
            if policy.period != period and not (period in (BudgetPeriod.PER_SESSION, BudgetPeriod.PER_TASK)
                                                and spec.period == "total"):
                continue
            if (tier is not None and policy.tier != tier) or (component and policy.component not in (None, component)) \
                    or (task_type and policy.task_type not in (None, task_type)):
                continue
            state = states.get(spec.name)
            used = state.spent_tokens if state else 0
            mine = [a for a in self.allocations.values() if a.tier == policy.tier
                    and (policy.component is None or a.component == policy.component)]
            out.append(BudgetSummary(
                period=policy.period, tier=policy.tier, component=policy.component, task_type=policy.task_type,
                total_allocated=sum(a.tokens_allocated for a in mine), total_used=used, limit=policy.limit,
                usage_percentage=used / policy.limit if policy.limit else 0.0,
                active_allocations=sum(1 for a in mine if a.is_active and not a.is_expired),
                start_time=state.window_start if state else None, end_time=state.window_end if state else None,
            ))
        return out

    def add_policy(self, policy: BudgetPolicy) -> str:
        self.client.budget_set(policy_to_spec(policy))
        self._trigger("on_policy_updated", policy)
        return policy.policy_id

    def get_policy(self, policy_id: str) -> BudgetPolicy | None:
        try:
            return spec_to_policy(self.client.budget_get(budget_name(policy_id)).budget)
        except OpError as exc:
            if exc.code == "not_found":
                return None
            raise

    def update_policy(self, policy_id: str, **changes: Any) -> BudgetPolicy | None:
        policy = self.get_policy(policy_id)
        if policy is None:
            return None
        policy = replace(policy, **{k: v for k, v in changes.items() if hasattr(policy, k)})
        self.add_policy(policy)
        return policy

    def delete_policy(self, policy_id: str) -> bool:
        return self.client.budget_delete(budget_name(policy_id))

    # -- tiers and callbacks --------------------------------------------------------------------

    def get_model_tier(self, model: str) -> BudgetTier:
        return self.model_tiers.get(model.lower(), BudgetTier.REMOTE_HEAVYWEIGHT)

    def set_model_tier(self, model: str, tier: BudgetTier) -> None:
        self.model_tiers[model.lower()] = tier

    def get_component_tier(self, component: str) -> BudgetTier | None:
        return self.component_tiers.get(component)

    def set_component_tier(self, component: str, tier: BudgetTier) -> None:
        self.component_tiers[component] = tier

    def get_provider_tier(self, provider: str) -> BudgetTier:
        return self.provider_tiers.get(provider.lower(), BudgetTier.REMOTE_HEAVYWEIGHT)

    def set_provider_tier(self, provider: str, tier: BudgetTier) -> None:
        self.provider_tiers[provider.lower()] = tier

    def register_callback(self, event_type: str, callback: Callable) -> None:
        if event_type not in self.callbacks:
            raise ValueError(f"unknown event type {event_type!r}; one of {sorted(self.callbacks)}")
        self.callbacks[event_type].append(callback)

    def _trigger(self, event_type: str, *args: Any) -> None:
        for callback in self.callbacks[event_type]:
            try:
                callback(*args)
            except Exception:
                log.exception("%s callback failed", event_type)

