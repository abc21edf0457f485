"""What the allocator tells the bus about budgets: thresholds crossed, limits exceeded, denials and
critical bypasses, projected exhaustion and anomalies from burn rates, unpriced models. The alerter
turns these events into alerts (and is the guarantee of once-only across restarts)."""

import datetime as dt
import logging
from typing import Any

from actors.allocator.budgets import Budget, Counter
from actors.allocator.forecast import Burn
from actors.bus import Publish
from budgetd.clock import Clock
from budgetd.model import BudgetState, Decision, Estimate
from budgetd.periods import HOUR_US, from_us
from budgetd.protocol import OpError

log = logging.getLogger("budgetd.allocator")
MAX_REMEMBERED = 100_000


class Signals:
    def __init__(self, bus: Any, anomaly_factor: float, clock: Clock) -> None:
        self.bus = bus
        self.anomaly_factor = anomaly_factor
        self.clock = clock
        self.burn: dict[tuple[str, tuple[str, ...]], Burn] = {}  # recent spend per (budget, key)
        self._announced: set[tuple] = set()
        self._unpriced_seen: dict[str, dt.date] = {}

    def publish(self, events: list[tuple[str, Any]]) -> None:
        if self.bus is not None and events:
            try:
                self.bus.tell(Publish(events=events))
            except OpError:
                pass  # a full bus drops events, never decisions

    def spent(self, budget: Budget, key: tuple[str, ...], ts_us: int, cost: int, tokens: int) -> None:
        """A record was charged to `budget`'s counter of `key`: its spend counts in the burn rate."""
        if self.bus is None or budget.limit_nanos is None and budget.limit_tokens is None:
            return
        burn = self.burn.get((budget.name, key))
        if burn is None:
            burn = self.burn[(budget.name, key)] = Burn(ts_us // Burn.BUCKET_US, self.clock.now_us())
        burn.add(ts_us, cost, tokens)

    def charged(self, budget: Budget, key: tuple[str, ...], state: BudgetState, before: float, win: Any,
                counter: Counter, latest_us: int) -> None:
        """Records were charged to `budget`'s counter (its used fraction went from `before` to `state`'s, the
        latest of them made at `latest_us`): thresholds and burn-rate rules."""
        if self.bus is None:
            return
        self._crossings(budget, state, before)
        self._trend(budget, key, state, win, counter, latest_us)

    def _crossings(self, budget: Budget, state: BudgetState, before: float) -> None:
        """`budget.threshold` for every threshold these charges crossed, `budget.exceeded` at the limit."""
        after = state.used_fraction
        if after <= before:
            return
        crossed = [t for t in budget.spec.thresholds if before < t <= after]
        events = [("budget.threshold", budget_event(state, threshold=t)) for t in crossed]
        if before < 1.0 <= after:
            events.append(("budget.exceeded", budget_event(state)))
        self.publish(events)

    def _trend(self, budget: Budget, key: tuple[str, ...], state: BudgetState, win: Any, counter: Counter,
               ts_us: int) -> None:
        """Burn-rate rules on the spend of the hour before now (by the daemon's clock and the records' own
        timestamps): `budget.projected_exhaustion` when that rate reaches the limit before the current window
        ends, `budget.anomaly` when it is over `anomaly_factor` times the hourly average of the day before.
        They judge only the current window, from records of its last hour: a back-dated record (an import of
        yesterday's rows) is counted, but says nothing about where this window is heading."""
        burn = self.burn.get((budget.name, key))
        if burn is None:
            return  # a budget without a limit has no burn rate to judge
        now = self.clock.now_us()
        current = win.end_us is None or win.start_us <= now < win.end_us
        if not current or ts_us <= now - HOUR_US:
            return
        use_dollars = budget.limit_nanos is not None
        last_hour = burn.last_hour_at(now)
        rate = last_hour[0] if use_dollars else last_hour[1]  # per hour
        events = []
        if win.end_us is not None and state.used_fraction < 1.0 and rate > 0:
            limit = budget.limit_nanos if use_dollars else budget.limit_tokens
            now_spent = counter.spent_nanos if use_dollars else counter.spent_tokens
            hours_left = (win.end_us - now) / HOUR_US
            once = ("projected", budget.name, key, state.window_start)
            if now_spent + rate * hours_left > limit and once not in self._announced:  # type: ignore[operator]
                self._remember(once)
                reach = now + int((limit - now_spent) / rate * HOUR_US)  # type: ignore[operator]
                events.append(("budget.projected_exhaustion", budget_event(
                    state, burn_per_hour=rate / 1e9 if use_dollars else rate, projected_at=from_us(reach),
                    rate_basis="last_hour")))
        if burn.day_of_history():  # about a day of history to compare with
            average = (burn.before[0] if use_dollars else burn.before[1]) / 24
            hour = now // HOUR_US
            once = ("anomaly", budget.name, key, hour)
            if average > 0 and rate > self.anomaly_factor * average and once not in self._announced:
                self._remember(once)
                events.append(("budget.anomaly", budget_event(
                    state, last_hour=rate / 1e9 if use_dollars else rate,
                    hourly_average=average / 1e9 if use_dollars else average, factor=self.anomaly_factor,
                    hour=hour)))
        self.publish(events)

    def decided(self, est: Estimate, decision: Decision) -> None:
        """`budget.denied` for each hard budget that refused, `budget.critical_bypass` for each one passed."""
        if self.bus is None or decision.action not in ("deny", "warn") or est.priority < 10 and decision.allowed:
            return
        events = []
        for state in decision.budgets:
            if state.policy != "hard" or state.limit_usd is None and state.limit_tokens is None:
                continue
            over = [r for r in decision.reasons if r.startswith(f"budget {state.budget}")]
            if not over:
                continue
            kind = "budget.denied" if not decision.allowed else "budget.critical_bypass"
            if kind == "budget.critical_bypass" and "bypass" not in over[0]:
                continue
            events.append((kind, budget_event(state, component=est.component, model=est.model,
                                              estimated_cost_usd=decision.estimated_cost_usd, reason=over[0])))
        self.publish(events)

    def unpriced(self, model: str, policy: str) -> None:
        """A model with no price was charged: logged and announced once a day."""
        today = self.clock.now().date()
        if self._unpriced_seen.get(model) == today:
            return
        if len(self._unpriced_seen) > 10_000:
            self._unpriced_seen.clear()
        self._unpriced_seen[model] = today
        log.warning("model %r has no price; charged by pricing.unknown_model=%s. Set one with `budget prices set`.",
                    model, policy)
        self.publish([("price.unpriced_model", {"model": model, "policy": policy, "date": today.isoformat()})])

    def prune(self, now_us: int) -> None:
        for slot in [k for k, burn in self.burn.items() if burn.stale(now_us)]:
            del self.burn[slot]

    def _remember(self, once: tuple) -> None:
        """What the burn-rate rules announced, so each fires once per window (or hour) without a ledger trip;
        the alerter's dedupe keys stay the guarantee across restarts."""
        if len(self._announced) > MAX_REMEMBERED:
            self._announced.clear()
        self._announced.add(once)


def budget_event(state: BudgetState, **extra: Any) -> dict[str, Any]:
    return {"budget": state.budget, "key": state.key, "window_start": state.window_start,
            "window_end": state.window_end, "spent_usd": state.spent_usd, "spent_tokens": state.spent_tokens,
            "limit_usd": state.limit_usd, "limit_tokens": state.limit_tokens,
            "used_fraction": state.used_fraction, "policy": state.policy, **extra}
