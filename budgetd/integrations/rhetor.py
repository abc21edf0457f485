"""Rhetor's `BudgetManager`, backed by budgetd: the same method names and return shapes, with budgetd's
price book, ledger and budgets behind them.

Differences on purpose: token counts the provider reported are used as given (pass `input_tokens` /
`output_tokens`; text is tokenised only when they are absent), costs come from budgetd's current price
book (Rhetor's hard-coded table had gone stale), and Rhetor's `enforce` is a hard budget that also refuses
the request that would cross the limit.
"""

import datetime as dt
import logging
import os
from enum import Enum
from typing import Any

from budgetd.client import SyncBudgetClient
from budgetd.model import BudgetSpec, Scope
from budgetd.periods import window
from budgetd.protocol import OpError

log = logging.getLogger("budgetd.integrations.rhetor")
UTC = dt.timezone.utc


class BudgetPolicy(str, Enum):
    IGNORE = "ignore"
    WARN = "warn"
    ENFORCE = "enforce"


class BudgetPeriod(str, Enum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


POLICY = {"ignore": "ignore", "warn": "warn", "enforce": "hard"}
POLICY_BACK = {"ignore": "ignore", "warn": "warn", "soft": "warn", "hard": "enforce"}


def budget_name(period: str, provider: str = "all") -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in provider.lower())
    return f"rhetor-{period}-{safe}"[:64]


def setting_to_spec(period: str, provider: str, limit_amount: float, enforcement: str) -> BudgetSpec:
    """A row of Rhetor's budget_settings as a budgetd budget."""
    return BudgetSpec(
        name=budget_name(period, provider), scope=Scope(provider=None if provider == "all" else provider),
        period=BudgetPeriod(period).value, limit_usd=limit_amount,  # type: ignore[arg-type]
        policy=POLICY[BudgetPolicy(enforcement).value],  # type: ignore[arg-type]
        description=f"Rhetor {period} budget for {provider}",
    )


class BudgetManager:
    """Rhetor's budget manager over budgetd (socket or http URL)."""

    def __init__(self, socket: str | None = None, component: str = "rhetor", timeout: float = 10.0) -> None:
        self.client = SyncBudgetClient(socket, timeout=timeout)
        self.component = component
        self.default_policy = os.environ.get("RHETOR_BUDGET_POLICY", BudgetPolicy.WARN.value)

    # -- tokens and costs ------------------------------------------------------------------

    def count_tokens(self, text: str, model: str = "gpt-3.5-turbo") -> int:
        """Only when the provider did not report counts: litellm's tokenizer, else about 4 characters a token."""
        if not text:
            return 0
        try:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            from litellm import token_counter

            return int(token_counter(model=model, text=text))
        except Exception:
            return max(1, len(text) // 4)

    def _rates(self, provider: str, model: str) -> tuple[float, float]:
        """USD per token, input and output, from budgetd's price book (0 when the model has no price)."""
        try:
            price = self.client.prices_get(model, provider or None).price
        except OpError as exc:
            if exc.code != "not_found":
                raise
            return 0.0, 0.0
        return price.input_per_mtok / 1e6, price.output_per_mtok / 1e6

    def calculate_cost(self, provider: str, model: str, input_text: str = "", output_text: str = "", *,
                       input_tokens: int | None = None, output_tokens: int | None = None) -> dict[str, Any]:
        tokens_in = input_tokens if input_tokens is not None else self.count_tokens(input_text, model)
        tokens_out = output_tokens if output_tokens is not None else self.count_tokens(output_text, model)
        rate_in, rate_out = self._rates(provider, model)
        input_cost, output_cost = tokens_in * rate_in, tokens_out * rate_out
        return {"input_tokens": tokens_in, "output_tokens": tokens_out, "input_cost": input_cost,
                "output_cost": output_cost, "total_cost": input_cost + output_cost}

    def estimate_cost(self, provider: str, model: str, input_text: str, estimated_output_length: int = 500
                      ) -> dict[str, Any]:
        return self.calculate_cost(provider, model, input_text, "a" * estimated_output_length)

    # -- recording -----------------------------------------------------------------------------

    def record_usage(self, provider: str, model: str, component: str, task_type: str, input_tokens: int,
                     output_tokens: int, cost: float | None = None, metadata: dict[str, Any] | None = None) -> Any:
        """Record a call with the provider's token counts; budgetd prices it (`cost` is Rhetor's own
        estimate and is not used)."""
        fields: dict[str, Any] = {"component": component or self.component, "model": model,
                                  "input_tokens": max(0, int(input_tokens)), "output_tokens": max(0, int(output_tokens))}
        if provider:
            fields["provider"] = provider
        if task_type:
            fields["task_type"] = task_type
        if metadata:
            fields["metadata"] = {str(k)[:64]: v for k, v in metadata.items()
                                  if isinstance(v, (str, int, float, bool))}
        return self.client.record(**fields)

    def record_completion(self, provider: str, model: str, input_text: str = "", output_text: str = "",
                          component: str = "unknown", task_type: str = "default",
                          metadata: dict[str, Any] | None = None, *, input_tokens: int | None = None,
                          output_tokens: int | None = None) -> dict[str, Any]:
        tokens_in = input_tokens if input_tokens is not None else self.count_tokens(input_text, model)
        tokens_out = output_tokens if output_tokens is not None else self.count_tokens(output_text, model)
        recorded = self.record_usage(provider, model, component, task_type, tokens_in, tokens_out, None, metadata)
        rate_in, rate_out = self._rates(provider, model)
        return {"provider": provider, "model": model, "component": component, "task_type": task_type,
                "timestamp": dt.datetime.now(UTC).isoformat(), "input_tokens": tokens_in,
                "output_tokens": tokens_out, "input_cost": tokens_in * rate_in, "output_cost": tokens_out * rate_out,
                "total_cost": recorded.cost_usd, "record_id": recorded.record_id}

    # -- reading -----------------------------------------------------------------------------------

    def _range(self, period: Any, start_date: dt.datetime | None, end_date: dt.datetime | None
               ) -> tuple[dt.datetime, dt.datetime]:
        now = dt.datetime.now(UTC)
        if period == "custom":
            if start_date is None:
                raise ValueError("Custom period requires start_date parameter")
            start = start_date
        else:
            start = window(BudgetPeriod(period).value, "UTC", now).start  # type: ignore[assignment]
        end = end_date or now
        return (start if start.tzinfo else start.replace(tzinfo=UTC)), (end if end.tzinfo else end.replace(tzinfo=UTC))

    def get_usage(self, period: Any = BudgetPeriod.DAILY, provider: str | None = None,
                  start_date: dt.datetime | None = None, end_date: dt.datetime | None = None) -> list[dict[str, Any]]:
        since, until = self._range(period, start_date, end_date)
        out: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.client.usage_list(filters={"provider": provider} if provider else None, since=since,
                                          until=until + dt.timedelta(microseconds=1), limit=1000, after=after)
            out += [{"id": r.record_id, "timestamp": r.ts.isoformat(), "provider": r.provider, "model": r.model,
                     "component": r.component, "task_type": r.task_type, "input_tokens": r.input_tokens,
                     "output_tokens": r.output_tokens, "cost": r.cost_usd, "metadata": r.metadata or {}}
                    for r in page.records]
            after = page.next
            if after is None:
                return out

    def get_current_usage_total(self, period: Any = BudgetPeriod.DAILY, provider: str | None = None) -> float:
        since, _ = self._range(period, None, None)
        return self.client.report(since=since, filters={"provider": provider} if provider else None).totals.cost_usd

    def get_usage_summary(self, period: Any = BudgetPeriod.DAILY, group_by: str = "provider") -> dict[str, Any]:
        since, _ = self._range(period, None, None)
        report = self.client.report([group_by], since=since)
        t = report.totals
        name = period.value if isinstance(period, Enum) else period
        if not t.requests:
            return {"period": name, "total_cost": 0.0, "total_tokens": 0, "groups": {}}
        return {
            "period": name, "total_cost": t.cost_usd, "total_input_tokens": t.input_tokens,
            "total_output_tokens": t.output_tokens, "total_tokens": t.input_tokens + t.output_tokens,
            "count": t.requests,
            "groups": {row.group.get(group_by): {"cost": row.cost_usd, "input_tokens": row.input_tokens,
                                                 "output_tokens": row.output_tokens, "count": row.requests}
                       for row in report.rows},
        }

    # -- budgets -------------------------------------------------------------------------------------

    def _spec(self, period: Any, provider: str) -> BudgetSpec | None:
        try:
            return self.client.budget_get(budget_name(BudgetPeriod(period).value, provider)).budget
        except OpError as exc:
            if exc.code == "not_found":
                return None
            raise

    def get_budget_limit(self, period: Any, provider: str = "all") -> float:
        spec = self._spec(period, provider)
        return float(spec.limit_usd or 0.0) if spec and spec.enabled else 0.0

    def set_budget_limit(self, period: Any, limit_amount: float, provider: str = "all",
                         enforcement: Any = None) -> bool:
        policy = BudgetPolicy(enforcement or self.default_policy).value
        self.client.budget_set(setting_to_spec(BudgetPeriod(period).value, provider, limit_amount, policy))
        return True

    def get_enforcement_policy(self, period: Any, provider: str = "all") -> str:
        spec = self._spec(period, provider)
        return POLICY_BACK[spec.policy] if spec else BudgetPolicy(self.default_policy).value

    def set_enforcement_policy(self, period: Any, policy: Any, provider: str = "all") -> bool:
        spec = self._spec(period, provider)
        return self.set_budget_limit(period, float(spec.limit_usd or 0.0) if spec else 0.0, provider, policy)

    def get_budget_settings(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"daily": [], "weekly": [], "monthly": []}
        for spec in self.client.budget_list():
            if spec.name.startswith("rhetor-") and spec.limit_usd is not None and spec.period in out:
                out[spec.period].append({"id": spec.name, "provider": spec.scope.provider or "all",
                                         "limit_amount": spec.limit_usd, "enforcement": POLICY_BACK[spec.policy],
                                         "start_date": None})
        return out

    def check_budget(self, provider: str, model: str, input_text: str = "", component: str = "unknown",
                     task_type: str = "default", *, input_tokens: int | None = None,
                     max_output_tokens: int | None = None) -> tuple[bool, dict[str, Any]]:
        """(allowed, details) for a request, by every budget that covers it (not only Rhetor's)."""
        tokens_in = input_tokens if input_tokens is not None else self.count_tokens(input_text, model)
        fields: dict[str, Any] = {"component": component or self.component, "model": model,
                                  "input_tokens": tokens_in, "task_type": task_type}
        if provider:
            fields["provider"] = provider
        if max_output_tokens is not None:
            fields["max_output_tokens"] = max_output_tokens
        d = self.client.check(**fields)
        info: dict[str, Any] = {"allowed": d.allowed, "estimated_cost": d.estimated_cost_usd,
                                "warnings": list(d.reasons) if d.allowed else [], "action": d.action,
                                "budgets": [{"budget": s.budget, "spent": s.spent_usd, "limit": s.limit_usd,
                                             "status": s.status} for s in d.budgets]}
        if not d.allowed:
            info["reason"] = "; ".join(d.reasons)
        if d.suggestion is not None:
            info["suggestion"] = {"provider": d.suggestion.provider, "model": d.suggestion.model}
        return d.allowed, info

    def find_cheaper_alternative(self, provider: str, model: str, task_type: str = "default",
                                 component: str | None = None, input_tokens: int = 1000) -> tuple[str, str] | None:
        """The cheapest model with the same capabilities that fits the budgets (budgetd's routing)."""
        result = self.client.route(component=component or self.component, model=model, provider=provider or None,
                                   input_tokens=input_tokens, task_type=task_type)
        requested = next((a for a in result.alternatives if a.why.startswith("the requested model")), None)
        ceiling = requested.estimated_cost_usd if requested is not None else float("inf")
        cheaper = [a for a in result.alternatives if a.fits and a is not requested and a.estimated_cost_usd < ceiling]
        if not cheaper:
            return None
        best = min(cheaper, key=lambda a: (a.estimated_cost_usd, a.model))
        return self.client.prices_get(best.model).price.provider or provider, best.model

    def route_with_budget_awareness(self, input_text: str, task_type: str, default_provider: str,
                                    default_model: str, component: str = "unknown", *,
                                    input_tokens: int | None = None) -> tuple[str, str, list[str]]:
        """(provider, model, warnings): the default model when it fits, else what budgetd's routing picks."""
        tokens_in = input_tokens if input_tokens is not None else self.count_tokens(input_text, default_model)
        allowed, info = self.check_budget(default_provider, default_model, component=component,
                                          task_type=task_type, input_tokens=tokens_in)
        if allowed:
            return default_provider, default_model, info["warnings"]
        result = self.client.route(component=component or self.component, model=default_model,
                                   provider=default_provider or None, input_tokens=tokens_in, task_type=task_type)
        if result.choice is not None:
            provider = self.client.prices_get(result.choice).price.provider or default_provider
            return provider, result.choice, [
                f"Budget limit exceeded. Downgraded from {default_provider}/{default_model} to {provider}/{result.choice}"]
        return default_provider, default_model, [f"Budget limit exceeded and no model fits: {info.get('reason', '')}"]
