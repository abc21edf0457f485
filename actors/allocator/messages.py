"""The allocator's inbox: admission, recording, budgets and routing. Callers import these, never the
actor. Every message with a `reply` is answered there; its docstring says with what."""

import msgspec

from actors.runtime import ReplyTo
from budgetd.model import BudgetSpec, Estimate, Need, Usage, UsagePatch


class RecordUsage(msgspec.Struct, frozen=True):
    """Price, charge every matching budget and write; answer (from the ledger): `Recorded`."""

    usage: Usage
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo


class CheckMsg(msgspec.Struct, frozen=True):
    """Answer: the `Decision`, nothing held."""

    estimate: Estimate
    reply: ReplyTo


class ReserveMsg(msgspec.Struct, frozen=True):
    """Answer: the `Decision`, with `reservation_id` and `expires_at` when allowed (the estimate is held);
    for several `calls`, one hold per call that fits, all in `reservation_ids`."""

    estimate: Estimate
    ttl_s: float | None
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo
    calls: int = 1


class CommitMsg(msgspec.Struct, frozen=True):
    """Replace a hold with the actual usage, in one transaction; answer (from the ledger): `Recorded`.
    `components`: the components the caller may spend for (None: any), checked against the hold's."""

    reservation_id: str
    usage: UsagePatch
    idempotency_key: str
    payload_hash: bytes
    reply: ReplyTo
    components: frozenset[str] | None = None


class ReleaseMsg(msgspec.Struct, frozen=True):
    """Drop holds; answer: `Released`, how many were open (once their close is committed). `components`
    as above."""

    reservation_ids: list[str]
    reply: ReplyTo
    components: frozenset[str] | None = None


class BudgetSetMsg(msgspec.Struct, frozen=True):
    """Create or replace; answer: the spec, once stored."""

    spec: BudgetSpec
    reply: ReplyTo


class BudgetGetMsg(msgspec.Struct, frozen=True):
    """Answer: `BudgetGetResult` (the spec and a page of its states in the current window, by key)."""

    name: str
    reply: ReplyTo
    limit: int = 1000
    after: tuple[str, ...] | None = None


class BudgetListMsg(msgspec.Struct, frozen=True):
    """Answer: [BudgetSpec] by name."""

    reply: ReplyTo


class BudgetDeleteMsg(msgspec.Struct, frozen=True):
    """Answer: True when it existed."""

    name: str
    reply: ReplyTo


class StatesMsg(msgspec.Struct, frozen=True):
    """Answer: `BudgetsNow`: each budget's states in its current window (at most `per_budget`, the most
    used), their forecasts, and how many states were left out."""

    reply: ReplyTo
    per_budget: int = 100


class ForecastsMsg(msgspec.Struct, frozen=True):
    """Answer: a Forecast for each budget with a limit, in its current window (its `per_budget` most
    used keys)."""

    reply: ReplyTo
    per_budget: int = 100


class BudgetsNow(msgspec.Struct, frozen=True):
    states: list
    forecasts: list
    omitted: int


class CountHolds(msgspec.Struct, frozen=True):
    """Answer: how many holds are open."""

    reply: ReplyTo


class ModelKeyMsg(msgspec.Struct, frozen=True):
    """Answer: the key records of model `name` are stored under, as a budget scope resolves it (`name`
    itself when no price knows it)."""

    name: str
    reply: ReplyTo


class RouteMsg(msgspec.Struct, frozen=True):
    """Answer: `RouteResult`."""

    estimate: Estimate
    candidates: list[str] | None
    need: Need | None
    reply: ReplyTo


class FleetCount(msgspec.Struct, frozen=True):
    """What the other nodes of a fleet spent (or hold) on one budget counter; held counts have no window."""

    budget: str
    key: str  # as `actors.ledger.messages.counter_key` writes it
    window_start: int
    nanos: int
    tokens: int


class Following(msgspec.Struct, frozen=True):
    """Told by the allocator to its node's `FleetSync`: the budgets' version it binds by now. No answer."""

    budgets_version: int


class FleetView(msgspec.Struct, frozen=True):
    """What the other nodes did, as the fleet's database says now (`actors.fleet.FleetSync` tells it every
    `fleet.sync_interval`): their spend in current windows and their open holds on hard budgets, summed over
    them, the budgets' version (when it moved, the budgets are read again), and this node's holds released
    elsewhere. No answer."""

    spent: list[FleetCount]
    held: list[FleetCount]
    budgets_version: int
    released: list[str] = []  # this node's holds that another node released (the database has let them go)
