"""Every op's client method, declared once.

An op is written as a flow: a generator method that builds the request, yields it, is sent the result
back and returns what the method returns:

    def prices_unset(self, model: str) -> Flow[bool]:
        return (yield PricesUnset(model=model)).removed

`SyncOps` and `AsyncOps` hold the methods made from the flows, sending with `self.call(...)` or
`await self.call(...)`; each keeps its flow's name, parameters and docstring.
"""

import collections
import datetime as dt
import functools
import inspect
import os
import time
import typing
import uuid
from typing import Any, Callable, Generator, Sequence, TypeVar

import msgspec

from budgetd.client._lease import Lease
from budgetd.model import BudgetSpec, Decision, Estimate, Filters, Need, PriceSpec, Recorded, Usage, UsagePatch
from budgetd.protocol import (
    AlertsAck,
    AlertsList,
    Ask,
    Backup,
    BudgetDelete,
    BudgetGet,
    BudgetList,
    BudgetSet,
    Check,
    Commit,
    FleetStatus,
    Hello,
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
    Report,
    Request,
    Reserve,
    Route,
    Status,
    UsageList,
    validation_error,
)

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

#: A time bound of a query: a datetime or date, or text the daemon reads (RFC 3339, a date, or a duration
#: back from its now such as "7d").
Moment = dt.datetime | dt.date | str | None
#: What a flow yields: its request, or (request, timeout) when the op may take longer than the client's timeout.
Outgoing = Request | tuple[Request, float]
#: An op's body: it yields what to send, is sent the result, and returns what the method returns.
Flow = Generator[Outgoing, Any, T]

#: What a usage says about its call that the call's estimate said already.
LABELS = ("component", "model", "provider", "context_id", "task_type", "tier")


#: Where each kind of value sits in its request, so an error names the field as the daemon would.
_PLACE = {"Usage": "$.usage", "UsagePatch": "$.usage", "Estimate": "$.estimate", "BudgetSpec": "$.budget",
          "PriceSpec": "$.price"}


def struct_from(value: S | None, fields: dict[str, Any], kind: type[S]) -> S:
    """`value`, or a `kind` built from keyword fields (OpError `invalid` when they do not fit)."""
    if value is not None:
        if fields:
            raise TypeError("pass either a Usage or keyword fields, not both")
        return value
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, _PLACE.get(kind.__name__, "$"), kind) from None


def _filters(filters: dict[str, str] | Filters | None) -> Filters | None:
    if filters is None or isinstance(filters, Filters):
        return filters
    return msgspec.convert(filters, Filters)


def _when(value: Moment) -> str | None:
    # A datetime without an offset is wall time in the query's zone, as the same text would be.
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def _new_key() -> str:
    return uuid.uuid4().hex


class Reservations:
    """The client's recent reservations, so that every commit carries the full usage (component, model ...)
    and is recorded even when its hold expired or the daemon restarted in between."""

    KEEP = 10_000

    def __init__(self) -> None:
        self._estimates: collections.OrderedDict[str, Estimate] = collections.OrderedDict()

    def remember(self, decision: Decision, estimate: Estimate) -> Decision:
        if decision.reservation_id:
            # A lease's holds are `<lease>.<n>`: the lease is remembered once for all of them.
            self._estimates[_lease_of(decision.reservation_id)] = estimate
            while len(self._estimates) > self.KEEP:
                self._estimates.popitem(last=False)
        return decision

    def knows(self, decision: Decision) -> bool:
        """Whether this client was answered these holds before (a lease repeated with its key)."""
        return decision.reservation_id is not None and _lease_of(decision.reservation_id) in self._estimates

    def complete(self, reservation_id: str, usage: Usage | UsagePatch) -> Usage | UsagePatch:
        """`usage`, with the labels it leaves out taken from the reservation's estimate."""
        estimate = self._estimates.get(_lease_of(reservation_id))
        if estimate is None:
            return usage
        fields = {f: getattr(usage, f) for f in usage.__struct_fields__}
        for name in LABELS:
            if fields[name] is None:
                fields[name] = getattr(estimate, name)
        return UsagePatch(**fields)


def _lease_of(reservation_id: str) -> str:
    return reservation_id.partition(".")[0]


class Flows:
    """Each op's flow (the class is never instantiated). A flow's `self` is the client: `call` is how it
    sends, `_reservations` are its own."""

    _reservations: Reservations

    def hello(self, client: str | None = None) -> Flow[Any]:
        return (yield Hello(client=client, protocol=1))

    def ping(self) -> Flow[Any]:
        return (yield Ping())

    def record(self, usage: Usage | None = None, *, idempotency_key: str | None = None, **fields: Any) -> Flow[Any]:
        return (yield Record(usage=struct_from(usage, fields, Usage), idempotency_key=idempotency_key or _new_key()))

    def status(self) -> Flow[Any]:
        return (yield Status())

    def usage_list(self, *, filters: dict[str, str] | Filters | None = None, since: Moment = None,
                   until: Moment = None, limit: int = 100, after: str | None = None) -> Flow[Any]:
        return (yield UsageList(filters=_filters(filters), since=_when(since), until=_when(until), limit=limit,
                                after=after))

    def report(self, group_by: Sequence[str] = (), *, since: Moment = None, until: Moment = None,
               bucket: str | None = None, timezone: str = "UTC", filters: dict[str, str] | Filters | None = None,
               limit: int | None = None, order: str = "cost") -> Flow[Any]:
        if isinstance(group_by, str):
            group_by = [d for d in group_by.split(",") if d]
        request = Report(group_by=list(group_by), since=_when(since), until=_when(until), bucket=bucket,  # type: ignore[arg-type]
                         timezone=timezone, filters=_filters(filters), limit=limit,
                         order=order)  # type: ignore[arg-type]
        return (yield request)

    def prices_get(self, model: str, provider: str | None = None) -> Flow[Any]:
        return (yield PricesGet(model=model, provider=provider))

    def prices_list(self, *, provider: str | None = None, search: str | None = None,
                    limit: int | None = None) -> Flow[Any]:
        return (yield PricesList(provider=provider, search=search, limit=limit))

    def prices_refresh(self, timeout: float = 300.0) -> Flow[Any]:
        """Fetch every feed now; feeds may be slow, so this waits up to `timeout`."""
        return (yield PricesRefresh(), timeout)

    def prices_set(self, price: PriceSpec | None = None, **fields: Any) -> Flow[Any]:
        return (yield PricesSet(price=struct_from(price, fields, PriceSpec)))  # type: ignore[arg-type]

    def prices_unset(self, model: str) -> Flow[bool]:
        return (yield PricesUnset(model=model)).removed

    def prices_history(self, model: str) -> Flow[Any]:
        return (yield PricesHistory(model=model))

    def fleet_status(self) -> Flow[Any]:
        """The nodes sharing this daemon's fleet database (`not_found` on a single host)."""
        return (yield FleetStatus())

    def backup(self, path: str | os.PathLike, force: bool = False, timeout: float = 600.0) -> Flow[Any]:
        """An online copy of the ledger at `path` (absolute, on the daemon's machine, outside its data
        directory); an existing file is replaced only with `force`."""
        return (yield Backup(path=os.fspath(path), force=force), timeout)

    def ask(self, question: str, timeout: float = 300.0) -> Flow[Any]:
        """The budget assistant's answer, with the facts it used; an LLM call may take a while."""
        return (yield Ask(question=question), timeout)

    def alerts_list(self, *, since: Moment = None, unacked: bool = False, limit: int | None = None) -> Flow[Any]:
        return (yield AlertsList(since=_when(since), unacked=unacked, limit=limit)).alerts

    def alerts_ack(self, alert_id: int, by: str | None = None) -> Flow[bool]:
        return (yield AlertsAck(alert_id=alert_id, by=by)).acked

    def check(self, estimate: Estimate | None = None, **fields: Any) -> Flow[Decision]:
        return (yield Check(estimate=struct_from(estimate, fields, Estimate)))

    def reserve(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
                idempotency_key: str | None = None, **fields: Any) -> Flow[Decision]:
        request = Reserve(estimate=struct_from(estimate, fields, Estimate), ttl_s=ttl_s,
                          idempotency_key=idempotency_key or _new_key())
        return self._reservations.remember((yield request), request.estimate)

    def commit(self, reservation_id: str, usage: Usage | UsagePatch | None = None, *,
               idempotency_key: str | None = None, **fields: Any) -> Flow[Recorded]:
        if fields and usage is not None:
            raise TypeError("pass either a Usage or keyword fields, not both")
        usage = self._reservations.complete(
            reservation_id, usage if usage is not None else struct_from(None, fields, UsagePatch))
        # Keyed by the reservation, so committing the same usage twice is charged once.
        return (yield Commit(reservation_id=reservation_id, usage=usage,
                             idempotency_key=idempotency_key or f"commit:{reservation_id}"))

    def release(self, reservation_id: str) -> Flow[bool]:
        return (yield Release(reservation_id=reservation_id)).released

    def lease(self, estimate: Estimate | None = None, *, calls: int, ttl_s: float = 300.0,
              idempotency_key: str | None = None, **fields: Any) -> Flow[Lease]:
        """Hold up to `calls` calls of `estimate` at once (as many as the budgets have room for) and admit
        them here with `Lease.admit`, no round trip each; commit each admitted call as usual and give the
        rest back with `lease_return`. A denial is a lease with nothing to admit (`lease.decision` says
        why). An idempotency key names one lease: the same key again admits nothing (the first Lease has
        the holds; if its answer was lost, `lease_return` of the repeat gives them back)."""
        if not isinstance(ttl_s, (int, float)) or isinstance(ttl_s, bool) or not 0 < ttl_s <= 86400:
            raise TypeError("lease needs ttl_s, the seconds its holds last (0 < ttl_s <= 86400)")
        request = Reserve(estimate=struct_from(estimate, fields, Estimate), ttl_s=ttl_s, calls=calls,
                          idempotency_key=idempotency_key or _new_key())
        sent_at = time.monotonic()
        decision = yield request
        owner = not self._reservations.knows(decision)  # no Lease of this client has these holds yet
        self._reservations.remember(decision, request.estimate)
        return Lease(decision, request.estimate, sent_at, ttl_s, owner)

    def lease_return(self, lease: Lease) -> Flow[int]:
        """Release the holds `lease` never handed out; how many were still held. The lease admits nothing
        more; calls it admitted are committed (or released) one by one."""
        unused = lease.take_unused()
        if not unused:
            return 0
        return (yield Release(reservation_ids=unused)).count

    def route(self, estimate: Estimate | None = None, *, candidates: list[str] | None = None,
              need: Need | dict | list[str] | None = None, **fields: Any) -> Flow[Any]:
        if isinstance(need, dict):
            need = msgspec.convert(need, Need)
        return (yield Route(estimate=struct_from(estimate, fields, Estimate), candidates=candidates, need=need))

    def budget_set(self, budget: BudgetSpec | None = None, **fields: Any) -> Flow[BudgetSpec]:
        return (yield BudgetSet(budget=struct_from(budget, fields, BudgetSpec))).budget

    def budget_get(self, name: str) -> Flow[Any]:
        return (yield BudgetGet(name=name))

    def budget_list(self) -> Flow[list[BudgetSpec]]:
        return (yield BudgetList()).budgets

    def budget_delete(self, name: str) -> Flow[bool]:
        return (yield BudgetDelete(name=name)).deleted


def _call_args(outgoing: Outgoing) -> tuple[Request, float | None]:
    return outgoing if isinstance(outgoing, tuple) else (outgoing, None)


def _sync_method(flow: Callable[..., Flow[Any]]) -> Callable[..., Any]:
    """A method that runs `flow`, sending what it yields with `self.call`."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps = flow(self, *args, **kwargs)
        result = None
        while True:
            try:
                outgoing = steps.send(result)
            except StopIteration as done:  # a flow may have nothing to send
                return done.value
            result = self.call(*_call_args(outgoing))

    return method


def _async_method(flow: Callable[..., Flow[Any]]) -> Callable[..., Any]:
    """A coroutine method that runs `flow`, sending what it yields with `await self.call`."""

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps = flow(self, *args, **kwargs)
        result = None
        while True:
            try:
                outgoing = steps.send(result)
            except StopIteration as done:  # a flow may have nothing to send
                return done.value
            result = await self.call(*_call_args(outgoing))

    return method


def _methods(name: str, make: Callable[[Callable[..., Flow[Any]]], Callable[..., Any]]) -> type:
    """A class holding `make(flow)` for every flow of `Flows`, each looking like its flow to help() and inspect
    (name, parameters, docstring), but returning what the flow returns."""
    methods: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    for flow in vars(Flows).values():
        if inspect.isfunction(flow):
            method = functools.wraps(flow)(make(flow))
            method.__qualname__ = f"{name}.{flow.__name__}"
            signature = inspect.signature(flow)
            method.__signature__ = signature.replace(  # type: ignore[attr-defined]
                return_annotation=typing.get_args(signature.return_annotation)[-1])
            methods[flow.__name__] = method
    return type(name, (), methods)


SyncOps = _methods("SyncOps", _sync_method)
AsyncOps = _methods("AsyncOps", _async_method)
