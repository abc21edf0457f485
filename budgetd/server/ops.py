"""The one dispatch behind every front door.

A door decodes a request and hands it to `Ops.submit` (or awaits `Ops.call`), and
encodes what comes back: every declared op is served here, so a feature exists
on every door or on none.
"""

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, NamedTuple

import msgspec

import budgetd
from actors.allocator import (
    BudgetDeleteMsg,
    BudgetGetMsg,
    BudgetListMsg,
    BudgetSetMsg,
    CheckMsg,
    CommitMsg,
    CountHolds,
    ModelKeyMsg,
    ForecastsMsg,
    RecordUsage,
    ReleaseMsg,
    ReserveMsg,
    RouteMsg,
    StatesMsg,
)
from actors.bus import CountFeeds, Feed, SubscribeMsg, Unsubscribe
from actors.ledger import (
    ReportQuery,
    AckAlert,
    BackupTo,
    GetTotals,
    ListAlerts,
    ListUsage,
    RunReport,
    payload_hash,
)
from actors.prices import (
    GetHistory,
    GetPrice,
    GetPricesStatus,
    ListPrices,
    Refresh,
    SetPrice,
    UnsetPrice,
)
from actors.assistant import AskMsg
from actors.fleet import AwaitFollowers, FleetStatusMsg
from actors.runtime import Ref, Reply, ReplyTo
from budgetd.clock import SYSTEM, Clock
from budgetd.config import Config, dsn_shown
from budgetd.durations import parse_duration
from budgetd.model import DIMS, Need
from budgetd.periods import parse_when, to_us, zone
from budgetd.protocol import (
    OPS,
    PROTOCOL_VERSION,
    Acked,
    ActorStatus,
    AlertListResult,
    Ask,
    AskResult,
    Backup,
    BackupResult,
    AlertsAck,
    AlertsList,
    BudgetDelete,
    BudgetGet,
    BudgetList,
    BudgetListResult,
    BudgetResult,
    BudgetSet,
    Check,
    Commit,
    DaemonStatus,
    Deleted,
    Empty,
    FleetStatus,
    Hello,
    HelloResult,
    OpError,
    Ping,
    PricesGet,
    PricesHistory,
    PricesList,
    PricesRefresh,
    PricesSet,
    PricesUnset,
    Record,
    Release,
    Released,
    Request,
    Report,
    ReportResult,
    Reserve,
    Route,
    Status,
    StatusResult,
    Subscribe,
    Subscribed,
    UsageList,
    UsageListResult,
    commit_key,
    op_name,
)
from budgetd.server.metrics import RequestMetrics, render

Components = frozenset[str] | None


class Served(NamedTuple):
    """How the daemon serves one op (from its declaration) and the handler that does it."""

    op: str
    serve: str  # immediate | tell | ask | stream
    handler: Callable[..., Any]


class Ops:
    """The handler of every declared op, talking to the actors by message only.

    A handler is the method named after its op (`budget.set` -> `budget_set`). Its shape follows how
    the op is served: `immediate` handlers return the result, `tell` handlers take the door's reply
    slot and pass it to the actor that answers, `ask` handlers are coroutines, and the `stream`
    handler opens a feed of the bus.
    """

    def __init__(self, config: Config, refs: dict[str, Ref], socket_path: str | None,
                 clock: Clock = SYSTEM) -> None:
        self.config = config
        self.clock = clock
        self.refs = refs
        self.socket_path = socket_path
        self.timeout = config.daemon.ask_timeout_s
        self.refresh_timeout = self.timeout + (config.pricing.retries + 1) * parse_duration(
            config.pricing.fetch_timeout) + 5
        self.metrics = RequestMetrics()
        self.started_at = clock.now()
        self._started_monotonic = time.monotonic()
        self.served: dict[type[Request], Served] = {
            kind: Served(name, kind.serve, getattr(self, name.replace(".", "_"))) for name, kind in OPS.items()
        }
        self.ops = sorted(OPS)

    def submit(self, request: Request, reply: ReplyTo, spawn: Callable[..., None],
               components: Components = None) -> None:
        """Start serving `request`; its answer goes to `reply`. `spawn(fn, *args)` runs a coroutine in the
        door's task group (for ops whose handler awaits). `components`: what the caller may spend for
        (None: any). A refusal may raise OpError at once."""
        served = self.served[type(request)]
        if served.serve == "tell":
            served.handler(request, reply, components)
        elif served.serve == "immediate":
            reply.set(served.handler(request))
        elif served.serve == "ask":
            spawn(_answer, served.handler, request, reply)
        else:
            raise OpError("invalid", f"op {served.op!r} streams events; this door cannot carry it", "$.op")

    async def call(self, request: Request, components: Components = None) -> Any:
        """Serve `request` and return its result, or raise OpError."""
        served = self.served[type(request)]
        if served.serve == "ask":
            return await served.handler(request)
        reply: Reply[Any] = Reply()
        self.submit(request, reply, _no_spawn, components)
        return await reply.wait(self.timeout)

    def finished(self, op: str, outcome: str, started: float) -> None:
        """Count a request that ended (`outcome`: ok or an error code) and how long it took."""
        self.metrics.observe(op, outcome, time.perf_counter() - started)

    # -- ops ------------------------------------------------------------------

    def ping(self, _req: Ping) -> Empty:
        return Empty()

    def hello(self, req: Hello) -> HelloResult:
        if req.protocol is not None and req.protocol != PROTOCOL_VERSION:
            raise OpError(
                "invalid", f"this daemon speaks protocol {PROTOCOL_VERSION}, not {req.protocol}", "$.protocol"
            )
        return HelloResult(server="budgetd", version=budgetd.__version__, protocol=PROTOCOL_VERSION, ops=self.ops)

    # A `tell` handler gets the door's reply slot, and the components the caller may spend for (None: any;
    # the socket's file mode is its own access control, an HTTP token may be limited to some).

    def record(self, req: Record, reply: ReplyTo, components: Components = None) -> None:
        key = req.idempotency_key
        digest = payload_hash("record", req.usage) if key is not None else None
        self.refs["allocator"].tell(RecordUsage(usage=req.usage, idempotency_key=key, payload_hash=digest, reply=reply))

    def check(self, req: Check, reply: ReplyTo, components: Components = None) -> None:
        self.refs["allocator"].tell(CheckMsg(estimate=req.estimate, reply=reply))

    def reserve(self, req: Reserve, reply: ReplyTo, components: Components = None) -> None:
        key = req.idempotency_key
        asked = (req.estimate, req.ttl_s) if req.calls == 1 else (req.estimate, req.ttl_s, req.calls)
        digest = payload_hash("reserve", asked) if key is not None else None
        self.refs["allocator"].tell(ReserveMsg(estimate=req.estimate, ttl_s=req.ttl_s, idempotency_key=key,
                                               payload_hash=digest, reply=reply, calls=req.calls))

    def commit(self, req: Commit, reply: ReplyTo, components: Components = None) -> None:
        # A commit is idempotent by its reservation even when the client sends no key.
        key = req.idempotency_key or commit_key(req.reservation_id)
        digest = payload_hash("commit", (req.reservation_id, req.usage))
        self.refs["allocator"].tell(CommitMsg(reservation_id=req.reservation_id, usage=req.usage,
                                              idempotency_key=key, payload_hash=digest, reply=reply,
                                              components=components))

    def release(self, req: Release, reply: ReplyTo, components: Components = None) -> None:
        if (req.reservation_id is None) == (not req.reservation_ids):
            raise OpError("invalid", "name the holds to release: `reservation_id` or `reservation_ids` (not both)",
                          "$.reservation_id")
        ids = req.reservation_ids or [req.reservation_id]
        self.refs["allocator"].tell(ReleaseMsg(reservation_ids=ids, reply=reply, components=components))

    def route(self, req: Route, reply: ReplyTo, components: Components = None) -> None:
        need = Need(capabilities=req.need) if isinstance(req.need, list) else req.need
        self.refs["allocator"].tell(RouteMsg(estimate=req.estimate, candidates=req.candidates, need=need,
                                             reply=reply))

    async def subscribe(self, req: Subscribe) -> tuple[Subscribed, Feed]:
        """Open a feed of the bus for a door to stream; close it with `unsubscribe`."""
        topics = sorted(set(req.topics))
        feed = await self.refs["bus"].ask(
            lambda reply: SubscribeMsg(topics=topics, after=req.after, reply=reply), self.timeout
        )
        return Subscribed(subscribed=topics), feed

    def unsubscribe(self, feed: Feed) -> None:
        try:
            self.refs["bus"].tell(Unsubscribe(feed=feed))
        except OpError:
            pass  # the bus is gone: nothing to undo

    async def _allocator(self, make: Callable[[ReplyTo], Any]) -> Any:
        return await self.refs["allocator"].ask(make, self.timeout)

    async def budget_set(self, req: BudgetSet) -> BudgetResult:
        spec = await self._allocator(lambda reply: BudgetSetMsg(spec=req.budget, reply=reply))
        await self._followed()
        return BudgetResult(budget=spec)

    async def _followed(self) -> None:
        """On a fleet, a budget change is answered once every node binds by it (within a few sync intervals)."""
        fleet = self.refs.get("fleet")
        if fleet is not None:
            await fleet.ask(lambda reply: AwaitFollowers(timeout_s=5.0, reply=reply), 10.0)

    async def budget_get(self, req: BudgetGet) -> Any:
        after = None
        if req.after is not None:
            try:
                after = tuple(msgspec.json.decode(req.after, type=list[str]))
            except msgspec.MsgspecError:
                raise OpError("invalid", "`after` must be the `next` of an earlier budget.get", "$.after") from None
        return await self._allocator(lambda reply: BudgetGetMsg(name=req.name, reply=reply, limit=req.limit,
                                                                after=after))

    async def budget_list(self, _req: BudgetList) -> BudgetListResult:
        return BudgetListResult(budgets=await self._allocator(lambda reply: BudgetListMsg(reply=reply)))

    async def budget_delete(self, req: BudgetDelete) -> Deleted:
        deleted = await self._allocator(lambda reply: BudgetDeleteMsg(name=req.name, reply=reply))
        await self._followed()
        return Deleted(deleted=deleted)

    async def _filters(self, filters: Any) -> dict[str, str]:
        """The dims to keep; a model is resolved as a budget's scope is, to the key its records are under."""
        found = {d: v for d in DIMS if (v := getattr(filters, d, None)) is not None} if filters else {}
        if "model" in found:
            found["model"] = await self._allocator(lambda reply: ModelKeyMsg(name=found["model"], reply=reply))
        return found

    def _instant(self, text: str | None, field: str, zone_name: str = "UTC") -> int | None:
        return _instant(text, field, zone_name, self.clock.now())

    async def usage_list(self, req: UsageList) -> UsageListResult:
        before = None
        if req.after is not None:
            if not (req.after.isdigit() and len(req.after) <= 18):
                raise OpError("invalid", "`after` must be the `next` cursor of an earlier usage.list", "$.after")
            before = int(req.after)
        filters = await self._filters(req.filters)
        records, next_id = await self.refs["ledger-reader"].ask(
            lambda reply: ListUsage(
                reply=reply, filters=filters,
                since=self._instant(req.since, "$.since"), until=self._instant(req.until, "$.until"),
                limit=req.limit, before_id=before,
            ),
            self.timeout,
        )
        return UsageListResult(records=records, next=None if next_id is None else str(next_id))

    async def report(self, req: Report) -> ReportResult:
        try:
            zone(req.timezone)
        except ValueError as exc:
            raise OpError("invalid", str(exc), "$.timezone") from None
        if len(set(req.group_by)) != len(req.group_by):
            raise OpError("invalid", "group_by names a dim more than once", "$.group_by")
        since = self._instant(req.since, "$.since", req.timezone)
        until = self._instant(req.until, "$.until", req.timezone)
        if since is not None and until is not None and until <= since:
            raise OpError("invalid", "until must be later than since", "$.until")
        query = ReportQuery(
            group_by=tuple(req.group_by), filters=await self._filters(req.filters), since=since, until=until,
            bucket=req.bucket, zone=req.timezone, limit=req.limit, order=req.order,
        )
        rows, totals = await self.refs["ledger-reader"].ask(lambda reply: RunReport(query=query, reply=reply),
                                                            self.timeout)
        forecasts = await self._allocator(lambda reply: ForecastsMsg(reply=reply))
        return ReportResult(rows=rows, totals=totals, forecasts=forecasts)

    async def ask(self, req: Ask) -> AskResult:
        # Facts, then a model call that may take its whole timeout (with one retry).
        timeout = self.timeout * 2 + 2 * parse_duration(self.config.assistant.timeout) + 5
        return await self.refs["assistant"].ask(lambda reply: AskMsg(question=req.question, reply=reply), timeout)

    async def backup(self, req: Backup) -> BackupResult:
        dest = Path(req.path)
        if not dest.is_absolute():
            raise OpError("invalid", f"backup path {req.path!r} must be absolute (the daemon writes it)", "$.path")
        if not dest.parent.is_dir():
            raise OpError("invalid", f"directory {dest.parent} does not exist on the daemon's machine", "$.path")
        target, data = dest.resolve(), self.config.data_path.resolve()
        if target == data or data in target.parents:  # the ledger, its WAL, the lock file that keeps one writer
            raise OpError("invalid", f"a backup cannot be written inside the data directory {data}; choose a "
                          "path outside it", "$.path")
        if target.exists() and not req.force:
            raise OpError("conflict", f"{dest} exists; choose another path, or replace it with force (`budget "
                          "backup --force`)", "$.path")
        if target.exists() and not target.is_file():
            raise OpError("invalid", f"{dest} is not a file; choose a file's path", "$.path")
        started = time.monotonic()
        try:
            size, records = await self.refs["ledger-reader"].ask(
                lambda reply: BackupTo(path=str(dest), reply=reply), max(self.timeout, 600.0))
        except OSError as exc:
            raise OpError("unavailable", f"could not write {dest}: {exc.strerror or exc}", "$.path") from None
        return BackupResult(path=str(dest), bytes=size, records=records,
                            duration_s=round(time.monotonic() - started, 3))

    async def alerts_list(self, req: AlertsList) -> AlertListResult:
        alerts = await self.refs["ledger-reader"].ask(lambda reply: ListAlerts(
            since=self._instant(req.since, "$.since"), unacked=req.unacked, limit=req.limit or 100,
            reply=reply,
        ), self.timeout)
        return AlertListResult(alerts=alerts)

    async def alerts_ack(self, req: AlertsAck) -> Acked:
        acked = await self.refs["ledger"].ask(lambda reply: AckAlert(
            alert_id=req.alert_id, by=req.by, at=self.clock.now_us(), reply=reply), self.timeout)
        return Acked(acked=acked)

    async def prometheus(self) -> str:
        """The metrics page (served by the HTTP door)."""
        status = await self.status(Status())
        holds = await self._allocator(lambda reply: CountHolds(reply=reply))
        return render(self.metrics, status, holds)

    async def status(self, req: Status) -> StatusResult:
        totals = await self.refs["ledger"].ask(lambda reply: GetTotals(reply=reply), self.timeout)
        now = await self._allocator(lambda reply: StatesMsg(reply=reply, per_budget=req.states_per_budget))
        prices = await self.refs["prices"].ask(lambda reply: GetPricesStatus(reply=reply), self.timeout)
        subscriptions = await self.refs["bus"].ask(lambda reply: CountFeeds(reply=reply), self.timeout)
        actors = [
            ActorStatus(name=r.name, restarts=r.restarts, mailbox_depth=r.depth, running=r.running)
            for r in self.refs.values()
        ]
        daemon = DaemonStatus(
            version=budgetd.__version__, pid=os.getpid(), started_at=self.started_at, now=self.clock.now(),
            uptime_s=round(time.monotonic() - self._started_monotonic, 3), socket=self.socket_path,
            data_dir=str(self.config.data_path), durability=self.config.daemon.durability, actors=actors,
            subscriptions=subscriptions,
            fleet_database=dsn_shown(self.config.fleet.dsn) if self.config.fleet.dsn else None,
        )
        return StatusResult(budgets=now.states, totals=totals, daemon=daemon, prices=prices, forecasts=now.forecasts,
                            states_omitted=now.omitted)

    async def fleet_status(self, _req: FleetStatus) -> Any:
        fleet = self.refs.get("fleet")
        if fleet is None:
            raise OpError("not_found", "this daemon is a single host: it has no fleet (set fleet.dsn to a PostgreSQL "
                          "database to make it a node of one)")
        return await fleet.ask(lambda reply: FleetStatusMsg(reply=reply), self.timeout)

    async def prices_get(self, req: PricesGet) -> Any:
        return await self.refs["prices"].ask(
            lambda reply: GetPrice(model=req.model, provider=req.provider, reply=reply), self.timeout
        )

    async def _prices(self, make: Callable[[ReplyTo], Any], timeout: float | None = None) -> Any:
        return await self.refs["prices"].ask(make, timeout or self.timeout)

    async def prices_refresh(self, _req: PricesRefresh) -> Any:
        # Feeds may take their whole fetch timeout (with retries), so wait longer than for other ops.
        return await self._prices(lambda reply: Refresh(reply=reply), self.refresh_timeout)

    async def prices_set(self, req: PricesSet) -> Any:
        return await self._prices(lambda reply: SetPrice(spec=req.price, reply=reply))

    async def prices_unset(self, req: PricesUnset) -> Any:
        return await self._prices(lambda reply: UnsetPrice(model=req.model, reply=reply))

    async def prices_history(self, req: PricesHistory) -> Any:
        return await self._prices(lambda reply: GetHistory(model=req.model, reply=reply))

    async def prices_list(self, req: PricesList) -> Any:
        return await self.refs["prices"].ask(
            lambda reply: ListPrices(provider=req.provider, search=req.search, limit=req.limit, reply=reply),
            self.timeout,
        )


async def _answer(handler: Callable[[Any], Awaitable[Any]], request: Request, reply: ReplyTo) -> None:
    try:
        reply.set(await handler(request))
    except Exception as exc:
        reply.fail(exc)


def _no_spawn(*_args: Any) -> None:
    raise AssertionError("`call` awaits the handlers of ask ops itself")


_EARLIEST, _LATEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)


def _instant(text: str | None, field: str, zone_name: str, now: dt.datetime) -> int | None:
    """A time bound of a query (the `When` grammar, read by the daemon's clock) in µs, or `invalid` when it
    does not parse or lies outside what a ledger can hold."""
    if text is None:
        return None
    try:
        value = parse_when(text, zone_name, now)
    except (ValueError, OverflowError) as exc:
        raise OpError("invalid", f"{field[2:]}: {exc}", field) from None
    try:
        inside = _EARLIEST <= value < _LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise OpError("invalid", f"{field[2:]} must be between 1970-01-01 and 2199-12-31 (UTC)", field)
    return to_us(value)

