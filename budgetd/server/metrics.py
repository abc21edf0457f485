"""Request counters and latency histograms for both doors, and the Prometheus text format."""

import bisect
from typing import Any

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """Counts by (op, outcome) and a latency histogram by op. Plain dict updates: no locks needed
    on the event loop, and cheap enough for every request."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.histograms: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        key = (op, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.histograms.get(op)
        if histogram is None:
            histogram = self.histograms[op] = [0] * (len(BUCKETS) + 1)
        histogram[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[op] = self.sums.get(op, 0.0) + seconds


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def render(metrics: RequestMetrics, status: Any, holds: int) -> str:
    """Prometheus text exposition of the request metrics and a `status` snapshot."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("budgetd_requests_total", "counter", "Requests by op and outcome (ok or an error code).")
    for (op, outcome), n in sorted(metrics.counts.items()):
        out.append(f"budgetd_requests_total{_labels(op=op, outcome=outcome)} {n}")
    family("budgetd_request_seconds", "histogram", "Time from a request's arrival to its answer.")
    for op, histogram in sorted(metrics.histograms.items()):
        total = 0
        for bound, n in zip(BUCKETS, histogram):
            total += n
            out.append(f"budgetd_request_seconds_bucket{_labels(op=op, le=bound)} {total}")
        total += histogram[-1]
        out.append(f"budgetd_request_seconds_bucket{_labels(op=op, le='+Inf')} {total}")
        out.append(f"budgetd_request_seconds_sum{_labels(op=op)} {metrics.sums[op]:.6f}")
        out.append(f"budgetd_request_seconds_count{_labels(op=op)} {total}")
    totals = status.totals
    family("budgetd_records_total", "counter", "Usage records in the ledger.")
    out.append(f"budgetd_records_total {totals.requests}")
    family("budgetd_spend_usd_total", "counter", "Dollars recorded in the ledger.")
    out.append(f"budgetd_spend_usd_total {totals.cost_usd:.9f}")
    family("budgetd_tokens_total", "counter", "Tokens recorded in the ledger.")
    out.append(f"budgetd_tokens_total {totals.tokens}")
    family("budgetd_budget_spent_usd", "gauge", "Spend of each budget key in its current window.")
    family("budgetd_budget_used_fraction", "gauge", "Spent over limit, the larger of dollars and tokens.")
    for b in status.budgets:
        labels = _labels(budget=b.budget, key=",".join(f"{k}={v}" for k, v in b.key.items()))
        out.append(f"budgetd_budget_spent_usd{labels} {b.spent_usd:.9f}")
        out.append(f"budgetd_budget_used_fraction{labels} {b.used_fraction}")
    family("budgetd_reservations_open", "gauge", "Holds not yet committed, released or expired.")
    out.append(f"budgetd_reservations_open {holds}")
    family("budgetd_mailbox_depth", "gauge", "Messages waiting for each actor.")
    family("budgetd_actor_restarts_total", "counter", "Restarts of each actor after a crash.")
    for actor in status.daemon.actors:
        out.append(f"budgetd_mailbox_depth{_labels(actor=actor.name)} {actor.mailbox_depth}")
        out.append(f"budgetd_actor_restarts_total{_labels(actor=actor.name)} {actor.restarts}")
    family("budgetd_price_age_seconds", "gauge", "Seconds since each price source last answered.")
    now = status.daemon.now.timestamp()
    for source in status.prices.sources:
        if source.last_success is not None:
            age = now - source.last_success.timestamp()
            out.append(f"budgetd_price_age_seconds{_labels(source=source.source)} {age:.1f}")
    family("budgetd_price_models", "gauge", "Models in the price book.")
    out.append(f"budgetd_price_models {status.prices.models}")
    return "\n".join(out) + "\n"
