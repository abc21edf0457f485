"""`budget demo`: realistic synthetic traffic against a running daemon, to watch the dashboard move.

Several components with their own habits: models of every tier, prompt-cache
hits, some calls reserved before and committed after, and a budget of the run's
own, sized so that its traffic crosses its warning thresholds and then its limit.

The run's budget covers only the run: every call carries the run's task type
(`demo-<run>`), and the budget is scoped to it over the `total` period, so earlier
spend, other traffic and the turn of an hour leave it alone, and it downgrades no
one else's calls. It is deleted when the run ends (unless kept); the records stay
in the ledger, as every record does, under that task type.
"""

import random
import secrets
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
WEIGHTS = [6, 3, 1]


def run(client: SyncBudgetClient, rate: float, duration: float, seed: int | None = None,
        say: Callable[[str], None] = print, keep: bool = False) -> dict[str, Any]:
    """Send `rate` x `duration` calls, about `rate` a second, under a budget of the run's own (deleted at the
    end unless `keep`); returns what was sent."""
    rng = random.Random(seed)
    run_id = secrets.token_hex(3)
    tag = f"demo-{run_id}"  # the task type of the run's calls, and its budget's name and scope
    per_call = _average_cost(client)
    calls = max(1, round(rate * duration))
    # Sized to be crossed: the whole demo spends about 1.5 times the limit.
    limit = round(max(0.01, per_call * calls / 1.5), 4)
    client.budget_set(name=tag, period="total", limit_usd=limit, policy="soft", scope={"task_type": tag},
                      thresholds=[0.5, 0.8, 1.0], description="made by `budget demo` for its run")
    say(f"demo: {calls} calls at ~{rate:g}/s (about {duration:g}s) from {len(HABITS)} components, "
        f"task type {tag}; budget {tag} = ${limit:g} for the run (soft: downgrades once spent)")
    sent = {"records": 0, "reserved": 0, "denied": 0, "cost_usd": 0.0, "budget": tag}
    try:
        _send(client, rng, rate, calls, tag, sent, say)
    finally:
        if not keep:
            _remove(client, tag, say)
    say(f"demo: {sent['records']} calls ({sent['reserved']} reserved first, {sent['denied']} denied), "
        f"${sent['cost_usd']:.4f}; its records stay in the ledger under task type {tag}")
    return sent


def _remove(client: SyncBudgetClient, tag: str, say: Callable[[str], None]) -> None:
    try:
        client.budget_delete(tag)
        say(f"demo: budget {tag} deleted (keep it next time with --keep)")
    except OpError as exc:
        say(f"demo: could not delete budget {tag} ({exc.message}); delete it with `budget budgets delete {tag}`")


def _send(client: SyncBudgetClient, rng: random.Random, rate: float, calls: int, tag: str,
          sent: dict[str, Any], say: Callable[[str], None]) -> None:
    """`calls` calls paced at `rate` a second: a slow daemon makes the run longer, not thinner, so the run's
    budget is crossed all the same."""
    next_at = time.monotonic()
    for _ in range(calls):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += rng.expovariate(rate)  # paced whatever the answer, denials and errors too
        habit = rng.choice(HABITS)
        usage = call_of(rng, habit, tag)
        model, tokens_in = usage["model"], usage["input_tokens"] + usage["cache_read_tokens"]
        try:
            if habit.reserves:
                hold = client.reserve(component=habit.component, model=model, input_tokens=tokens_in,
                                      max_output_tokens=habit.output_tokens[1], task_type=tag)
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


def call_of(rng: random.Random, habit: Habit, task_type: str) -> dict[str, Any]:
    """One call of `habit`'s: a model (cheaper ones more often), its prompt with part of it read from cache
    most times, its output, and a context among twenty per task."""
    model = _pick(rng, habit.models)
    tokens_in = rng.randint(*habit.input_tokens)
    cached = int(tokens_in * habit.cache_share) if rng.random() < 0.7 else 0
    return {
        "component": habit.component, "model": model, "input_tokens": tokens_in - cached,
        "output_tokens": rng.randint(*habit.output_tokens), "cache_read_tokens": cached,
        "task_type": task_type,
        "context_id": f"{habit.component}-{rng.choice(habit.task_types)}-{rng.randrange(20)}",
    }


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

