"""Client library: `BudgetClient` (async) and `SyncBudgetClient`, one method per op.

    async with BudgetClient() as budget:
        await budget.record(component="rhetor", model="gpt-4o", input_tokens=1200, output_tokens=300)

    with SyncBudgetClient() as budget:
        print(budget.status().totals.cost_usd)

Both connect to the default socket (or `socket=`, or `BUDGETD_SOCKET`),
reconnect when the daemon restarts, and retry safely: every write carries an
idempotency key, so a retried write is charged once. Only msgspec and anyio
are imported, so a component that records usage starts fast.
"""

import collections
import contextlib
import itertools
import os
import socket as _socket
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence, TypeVar

import anyio
import msgspec

from budgetd.model import (
    BudgetSpec,
    Decision,
    Estimate,
    Filters,
    Need,
    PriceSpec,
    Recorded,
    Usage,
    UsagePatch,
)
from budgetd.paths import client_socket_path
from budgetd.protocol import (
    RESULT_TYPES,
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
    Event,
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
    Response,
    Route,
    Status,
    Subscribe,
    UsageList,
    decode_response,
    encode_line,
)

T = TypeVar("T")

#: Errors from the daemon arrive as this exception (code, message, field).
BudgetError = OpError

_RETRYABLE_CODES = {"busy", "unavailable"}
_MAX_LINE = 64 << 20


class DaemonUnavailable(OpError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            "unavailable",
            f"no budgetd answers on {path} ({reason}). Start one with `budget daemon` (or `make run`), "
            "or point to it with --socket / BUDGETD_SOCKET.",
        )


class _Disconnected(Exception):
    pass


def _usage(usage: Usage | None, fields: dict[str, Any], kind: type[T] = Usage) -> T:  # type: ignore[assignment]
    if usage is not None:
        if fields:
            raise TypeError("pass either a Usage or keyword fields, not both")
        return usage  # type: ignore[return-value]
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise OpError("invalid", f"invalid {kind.__name__}: {exc}") from None


def _filters(filters: dict[str, str] | Filters | None) -> Filters | None:
    if filters is None or isinstance(filters, Filters):
        return filters
    return msgspec.convert(filters, Filters)


def _report(group_by: Sequence[str], since: Any, until: Any, bucket: str | None, timezone: str,
            filters: dict[str, str] | Filters | None, limit: int | None, order: str) -> Report:
    if isinstance(group_by, str):
        group_by = [d for d in group_by.split(",") if d]
    return Report(group_by=list(group_by), since=since, until=until, bucket=bucket,  # type: ignore[arg-type]
                  timezone=timezone, filters=_filters(filters), limit=limit, order=order)  # type: ignore[arg-type]


def _new_key() -> str:
    return uuid.uuid4().hex


def _event(response: Response) -> Event:
    import datetime as dt

    return Event(event=response.event or "", seq=response.seq or 0,
                 ts=dt.datetime.fromisoformat(response.ts) if response.ts else None,  # type: ignore[arg-type]
                 data=msgspec.json.decode(response.data) if response.data else None)


def _result(request: Request, response: Response) -> Any:
    if response.error is not None:
        raise OpError(response.error.code, response.error.message, response.error.field)
    result_type = RESULT_TYPES[type(request)]
    return msgspec.json.decode(response.result or b"{}", type=result_type)


class BudgetDenied(Exception):
    """Raised by `guard()` when the daemon denies the reservation; `decision` says why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("; ".join(decision.reasons) or "denied by budget")
        self.decision = decision


def _estimate(estimate: Estimate | None, fields: dict[str, Any]) -> Estimate:
    return _usage(estimate, fields, Estimate)  # type: ignore[arg-type]


def _spec(budget: BudgetSpec | None, fields: dict[str, Any]) -> BudgetSpec:
    return _usage(budget, fields, BudgetSpec)  # type: ignore[arg-type]


class Guard:
    """What `guard()` yields: the reservation's decision; report the actual usage with `used()`."""

    def __init__(self, estimate: Estimate, decision: Decision) -> None:
        self.estimate = estimate
        self.decision = decision
        self.usage: Usage | None = None
        self.recorded: Recorded | None = None

    @property
    def reservation_id(self) -> str:
        return self.decision.reservation_id or ""

    def used(self, **fields: Any) -> None:
        """The call's actual usage (input_tokens, output_tokens, cache_read_tokens ...)."""
        base = {"component": self.estimate.component, "model": self.estimate.model,
                "provider": self.estimate.provider, "context_id": self.estimate.context_id,
                "task_type": self.estimate.task_type, "tier": self.estimate.tier}
        base.update(fields)
        self.usage = _usage(None, {k: v for k, v in base.items() if v is not None})

    def final_usage(self) -> Usage:
        """What is committed: the reported usage, else (conservatively) the whole estimate."""
        if self.usage is None:
            e = self.estimate
            self.used(input_tokens=e.input_tokens, cache_read_tokens=e.cache_read_tokens or 0,
                      output_tokens=e.max_output_tokens or 0)
        return self.usage  # type: ignore[return-value]


class _Requests:
    """The request builders both clients share: one method per op.

    The client remembers its own recent reservations, so that every commit
    carries the full usage (component, model ...) and is recorded even when
    its hold expired or the daemon restarted in between.
    """

    _reservations: "collections.OrderedDict[str, Estimate]"

    def _remember_reservation(self, decision: Decision, estimate: Estimate) -> Decision:
        if decision.reservation_id:
            self._reservations[decision.reservation_id] = estimate
            while len(self._reservations) > 10_000:
                self._reservations.popitem(last=False)
        return decision

    def _full_usage(self, reservation_id: str, usage: Usage | UsagePatch) -> Usage | UsagePatch:
        est = self._reservations.get(reservation_id)
        if est is None:
            return usage
        fields = {f: getattr(usage, f) for f in usage.__struct_fields__}
        for name in ("component", "model", "provider", "tier", "context_id", "task_type"):
            if fields[name] is None:
                fields[name] = getattr(est, name)
        return UsagePatch(**fields)

    def _build_record(self, usage: Usage | None, idempotency_key: str | None, fields: dict[str, Any]) -> Record:
        return Record(usage=_usage(usage, fields), idempotency_key=idempotency_key or _new_key())

    @staticmethod
    def _build_reserve(estimate: Estimate | None, ttl_s: float | None, key: str | None,
                       fields: dict[str, Any]) -> Reserve:
        return Reserve(estimate=_estimate(estimate, fields), ttl_s=ttl_s, idempotency_key=key or _new_key())

    def _build_commit(self, reservation_id: str, usage: Usage | UsagePatch | None, key: str | None,
                      fields: dict[str, Any]) -> Commit:
        if fields and usage is not None:
            raise TypeError("pass either a Usage or keyword fields, not both")
        patch = self._full_usage(reservation_id, usage if usage is not None else _usage(None, fields, UsagePatch))
        # Keyed by the reservation, so committing the same usage twice is charged once.
        return Commit(reservation_id=reservation_id, usage=patch, idempotency_key=key or f"commit:{reservation_id}")

    @staticmethod
    def _build_route(estimate: Estimate | None, candidates: list[str] | None, need: Need | dict | None,
                     fields: dict[str, Any]) -> Route:
        if isinstance(need, dict):
            need = msgspec.convert(need, Need)
        return Route(estimate=_estimate(estimate, fields), candidates=candidates, need=need)


# -- sync ------------------------------------------------------------------------


def _http_url(target: str | Path | None) -> str | None:
    text = str(target) if target is not None else ""
    return text.rstrip("/") if text.startswith(("http://", "https://")) else None


def _http_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    token = token or os.environ.get("BUDGETD_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class SyncBudgetClient(_Requests):
    """Blocking client over the Unix socket, or over HTTP when given an `http://` URL (with `token=` or
    BUDGETD_TOKEN); one request at a time. Thread-unsafe: one per thread."""

    def __init__(self, socket: str | Path | None = None, *, timeout: float = 10.0, retries: int = 3,
                 token: str | None = None) -> None:
        self.url = _http_url(socket)
        self.path = Path(self.url) if self.url else client_socket_path(socket)
        self.timeout = timeout
        self.retries = retries
        self._headers = _http_headers(token)
        self._http: Any = None
        self._sock: _socket.socket | None = None
        self._reservations = collections.OrderedDict()
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    def __enter__(self) -> "SyncBudgetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._buffer.clear()

    def _connect(self) -> _socket.socket:
        if self._sock is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                raise DaemonUnavailable(self.path, exc.strerror or type(exc).__name__) from None
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _next_frame(self, sock: _socket.socket) -> Response:
        """The next line from the daemon (an answer or an event)."""
        newline = self._buffer.find(b"\n")
        while newline < 0:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise _Disconnected("the daemon closed the connection")
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE:
                raise _Disconnected("answer too large")
            newline = self._buffer.find(b"\n")
        frame = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        return decode_response(frame)

    def _http_roundtrip(self, line: bytes, timeout: float) -> Response:
        """POST /api/v1/rpc on a kept-alive connection (the standard library's: light to import)."""
        import http.client
        import urllib.parse

        if self._http is None:
            parts = urllib.parse.urlsplit(self.url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._http = kind(parts.hostname, parts.port, timeout=timeout)
        self._http.timeout = timeout
        try:
            self._http.request("POST", "/api/v1/rpc", body=line, headers=self._headers)
            answer = self._http.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Disconnected(str(exc) or type(exc).__name__) from None
        try:
            return decode_response(body)
        except msgspec.DecodeError:
            raise OpError("unavailable", f"{self.url} answered HTTP {answer.status} without an envelope") from None

    def _roundtrip(self, line: bytes, request_id: int, timeout: float) -> Response:
        if self.url is not None:
            return self._http_roundtrip(line, timeout)
        sock = self._connect()
        sock.settimeout(timeout)
        try:
            sock.sendall(line)
            while True:
                response = self._next_frame(sock)
                if response.event is None and response.id == request_id:
                    return response
        except (OSError, _Disconnected, msgspec.DecodeError):
            self.close()
            raise

    def call(self, request: Request, timeout: float | None = None) -> Any:
        """Send any protocol request and return its typed result (raising BudgetError on failure)."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            request_id = next(self._ids)
            line = encode_line(msgspec.structs.replace(request, id=request_id))
            try:
                response = self._roundtrip(line, request_id, timeout or self.timeout)
                if response.error is not None and response.error.code in _RETRYABLE_CODES and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                return _result(request, response)
            except DaemonUnavailable:
                if attempt >= self.retries:
                    raise
            except (OSError, _Disconnected, msgspec.DecodeError) as exc:
                if attempt >= self.retries:
                    raise DaemonUnavailable(self.path, str(exc) or type(exc).__name__) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # -- ops --
    def hello(self, client: str | None = None) -> Any:
        return self.call(Hello(client=client, protocol=1))

    def ping(self) -> Any:
        return self.call(Ping())

    def record(self, usage: Usage | None = None, *, idempotency_key: str | None = None, **fields: Any) -> Any:
        return self.call(self._build_record(usage, idempotency_key, fields))

    def status(self) -> Any:
        return self.call(Status())

    def usage_list(self, *, filters: dict[str, str] | Filters | None = None, since: Any = None, until: Any = None,
                   limit: int = 100, after: str | None = None) -> Any:
        return self.call(UsageList(filters=_filters(filters), since=since, until=until, limit=limit, after=after))

    def report(self, group_by: Sequence[str] = (), *, since: Any = None, until: Any = None,
               bucket: str | None = None, timezone: str = "UTC", filters: dict[str, str] | Filters | None = None,
               limit: int | None = None, order: str = "cost") -> Any:
        return self.call(_report(group_by, since, until, bucket, timezone, filters, limit, order))

    def prices_get(self, model: str, provider: str | None = None) -> Any:
        return self.call(PricesGet(model=model, provider=provider))

    def prices_list(self, *, provider: str | None = None, search: str | None = None, limit: int | None = None) -> Any:
        return self.call(PricesList(provider=provider, search=search, limit=limit))

    def prices_refresh(self, timeout: float = 300.0) -> Any:
        """Fetch every feed now; feeds may be slow, so this waits up to `timeout`."""
        return self.call(PricesRefresh(), timeout=timeout)

    def prices_set(self, price: PriceSpec | None = None, **fields: Any) -> Any:
        return self.call(PricesSet(price=_usage(price, fields, PriceSpec)))  # type: ignore[arg-type]

    def prices_unset(self, model: str) -> bool:
        return self.call(PricesUnset(model=model)).removed

    def prices_history(self, model: str) -> Any:
        return self.call(PricesHistory(model=model))

    def subscribe(self, topics: list[str], after: int | None = None, idle_timeout: float | None = None
                  ) -> Iterator[Event]:
        """Events of `topics` (usage, budget, alert, price, system) as they happen, on a connection of
        their own; a `lagged` event says how many were dropped because this reader fell behind.
        The subscription starts at once; with `idle_timeout`, TimeoutError when no event came for that long."""
        if self.url is not None:
            raise OpError("invalid", "subscriptions need the socket; over HTTP read GET /api/v1/events")
        stream = SyncBudgetClient(self.path, timeout=self.timeout, retries=0)
        stream.call(Subscribe(topics=topics, after=after))  # type: ignore[arg-type]
        return self._events_of(stream, idle_timeout)

    @staticmethod
    def _events_of(stream: "SyncBudgetClient", idle_timeout: float | None) -> Iterator[Event]:
        with stream:
            sock = stream._connect()
            sock.settimeout(idle_timeout)
            while True:
                try:
                    response = stream._next_frame(sock)
                except _Disconnected as exc:
                    raise DaemonUnavailable(stream.path, f"subscription ended: {exc}") from None
                if response.event is not None:
                    yield _event(response)

    def backup(self, path: str | os.PathLike, timeout: float = 600.0) -> Any:
        """An online copy of the ledger at `path` (absolute, on the daemon's machine)."""
        return self.call(Backup(path=os.fspath(path)), timeout=timeout)

    def ask(self, question: str, timeout: float = 300.0) -> Any:
        """The budget assistant's answer, with the facts it used; an LLM call may take a while."""
        return self.call(Ask(question=question), timeout=timeout)

    def alerts_list(self, *, since: Any = None, unacked: bool = False, limit: int | None = None) -> Any:
        return self.call(AlertsList(since=since, unacked=unacked, limit=limit)).alerts

    def alerts_ack(self, alert_id: int, by: str | None = None) -> bool:
        return self.call(AlertsAck(alert_id=alert_id, by=by)).acked

    def check(self, estimate: Estimate | None = None, **fields: Any) -> Decision:
        return self.call(Check(estimate=_estimate(estimate, fields)))

    def reserve(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
                idempotency_key: str | None = None, **fields: Any) -> Decision:
        request = self._build_reserve(estimate, ttl_s, idempotency_key, fields)
        return self._remember_reservation(self.call(request), request.estimate)

    def commit(self, reservation_id: str, usage: Usage | UsagePatch | None = None, *,
               idempotency_key: str | None = None, **fields: Any) -> Recorded:
        return self.call(self._build_commit(reservation_id, usage, idempotency_key, fields))

    def release(self, reservation_id: str) -> bool:
        return self.call(Release(reservation_id=reservation_id)).released

    def route(self, estimate: Estimate | None = None, *, candidates: list[str] | None = None,
              need: Need | dict | None = None, **fields: Any) -> Any:
        return self.call(self._build_route(estimate, candidates, need, fields))

    def budget_set(self, budget: BudgetSpec | None = None, **fields: Any) -> BudgetSpec:
        return self.call(BudgetSet(budget=_spec(budget, fields))).budget

    def budget_get(self, name: str) -> Any:
        return self.call(BudgetGet(name=name))

    def budget_list(self) -> list[BudgetSpec]:
        return self.call(BudgetList()).budgets

    def budget_delete(self, name: str) -> bool:
        return self.call(BudgetDelete(name=name)).deleted

    @contextlib.contextmanager
    def guard(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
              **fields: Any) -> Iterator[Guard]:
        """Reserve on enter (raising BudgetDenied), commit the actual usage on exit, release on error."""
        est = _estimate(estimate, fields)
        decision = self.reserve(est, ttl_s=ttl_s)
        if not decision.allowed:
            raise BudgetDenied(decision)
        g = Guard(est, decision)
        try:
            yield g
        except BaseException:
            self.release(g.reservation_id)
            raise
        g.recorded = self.commit(g.reservation_id, g.final_usage())


# -- async -----------------------------------------------------------------------


class _Slot:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.response: Response | None = None


class BudgetClient(_Requests):
    """Async client: pipelines concurrent calls on one connection (or, given an `http://` URL, calls
    POST /api/v1/rpc with httpx, imported only then). Use as `async with`."""

    def __init__(self, socket: str | Path | None = None, *, timeout: float = 10.0, retries: int = 3,
                 token: str | None = None) -> None:
        self.url = _http_url(socket)
        self._headers = _http_headers(token)
        self._http: Any = None
        self.path = Path(self.url) if self.url else client_socket_path(socket)
        self.timeout = timeout
        self.retries = retries
        self._stream: Any = None
        self._reservations = collections.OrderedDict()
        self._events: Any = None  # where the reader puts events of this client's subscription
        self._pending: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._send_lock: anyio.Lock | None = None
        self._connect_lock: anyio.Lock | None = None
        self._tg: Any = None

    async def __aenter__(self) -> "BudgetClient":
        self._send_lock = anyio.Lock()
        self._connect_lock = anyio.Lock()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            with anyio.CancelScope(shield=True):  # closing must finish even when we are being cancelled
                await self.aclose()
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        self._fail_pending()

    def _fail_pending(self) -> None:
        for slot in self._pending.values():
            slot.event.set()
        self._pending.clear()

    async def _connect(self) -> Any:
        if self._tg is None:
            raise RuntimeError("use BudgetClient as `async with BudgetClient() as client:`")
        async with self._connect_lock:  # type: ignore[union-attr]
            if self._stream is None:
                try:
                    stream = await anyio.connect_unix(self.path)
                except (FileNotFoundError, ConnectionRefusedError) as exc:
                    raise DaemonUnavailable(self.path, exc.strerror or type(exc).__name__) from None
                self._stream = stream
                self._tg.start_soon(self._read, stream)
            return self._stream

    async def _read(self, stream: Any) -> None:
        from anyio.streams.buffered import BufferedByteReceiveStream

        buffered = BufferedByteReceiveStream(stream)
        try:
            while True:
                frame = await buffered.receive_until(b"\n", _MAX_LINE)
                response = decode_response(frame)
                if response.event is not None:
                    if self._events is not None:
                        try:
                            self._events.send_nowait(_event(response))
                        except anyio.WouldBlock:
                            pass  # the reader is behind: the daemon's own `lagged` marker will say so
                    continue
                slot = self._pending.pop(response.id, None)
                if slot is not None:
                    slot.response = response
                    slot.event.set()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError,
                anyio.DelimiterNotFound, OSError, msgspec.DecodeError):
            pass
        finally:
            if self._stream is stream:
                self._stream = None
                self._fail_pending()
                if self._events is not None:
                    self._events.close()

    async def _http_roundtrip(self, request: Request, timeout: float) -> Response:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url or "", headers=self._headers)
        line = encode_line(msgspec.structs.replace(request, id=next(self._ids)))
        try:
            answer = await self._http.post("/api/v1/rpc", content=line, timeout=timeout)
        except httpx.TimeoutException:
            raise OpError("busy", f"no answer from budgetd within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise _Disconnected(str(exc) or type(exc).__name__) from None
        try:
            return decode_response(answer.content)
        except msgspec.DecodeError:
            raise OpError("unavailable", f"{self.url} answered HTTP {answer.status_code} without an envelope") from None

    async def _roundtrip(self, request: Request, timeout: float) -> Response:
        if self.url is not None:
            return await self._http_roundtrip(request, timeout)
        stream = await self._connect()
        request_id = next(self._ids)
        slot = _Slot()
        self._pending[request_id] = slot
        try:
            async with self._send_lock:  # type: ignore[union-attr]
                await stream.send(encode_line(msgspec.structs.replace(request, id=request_id)))
            with anyio.fail_after(timeout):
                await slot.event.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _Disconnected(str(exc)) from None
        except TimeoutError:
            raise OpError("busy", f"no answer from budgetd within {timeout:g}s") from None
        finally:
            self._pending.pop(request_id, None)
        if slot.response is None:
            raise _Disconnected("the daemon closed the connection")
        return slot.response

    async def call(self, request: Request, timeout: float | None = None) -> Any:
        """Send any protocol request and return its typed result (raising BudgetError on failure)."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                response = await self._roundtrip(request, timeout or self.timeout)
                if response.error is not None and response.error.code in _RETRYABLE_CODES and attempt < self.retries:
                    await anyio.sleep(delay)
                    delay *= 2
                    continue
                return _result(request, response)
            except DaemonUnavailable:
                if attempt >= self.retries:
                    raise
            except _Disconnected as exc:
                self._stream = None
                if attempt >= self.retries:
                    raise DaemonUnavailable(self.path, str(exc)) from None
            await anyio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # -- ops --
    async def hello(self, client: str | None = None) -> Any:
        return await self.call(Hello(client=client, protocol=1))

    async def ping(self) -> Any:
        return await self.call(Ping())

    async def record(self, usage: Usage | None = None, *, idempotency_key: str | None = None, **fields: Any) -> Any:
        return await self.call(self._build_record(usage, idempotency_key, fields))

    async def status(self) -> Any:
        return await self.call(Status())

    async def usage_list(self, *, filters: dict[str, str] | Filters | None = None, since: Any = None,
                         until: Any = None, limit: int = 100, after: str | None = None) -> Any:
        return await self.call(UsageList(filters=_filters(filters), since=since, until=until, limit=limit,
                                         after=after))

    async def report(self, group_by: Sequence[str] = (), *, since: Any = None, until: Any = None,
                     bucket: str | None = None, timezone: str = "UTC",
                     filters: dict[str, str] | Filters | None = None, limit: int | None = None,
                     order: str = "cost") -> Any:
        return await self.call(_report(group_by, since, until, bucket, timezone, filters, limit, order))

    async def prices_get(self, model: str, provider: str | None = None) -> Any:
        return await self.call(PricesGet(model=model, provider=provider))

    async def prices_list(self, *, provider: str | None = None, search: str | None = None,
                          limit: int | None = None) -> Any:
        return await self.call(PricesList(provider=provider, search=search, limit=limit))

    async def prices_refresh(self, timeout: float = 300.0) -> Any:
        """Fetch every feed now; feeds may be slow, so this waits up to `timeout`."""
        return await self.call(PricesRefresh(), timeout=timeout)

    async def prices_set(self, price: PriceSpec | None = None, **fields: Any) -> Any:
        return await self.call(PricesSet(price=_usage(price, fields, PriceSpec)))  # type: ignore[arg-type]

    async def prices_unset(self, model: str) -> bool:
        return (await self.call(PricesUnset(model=model))).removed

    async def prices_history(self, model: str) -> Any:
        return await self.call(PricesHistory(model=model))

    async def subscribe(self, topics: list[str], after: int | None = None) -> AsyncIterator[Event]:
        """Events of `topics` as they happen, on this client's connection (one subscription per client).
        A `lagged` event says how many were dropped; the iteration ends if the connection is lost."""
        if self.url is not None:
            raise OpError("invalid", "subscriptions need the socket; over HTTP read GET /api/v1/events")
        send, receive = anyio.create_memory_object_stream[Event](10_000)
        self._events = send
        try:
            await self.call(Subscribe(topics=topics, after=after))  # type: ignore[arg-type]
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._events = None

    async def backup(self, path: str | os.PathLike, timeout: float = 600.0) -> Any:
        """An online copy of the ledger at `path` (absolute, on the daemon's machine)."""
        return await self.call(Backup(path=os.fspath(path)), timeout=timeout)

    async def ask(self, question: str, timeout: float = 300.0) -> Any:
        """The budget assistant's answer, with the facts it used; an LLM call may take a while."""
        return await self.call(Ask(question=question), timeout=timeout)

    async def alerts_list(self, *, since: Any = None, unacked: bool = False, limit: int | None = None) -> Any:
        return (await self.call(AlertsList(since=since, unacked=unacked, limit=limit))).alerts

    async def alerts_ack(self, alert_id: int, by: str | None = None) -> bool:
        return (await self.call(AlertsAck(alert_id=alert_id, by=by))).acked

    async def check(self, estimate: Estimate | None = None, **fields: Any) -> Decision:
        return await self.call(Check(estimate=_estimate(estimate, fields)))

    async def reserve(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
                      idempotency_key: str | None = None, **fields: Any) -> Decision:
        request = self._build_reserve(estimate, ttl_s, idempotency_key, fields)
        return self._remember_reservation(await self.call(request), request.estimate)

    async def commit(self, reservation_id: str, usage: Usage | UsagePatch | None = None, *,
                     idempotency_key: str | None = None, **fields: Any) -> Recorded:
        return await self.call(self._build_commit(reservation_id, usage, idempotency_key, fields))

    async def release(self, reservation_id: str) -> bool:
        return (await self.call(Release(reservation_id=reservation_id))).released

    async def route(self, estimate: Estimate | None = None, *, candidates: list[str] | None = None,
                    need: Need | dict | None = None, **fields: Any) -> Any:
        return await self.call(self._build_route(estimate, candidates, need, fields))

    async def budget_set(self, budget: BudgetSpec | None = None, **fields: Any) -> BudgetSpec:
        return (await self.call(BudgetSet(budget=_spec(budget, fields)))).budget

    async def budget_get(self, name: str) -> Any:
        return await self.call(BudgetGet(name=name))

    async def budget_list(self) -> list[BudgetSpec]:
        return (await self.call(BudgetList())).budgets

    async def budget_delete(self, name: str) -> bool:
        return (await self.call(BudgetDelete(name=name))).deleted

    @contextlib.asynccontextmanager
    async def guard(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
                    **fields: Any) -> AsyncIterator[Guard]:
        """Reserve on enter (raising BudgetDenied), commit the actual usage on exit, release on error."""
        est = _estimate(estimate, fields)
        decision = await self.reserve(est, ttl_s=ttl_s)
        if not decision.allowed:
            raise BudgetDenied(decision)
        g = Guard(est, decision)
        try:
            yield g
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.release(g.reservation_id)
            raise
        g.recorded = await self.commit(g.reservation_id, g.final_usage())


__all__ = [
    "BudgetClient", "SyncBudgetClient", "BudgetError", "BudgetDenied", "DaemonUnavailable", "Guard",
    "Usage", "UsagePatch", "Estimate", "BudgetSpec", "Need", "Event",
]
