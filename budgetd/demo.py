"""`budget demo`: realistic synthetic traffic against a running daemon, to watch the dashboard move.

Several components with their own habits: models of every tier, prompt-cache
hits, some calls reserved before and committed after, and a demo budget sized
so that the traffic crosses its warning thresholds and then its limit.
"""

import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from budgetd.client import SyncBudgetClient
from budgetd.protocol import OpError


@dataclass(frozen=True)
class Habit:
    component: str
    models: tuple[str, ...]  # lightweight first
    task_types: tuple[str, ...]
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    cache_share: float  # part of the prompt served from cache, when it is
    reserves: bool  # asks before it spends


HABITS = [
    Habit("rhetor", ("gpt-4o-mini", "gpt-4o"), ("chat", "summarise"), (800, 6000), (100, 900), 0.6, True),
    Habit("apollo", ("claude-haiku-4-5", "claude-sonnet-4-5"), ("plan", "predict"), (2000, 20000), (200, 1500),
          0.8, True),
    Habit("athena", ("gpt-4o-mini",), ("extract",), (500, 3000), (50, 300), 0.0, False),
    Habit("sophia", ("claude-sonnet-4-5", "claude-opus-4-5"), ("research",), (4000, 30000), (500, 4000), 0.5,
          True),
    Habit("ergon", ("gpt-4o-mini", "gpt-4o", "o3"), ("code", "review"), (1000, 12000), (200, 3000), 0.3, False),
]
DEMO_BUDGET = "demo-hourly"
WEIGHTS = [6, 3, 1]


def run(client: SyncBudgetClient, rate: float, duration: float, seed: int | None = None,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Send about `rate` calls a second for `duration` seconds; returns what was sent."""
    rng = random.Random(seed)
    per_call = _average_cost(client)
    # Sized to be crossed: the whole demo spends about 1.5 times the limit.
    limit = round(max(0.01, per_call * rate * duration / 1.5), 4)
    client.budget_set(name=DEMO_BUDGET, period="hourly", limit_usd=limit, policy="soft",
                      thresholds=[0.5, 0.8, 1.0], description="made by `budget demo`; delete it when done")
    say(f"demo: ~{rate:g} calls/s for {duration:g}s from {len(HABITS)} components; "
        f"budget {DEMO_BUDGET} = ${limit:g} this hour (soft: downgrades once spent)")
    sent = {"records": 0, "reserved": 0, "denied": 0, "cost_usd": 0.0}
    started = time.monotonic()
    next_at = started
    while time.monotonic() - started < duration:
        habit = rng.choice(HABITS)
        model = _pick(rng, habit.models)
        tokens_in = rng.randint(*habit.input_tokens)
        cached = int(tokens_in * habit.cache_share) if rng.random() < 0.7 else 0
        usage = {
            "component": habit.component, "model": model, "input_tokens": tokens_in - cached,
            "output_tokens": rng.randint(*habit.output_tokens), "cache_read_tokens": cached,
            "task_type": rng.choice(habit.task_types), "context_id": f"{habit.component}-{rng.randrange(20)}",
        }
        try:
            if habit.reserves:
                hold = client.reserve(component=habit.component, model=model, input_tokens=tokens_in,
                                      max_output_tokens=habit.output_tokens[1], task_type=usage["task_type"])
                if not hold.allowed:
                    sent["denied"] += 1
                    continue
                if hold.action == "downgrade" and hold.suggestion is not None:
                    usage["model"] = hold.suggestion.model  # as a well-behaved component would
                recorded = client.commit(hold.reservation_id, **usage)
                sent["reserved"] += 1
            else:
                recorded = client.record(**usage)
        except OpError as exc:
            say(f"demo: {exc.code}: {exc.message}")
            continue
        sent["records"] += 1
        sent["cost_usd"] += recorded.cost_usd
        next_at += rng.expovariate(rate) if rate > 0 else 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    say(f"demo: {sent['records']} calls ({sent['reserved']} reserved first, {sent['denied']} denied), "
        f"${sent['cost_usd']:.4f}")
    return sent


def _pick(rng: random.Random, models: tuple[str, ...]) -> str:
    """Cheaper models more often."""
    return rng.choices(models, weights=WEIGHTS[: len(models)])[0]


def _average_cost(client: SyncBudgetClient) -> float:
    """What a demo call costs on average, from `check` estimates of a few samples."""
    per_habit = []
    for habit in HABITS:
        weights = WEIGHTS[: len(habit.models)]
        cost = 0.0
        for model, weight in zip(habit.models, weights):
            d = client.check(component=habit.component, model=model, input_tokens=sum(habit.input_tokens) // 2,
                             max_output_tokens=sum(habit.output_tokens) // 2)
            cost += d.estimated_cost_usd * weight / sum(weights)
        per_habit.append(cost)
    return sum(per_habit) / len(per_habit)

