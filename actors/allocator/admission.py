"""Admission: an estimate priced and weighed against every matching budget. Pure CPU on the
allocator's state: nothing here awaits, so check-then-reserve is atomic without locks."""

import datetime as dt
from dataclasses import dataclass
from typing import Any, NamedTuple

from actors.allocator.budgets import Attrs, Budget, Budgets, Counter, describe_key, money
from budgetd.clock import Clock
from budgetd.model import ACTION_RANK, BudgetState, Decision, Estimate, PriceEntry, Suggestion, nanos, usd
from budgetd.periods import to_us
from budgetd.pricing import Billed, PriceBook, TierRules, UnpricedPolicy, price_call
from budgetd.protocol import OpError


@dataclass(frozen=True)
class AdmissionRules:
    default_output_tokens: int = 4096
    default_ttl_s: float = 300.0
    max_reservation_usd: float | None = None
    max_clock_skew_s: float = 300.0  # how far ahead of the daemon's clock a call's `ts` may be
    max_open_holds: int = 100_000  # open reservations, overall and per component: memory stays bounded
    max_holds_per_component: int = 10_000
    max_counters_per_budget: int = 100_000


EARLIEST_CALL_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z


def call_time(ts: dt.datetime | None, now_us: int, skew_s: float) -> int:
    """When a call happened (µs): its `ts`, or now; `invalid` when it is before 2000 or later than now
    plus the allowed clock skew (a ledger has no use for it, and windows of year 9999 do not exist)."""
    if ts is None:
        return now_us
    try:
        us = to_us(ts)
    except OverflowError:
        us = -1
    if us < EARLIEST_CALL_US:
        raise OpError("invalid", f"ts {ts.isoformat()} is before 2000-01-01; send the time the call started",
                      "$.usage.ts")
    if us > now_us + int(skew_s * 1e6):
        raise OpError("invalid", f"ts {ts.isoformat()} is later than the daemon's clock allows (now plus "
                      f"{skew_s:g}s, admission.max_clock_skew); send the time the call started", "$.usage.ts")
    return us


class PricedEstimate(NamedTuple):
    attrs: Attrs  # what budget scopes match on (model is the resolved price key)
    entry: PriceEntry | None
    cost_nanos: int
    tokens: int  # input + cache read + output at most
    max_output_tokens: int


class Match(NamedTuple):
    """A budget that covers the request, with its counter in the current window."""

    budget: Budget
    key: tuple[str, ...]
    window: Any
    counter: Counter


@dataclass
class Assessment:
    """An estimate weighed against every matching budget (nothing held yet)."""

    action: str
    reasons: list[str]
    matches: list[Match]
    cost_nanos: int
    tokens: int
    entry: PriceEntry | None
    attrs: Attrs
    did_you_mean: list[str]  # when the model has no price: priced names close to it


class Admission:
    """Prices estimates with the current book and weighs them against the budgets it is given."""

    def __init__(self, budgets: Budgets, tiers: TierRules, unpriced: UnpricedPolicy,
                 rules: AdmissionRules, clock: Clock) -> None:
        self.budgets = budgets  # the allocator's own dict: budgets set later are seen here
        self.book = PriceBook([])
        self.tiers = tiers
        self.unpriced = unpriced
        self.rules = rules
        self.clock = clock

    def output_of(self, est: Estimate, entry: PriceEntry | None) -> int:
        """The output an estimate is priced at: its own most, else the default capped by the model's."""
        if est.max_output_tokens is not None:
            return est.max_output_tokens
        model_max = entry.max_output_tokens if entry is not None else None
        return min(model_max or self.rules.default_output_tokens, self.rules.default_output_tokens)

    @staticmethod
    def billed(est: Estimate, output_tokens: int) -> Billed:
        """What an estimate would be billed for, with this much output."""
        return Billed(est.input_tokens, output_tokens, est.cache_read_tokens or 0, est.cache_write_tokens,
                      est.cache_write_1h_tokens, audio_input=est.audio_input_tokens,
                      web_searches=est.web_search_requests, service_tier=est.service_tier)

    def priced(self, est: Estimate) -> PricedEstimate:
        resolved = self.book.resolve(est.model, est.provider)
        entry = resolved.entry if resolved is not None else None
        max_out = self.output_of(est, entry)
        billed = self.billed(est, max_out)
        priced = price_call(self.book, self.unpriced, self.tiers, est.model, est.provider, est.tier, billed,
                            self.clock.now_us())
        attrs: Attrs = {
            "component": est.component, "model": priced.model, "provider": priced.provider,
            "tier": priced.tier, "context_id": est.context_id, "task_type": est.task_type,
        }
        return PricedEstimate(attrs, entry, priced.cost_nanos, billed.tokens, max_out)

    def assess(self, est: Estimate, for_hold: bool = False) -> Assessment:
        p = self.priced(est)
        return self.weigh(est, p, for_hold)

    def weigh(self, est: Estimate, p: PricedEstimate, for_hold: bool) -> Assessment:
        """Every matching budget's verdict on `p`. `for_hold` keeps the counters it finds (a reserve
        charges them next); a check only peeks."""
        now = self.clock.now_us()
        action = "allow"
        reasons: list[str] = []
        matches = []
        cost, tokens = p.cost_nanos, p.tokens
        close = self.book.did_you_mean(est.model, est.provider) if p.entry is None else []
        if p.entry is None:
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            if self.unpriced.mode == "deny":
                action = "deny"
                reasons.append(f"model {est.model!r} has no price and pricing.unknown_model is 'deny'{hint}")
            else:
                rate = ("counted as free" if self.unpriced.mode == "zero" else
                        f"estimated at the fallback rates (${self.unpriced.fallback_input_per_mtok:g}/M in, "
                        f"${self.unpriced.fallback_output_per_mtok:g}/M out)")
                reasons.append(f"model {est.model!r} has no price: {rate}{hint}")
        cap = self.rules.max_reservation_usd
        if for_hold and cap is not None and cost > nanos(cap):
            action = "deny"
            reasons.append(f"estimate {money(cost)} is above admission.max_reservation_usd ({money(nanos(cap))})")
        for budget, key in self.budgets.matching(p.attrs):
            win = budget.window_at(now)
            counter = budget.counter(key, win) if for_hold else budget.peek(key, win)
            matches.append(Match(budget, key, win, counter))
            if budget.fits(counter, cost, tokens):
                continue
            verdict, reason = over(budget, key, counter, cost, tokens, est.priority)
            reasons.append(reason)
            if ACTION_RANK[verdict] > ACTION_RANK[action]:
                action = verdict
        return Assessment(action, reasons, matches, cost, tokens, p.entry, p.attrs, close)

    def allows(self, attrs: Attrs, cost: int, tokens: int, priority: int) -> bool:
        """Whether every budget lets a request with these attributes through without a denial or a
        downgrade: `weigh`'s verdict without its reasons (a suggestion asks this of many models)."""
        now = self.clock.now_us()
        for budget, key in self.budgets.covering(attrs):
            if not budget.fits(budget.peek(key, budget.window_at(now)), cost, tokens) and \
                    verdict(budget, priority) in ("deny", "downgrade"):
                return False
        return True


def over(budget: Budget, key: tuple[str, ...], counter: Counter, cost: int, tokens: int,
         priority: int) -> tuple[str, str]:
    """What `budget`'s policy says of a request that does not fit: (action, reason)."""
    policy = budget.spec.policy
    where = f" ({describe_key(budget, key)})" if key else ""
    parts = []
    if budget.limit_nanos is not None and counter.spent_nanos + counter.reserved_nanos + cost > budget.limit_nanos:
        parts.append(f"{money(counter.spent_nanos)} spent + {money(counter.reserved_nanos)} reserved + "
                     f"{money(cost)} estimated > {money(budget.limit_nanos)}")
    limit_tokens = budget.spec.limit_tokens
    if limit_tokens is not None and counter.spent_tokens + counter.reserved_tokens + tokens > limit_tokens:
        parts.append(f"{counter.spent_tokens:,} + {counter.reserved_tokens:,} reserved + {tokens:,} estimated "
                     f"tokens > {limit_tokens:,}")
    text = f"budget {budget.name}{where}: {'; '.join(parts)} ({policy})"
    action = verdict(budget, priority)
    if action == "warn" and policy == "hard":
        text += "; critical request bypasses the hard limit"
    return action, text


def verdict(budget: Budget, priority: int) -> str:
    """What `budget`'s policy does with a request that does not fit."""
    policy = budget.spec.policy
    if policy == "ignore":
        return "allow"
    if policy == "warn":
        return "warn"
    if policy == "soft":
        return "downgrade"
    if priority >= 10 and budget.spec.critical_bypass:
        return "warn"
    return "deny"


def decision(a: Assessment, action: str, suggestion: Suggestion | None = None,
             budgets: list[BudgetState] | None = None, **hold: Any) -> Decision:
    """The Decision, with every matching budget's state as it is now (or `budgets`, a list its caller fills
    with them later)."""
    return Decision(
        allowed=action != "deny",
        action=action,  # type: ignore[arg-type]
        estimated_cost_usd=usd(a.cost_nanos),
        estimated_tokens=a.tokens,
        reasons=a.reasons,
        budgets=states(a) if budgets is None else budgets,
        suggestion=suggestion,
        priced=a.entry is not None,
        did_you_mean=a.did_you_mean,
        **hold,
    )


def states(a: Assessment) -> list[BudgetState]:
    return [m.budget.state(m.key, m.window, m.counter) for m in a.matches]
