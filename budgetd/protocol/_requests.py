"""Every op of protocol v1, declared once: its request Struct, what it answers, the least role it
needs over HTTP, and how the daemon serves it. The unions, both doors' routing, the HTTP role table,
metrics, OpenAPI and `hello`'s list of ops all derive from these declarations.

How an op is served:
- `immediate`: answered by the door itself, nothing awaited;
- `tell`: told to the one actor that answers it (the door's reply slot travels with the message);
- `ask`: a handler that asks one or more actors and awaits them;
- `stream`: answered, then events follow on the same connection (the socket only).
"""

from typing import Annotated, Any, Callable, ClassVar, Literal, TypeVar

import msgspec
from msgspec import Meta

from budgetd.model import (
    Bucket,
    BudgetSpec,
    Decision,
    Dim,
    Estimate,
    Filters,
    Id,
    Label,
    Name,
    Need,
    PriceSpec,
    Recorded,
    ReportOrder,
    Struct,
    Topic,
    Usage,
    UsagePatch,
    When,
)
from budgetd.protocol._results import (
    Acked,
    AlertListResult,
    AskResult,
    BackupResult,
    BudgetGetResult,
    BudgetListResult,
    BudgetResult,
    Deleted,
    Empty,
    FleetStatusResult,
    HelloResult,
    PriceHistoryResult,
    PriceListResult,
    PriceResult,
    PriceUnsetResult,
    RefreshReport,
    Released,
    ReportResult,
    RouteResult,
    StatusResult,
    Subscribed,
    UsageListResult,
)

Role = Literal["read", "write", "admin"]
ROLES: tuple[str, ...] = ("read", "write", "admin")  # each may do what the ones before it may
Serve = Literal["immediate", "tell", "ask", "stream"]

RequestId = int | Annotated[str, Meta(max_length=128)] | None
IdempotencyKey = Name  # the same rules: 1 to 128 characters, no control character
ReservationId = Name
MAX_LEASE_CALLS = 1000  # holds one reserve may open (and one release close)


class Request(Struct, tag_field="op", kw_only=True):
    """A request; its class says what the op answers (`result`), the role it needs and how it is served."""

    result: ClassVar[Any]
    role: ClassVar[Role]
    serve: ClassVar[Serve]
    id: RequestId = None


#: Every op by name, in the order they are declared.
OPS: dict[str, type[Request]] = {}
R = TypeVar("R", bound=type[Request])


def op(result: Any, role: Role, serve: Serve) -> Callable[[R], R]:
    """Declare an op: its request type (the decorated class), its result type, role and way of serving."""

    def declare(request_type: R) -> R:
        request_type.result, request_type.role, request_type.serve = result, role, serve
        OPS[request_type.__struct_config__.tag] = request_type  # type: ignore[index]
        return request_type

    return declare


@op(HelloResult, "read", "immediate")
class Hello(Request, tag="hello", kw_only=True):
    client: Label | None = None
    protocol: int | None = None


@op(Empty, "read", "immediate")
class Ping(Request, tag="ping", kw_only=True):
    pass


@op(Decision, "read", "tell")
class Check(Request, tag="check", kw_only=True):
    estimate: Estimate


@op(Decision, "write", "tell")
class Reserve(Request, tag="reserve", kw_only=True):
    estimate: Estimate
    ttl_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    idempotency_key: IdempotencyKey | None = None
    # Several calls of this estimate at once (a lease a client admits its own calls against): as many
    # as fit, up to this many, each its own hold.
    calls: Annotated[int, Meta(ge=1, le=MAX_LEASE_CALLS)] = 1


@op(Recorded, "write", "tell")
class Commit(Request, tag="commit", kw_only=True):
    reservation_id: ReservationId
    usage: UsagePatch
    idempotency_key: IdempotencyKey | None = None


@op(Released, "write", "tell")
class Release(Request, tag="release", kw_only=True):
    reservation_id: ReservationId | None = None
    # Several at once (what a lease did not use); exactly one of the two is given.
    reservation_ids: Annotated[list[ReservationId], Meta(max_length=MAX_LEASE_CALLS)] = []


@op(Recorded, "write", "tell")
class Record(Request, tag="record", kw_only=True):
    usage: Usage
    idempotency_key: IdempotencyKey | None = None


@op(BudgetResult, "admin", "ask")
class BudgetSet(Request, tag="budget.set", kw_only=True):
    budget: BudgetSpec


@op(BudgetGetResult, "read", "ask")
class BudgetGet(Request, tag="budget.get", kw_only=True):
    name: Name
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000  # states (keys) per page, by key
    after: Annotated[str, Meta(max_length=4096)] | None = None  # the `next` of an earlier page


@op(BudgetListResult, "read", "ask")
class BudgetList(Request, tag="budget.list", kw_only=True):
    pass


@op(Deleted, "admin", "ask")
class BudgetDelete(Request, tag="budget.delete", kw_only=True):
    name: Name


@op(StatusResult, "read", "ask")
class Status(Request, tag="status", kw_only=True):
    states_per_budget: Annotated[int, Meta(ge=1, le=10_000)] = 100  # the most used keys of each budget


@op(FleetStatusResult, "read", "ask")
class FleetStatus(Request, tag="fleet.status", kw_only=True):
    """The nodes sharing this daemon's fleet database: their heartbeats and open reservations."""


@op(ReportResult, "read", "ask")
class Report(Request, tag="report", kw_only=True):
    group_by: Annotated[list[Dim], Meta(max_length=6)] = msgspec.field(default_factory=list)
    since: When | None = None  # RFC 3339, a date (midnight in `timezone`), or a duration back (7d)
    until: When | None = None
    bucket: Bucket | None = None
    timezone: Annotated[str, Meta(max_length=64)] = "UTC"
    filters: Filters | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    order: ReportOrder = "cost"


@op(UsageListResult, "read", "ask")
class UsageList(Request, tag="usage.list", kw_only=True):
    filters: Filters | None = None
    since: When | None = None  # RFC 3339, a date (midnight UTC), or a duration back (7d)
    until: When | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    after: Annotated[str, Meta(max_length=64)] | None = None  # the `next` of an earlier page


@op(PriceResult, "read", "ask")
class PricesGet(Request, tag="prices.get", kw_only=True):
    model: Name
    provider: Name | None = None


@op(PriceListResult, "read", "ask")
class PricesList(Request, tag="prices.list", kw_only=True):
    provider: Name | None = None
    search: Annotated[str, Meta(max_length=128)] | None = None
    limit: Annotated[int, Meta(ge=1, le=100_000)] | None = None


@op(RefreshReport, "admin", "ask")
class PricesRefresh(Request, tag="prices.refresh", kw_only=True):
    pass


#: What `prices.set` takes: a PriceEntry of which only model and the two main rates are required.
PriceOverride = PriceSpec


@op(PriceResult, "admin", "ask")
class PricesSet(Request, tag="prices.set", kw_only=True):
    price: PriceOverride


@op(PriceUnsetResult, "admin", "ask")
class PricesUnset(Request, tag="prices.unset", kw_only=True):
    model: Name


@op(PriceHistoryResult, "read", "ask")
class PricesHistory(Request, tag="prices.history", kw_only=True):
    model: Name


@op(RouteResult, "read", "tell")
class Route(Request, tag="route", kw_only=True):
    estimate: Estimate
    candidates: Annotated[list[Name], Meta(max_length=256)] | None = None
    # What the model must do: a Need, or just its capabilities (["vision", "tools"]).
    need: Need | Annotated[list[Name], Meta(max_length=64)] | None = None


@op(AlertListResult, "read", "ask")
class AlertsList(Request, tag="alerts.list", kw_only=True):
    since: When | None = None
    unacked: bool = False
    limit: Annotated[int, Meta(ge=1, le=10_000)] | None = None


@op(Acked, "write", "ask")
class AlertsAck(Request, tag="alerts.ack", kw_only=True):
    alert_id: Id
    by: Label | None = None


@op(Subscribed, "read", "stream")
class Subscribe(Request, tag="subscribe", kw_only=True):
    topics: Annotated[list[Topic], Meta(min_length=1, max_length=5)]
    after: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None  # resume after this seq (recent events only)


@op(AskResult, "write", "ask")
class Ask(Request, tag="ask", kw_only=True):
    question: Annotated[str, Meta(min_length=1, max_length=4000)]


@op(BackupResult, "admin", "ask")
class Backup(Request, tag="backup", kw_only=True):
    """An online, consistent copy of the ledger, written by the daemon to `path` (absolute, on its machine,
    outside its data directory); an existing file is replaced only with `force`."""

    path: Annotated[str, Meta(min_length=1, max_length=4096)]
    force: bool = False


REQUEST_TYPES: tuple[type[Request], ...] = tuple(OPS.values())
RESULT_TYPES: dict[type[Request], Any] = {t: t.result for t in REQUEST_TYPES}


def commit_key(reservation_id: str) -> str:
    """The idempotency key of a commit that names none: its reservation's, so a commit retried (by a
    client, or after a restart) is charged once."""
    return f"commit:{reservation_id}"


def op_name(request_type: type[Request]) -> str:
    return request_type.__struct_config__.tag  # type: ignore[return-value]
