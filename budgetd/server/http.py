"""The HTTP door: the protocol over `POST /api/v1/rpc`, REST faces for people and tools, health.

Every route builds a protocol request and dispatches it through the same
`Ops` table as the socket door, so a feature exists on both or on neither.
REST answers carry the bare result on success; every failure is the
protocol's error envelope with an HTTP status that matches its code.
"""

import contextlib
import errno
import hmac
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
import msgspec
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import budgetd
from budgetd.model import DIMS, BudgetSpec, Estimate, Usage, UsagePatch
from budgetd.protocol import (
    RESULT_TYPES,
    AlertsAck,
    AlertsList,
    AnyRequest,
    Ask,
    Backup,
    BudgetDelete,
    BudgetGet,
    BudgetList,
    BudgetSet,
    Check,
    Commit,
    Err,
    OpError,
    PricesGet,
    PricesList,
    PricesRefresh,
    Record,
    Release,
    Report,
    Request,
    Reserve,
    Status,
    Subscribe,
    UsageList,
    decode_request,
    encode,
    err,
    ok,
    request_id_of,
    validation_error,
)
from budgetd.protocol import (
    Route as RouteOp,
)
from budgetd.server.ops import Ops

log = logging.getLogger("budgetd.http")

STATUS = {
    "bad_frame": 400, "frame_too_large": 413, "unknown_op": 404, "invalid": 400, "not_found": 404,
    "conflict": 409, "idempotency_conflict": 409, "unknown_reservation": 404, "unauthorized": 401,
    "forbidden": 403, "busy": 503, "unavailable": 503, "internal": 500,
}
JSON = "application/json"
KEEPALIVE_S = 15.0


#: The least role an op needs over HTTP (the socket's file mode is its own access control).
READ_OPS = {"hello", "ping", "check", "status", "report", "usage.list", "prices.get", "prices.list",
            "prices.history", "route", "alerts.list", "subscribe", "budget.get", "budget.list"}
WRITE_OPS = {"record", "reserve", "commit", "release", "ask", "alerts.ack"}
RANK = {"read": 0, "write": 1, "admin": 2}


def role_needed(op: str) -> str:
    return "read" if op in READ_OPS else "write" if op in WRITE_OPS else "admin"


@dataclass(frozen=True)
class Token:
    secret: str
    role: str
    components: frozenset[str] | None


class HttpRefused(Exception):
    """The HTTP door cannot listen as configured; the message says why."""


def parse_listen(listen: str, tokens_configured: bool) -> tuple[str, int]:
    """`HOST:PORT`; without tokens only a loopback host is allowed (DESIGN §5)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise HttpRefused(f"http listen address {listen!r} is not HOST:PORT")
    if not tokens_configured:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise HttpRefused(
                f"refusing to serve HTTP on {host}: without [[http.tokens]] budgetd listens on loopback only; "
                "configure tokens or listen on 127.0.0.1"
            )
    return host, int(port)


def _error(request_id: Any, error: OpError) -> Response:
    status = getattr(error, "http_status", None) or STATUS.get(error.code, 500)
    return Response(encode(err(request_id, error)), status_code=status, media_type=JSON)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """msgspec's complaints about a request become `invalid` errors naming the field."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


class HttpDoor:
    def __init__(self, ops: Ops, max_body_bytes: int, tokens: list[Token] | None = None) -> None:
        self.ops = ops
        self.max_body = max_body_bytes
        self.tokens = list(tokens or [])
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/v1/rpc", self.rpc, methods=["POST"]),
            Route("/api/v1/events", self.events, methods=["GET"]),
        ]
        routes += [Route(path, self._face(kind, build), methods=[method]) for method, path, kind, build, _ in REST]
        self.app = Starlette(exception_handlers={404: _not_found, 405: _not_allowed}, routes=routes)
        self._openapi: bytes | None = None

    async def _body(self, request: HttpRequest) -> bytes:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and "json" not in kind and kind != "application/x-www-form-urlencoded":  # curl -d sends the latter
            error = OpError("invalid", f"the body must be JSON (Content-Type: application/json), not {kind}")
            error.http_status = 415  # type: ignore[attr-defined]
            raise error
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise OpError("frame_too_large", f"body over http.max_body_bytes ({self.max_body})")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise OpError("frame_too_large", f"body over http.max_body_bytes ({self.max_body})")
        return bytes(body)

    def authorize(self, request: HttpRequest, req: Request) -> None:
        """With tokens configured, each request needs a bearer token whose role covers the op
        and, for a token limited to components, a request for one of them."""
        if not self.tokens:
            return
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        token = None
        for candidate in self.tokens:  # compare with every token, in constant time each
            if hmac.compare_digest(candidate.secret.encode(), presented.encode()):
                token = candidate
        if token is None:
            raise OpError("unauthorized", "a valid `Authorization: Bearer <token>` header is required")
        op = req.__struct_config__.tag
        needed = role_needed(op)
        if RANK[token.role] < RANK[needed]:
            raise OpError("forbidden", f"op {op!r} needs a {needed} token; this one is {token.role}")
        if token.components is not None:
            component = _component_of(req)
            if needed != "read" and component is not None and component not in token.components:
                raise OpError("forbidden", f"this token may not spend for component {component!r}",
                              "$.usage.component" if hasattr(req, "usage") else "$.estimate.component")

    async def openapi(self, request: HttpRequest) -> Response:
        if self._openapi is None:
            self._openapi = encode(openapi_document())
        return Response(self._openapi, media_type=JSON)

    async def _dispatch(self, request: HttpRequest, req: Request) -> Any:
        """Authorize, dispatch through the shared table, and count the request."""
        op = req.__struct_config__.tag
        started = time.perf_counter()
        try:
            self.authorize(request, req)
            result = await self.ops.dispatch(req)
        except OpError as error:
            self.ops.metrics.observe(op, error.code, time.perf_counter() - started)
            raise
        self.ops.metrics.observe(op, "ok", time.perf_counter() - started)
        return result

    async def metrics(self, request: HttpRequest) -> Response:
        try:
            self.authorize(request, Status())
            text = await self.ops.prometheus()
        except OpError as error:
            return _error(None, error)
        return Response(text, media_type="text/plain; version=0.0.4")

    async def health(self, request: HttpRequest) -> Response:
        return Response(b'{"ok":true}', media_type=JSON)

    async def ready(self, request: HttpRequest) -> Response:
        try:
            status = await self.ops.dispatch(Status())
        except OpError as error:
            return _error(None, error)
        ready = status.prices.models > 0 and all(a.running for a in status.daemon.actors)
        return Response(encode({"ready": ready, "prices": status.prices.models}),
                        status_code=200 if ready else 503, media_type=JSON)

    async def events(self, request: HttpRequest) -> Response:
        """Server-sent events from the bus; `Last-Event-ID` (or `?after=`) resumes from a seq."""
        topics = request.query_params.get("topics", "usage,budget,alert,price,system").split(",")
        after = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            with _translated():
                req = msgspec.convert({"topics": [t.strip() for t in topics if t.strip()], "after": after},
                                      Subscribe, strict=False)
            self.authorize(request, req)
            _result, feed = await self.ops.subscribe(req)
        except OpError as error:
            return _error(None, error)

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": subscribed\n\n"
                while not feed.closed:
                    with anyio.move_on_after(KEEPALIVE_S):
                        await feed.wait()
                    events = feed.take()
                    if not events:
                        yield b": keep-alive\n\n"
                    for event in events:
                        yield (b"id: %d\nevent: %s\ndata: " % (event.seq, event.event.encode())
                               + encode(event.data) + b"\n\n")
            finally:
                self.ops.unsubscribe(feed)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def rpc(self, request: HttpRequest) -> Response:
        """Any protocol request; the same envelope as the socket."""
        try:
            body = await self._body(request)
            req = decode_request(body)
        except OpError as error:
            return _error(request_id_of(error), error)
        if isinstance(req, Subscribe):
            return _error(req.id, OpError("invalid", "subscribe streams events: use GET /api/v1/events", "$.op"))
        try:
            result = await self._dispatch(request, req)
        except OpError as error:
            return _error(req.id, error)
        return Response(encode(ok(req.id, result)), media_type=JSON)

    def _face(self, kind: type[Request], build: Callable[[Any, Any, dict], dict]) -> Callable:
        """A REST route: path parameters, the query and the JSON body make one protocol request."""

        async def handle(request: HttpRequest) -> Response:
            try:
                raw = await self._body(request) if request.method in ("POST", "PUT") else b""
                try:
                    body = msgspec.json.decode(raw) if raw.strip() else None
                except msgspec.DecodeError as exc:
                    raise OpError("bad_frame", f"the body is not JSON: {exc}") from None
                if request.method in ("POST", "PUT") and body is not None and not isinstance(body, dict):
                    raise OpError("bad_frame", "the body must be a JSON object")
                fields = build(request.query_params, body, request.path_params)
                key = request.headers.get("idempotency-key")
                if key and "idempotency_key" in kind.__struct_fields__:
                    fields.setdefault("idempotency_key", key)
                with _translated():
                    req = msgspec.convert(fields, kind, strict=False)
            except OpError as error:
                self.ops.metrics.observe(kind.__struct_config__.tag, error.code, 0.0)
                return _error(None, error)
            try:
                result = await self._dispatch(request, req)
            except OpError as error:
                return _error(None, error)
            return Response(encode(result), media_type=JSON)

        handle.__name__ = "rest_" + kind.__struct_config__.tag.replace(".", "_")
        return handle


def _path(q: Any, b: Any, p: dict) -> dict:
    return dict(p)  # the request is in the path alone


#: REST faces: (method, path, op, how path/query/body make the request, the body's documented type).
REST: list[tuple[str, str, type[Request], Callable[[Any, Any, dict], dict], Any]] = [
    ("POST", "/api/v1/usage", Record, lambda q, b, p: {"usage": b}, Usage),
    ("GET", "/api/v1/usage", UsageList, lambda q, b, p: _usage_query(q, b, p), None),
    ("POST", "/api/v1/check", Check, lambda q, b, p: {"estimate": b}, Estimate),
    ("POST", "/api/v1/reservations", Reserve, lambda q, b, p: b or {}, Reserve),
    ("POST", "/api/v1/reservations/{reservation_id}/commit", Commit, lambda q, b, p: {"usage": b, **p},
     UsagePatch),
    ("DELETE", "/api/v1/reservations/{reservation_id}", Release, _path, None),
    ("GET", "/api/v1/budgets", BudgetList, _path, None),
    ("GET", "/api/v1/budgets/{name}", BudgetGet, _path, None),
    ("PUT", "/api/v1/budgets/{name}", BudgetSet, lambda q, b, p: _budget_body(q, b, p), BudgetSpec),
    ("DELETE", "/api/v1/budgets/{name}", BudgetDelete, _path, None),
    ("GET", "/api/v1/status", Status, _path, None),
    ("GET", "/api/v1/report", Report, lambda q, b, p: _report_query(q, b, p), None),
    ("GET", "/api/v1/prices", PricesList, lambda q, b, p: dict(q), None),
    ("POST", "/api/v1/prices/refresh", PricesRefresh, _path, None),
    ("GET", "/api/v1/prices/{model:path}", PricesGet, lambda q, b, p: {**q, **p}, None),
    ("GET", "/api/v1/alerts", AlertsList, lambda q, b, p: dict(q), None),
    ("POST", "/api/v1/alerts/{alert_id:int}/ack", AlertsAck, lambda q, b, p: {**(b or {}), **p}, None),
    ("POST", "/api/v1/route", RouteOp, lambda q, b, p: b or {}, RouteOp),
    ("POST", "/api/v1/ask", Ask, lambda q, b, p: b or {}, Ask),
    ("POST", "/api/v1/backup", Backup, lambda q, b, p: b or {}, Backup),
]


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1, generated from the msgspec types that are the schema."""
    bodies = [t for *_, t in REST if t is not None]
    results = [RESULT_TYPES[kind] for _, _, kind, _, _ in REST]
    (rpc_request, err_schema, *rest_schemas), components = msgspec.json.schema_components(
        [AnyRequest, Err, *bodies, *results], ref_template="#/components/schemas/{name}")
    body_schemas = dict(zip([id(t) for t in bodies], rest_schemas[: len(bodies)]))
    result_schemas = rest_schemas[len(bodies):]
    for name in ("Reserve", "Route", "Ask", "Backup"):  # as REST bodies their `op` comes from the path
        required = components.get(name, {}).get("required", [])
        if "op" in required:
            required.remove("op")
    error = {"description": "the error envelope", "content": {JSON: {"schema": err_schema}}}
    paths: dict[str, dict] = {
        "/api/v1/rpc": {"post": {
            "summary": "any protocol request; answers the protocol's envelope",
            "requestBody": {"required": True, "content": {JSON: {"schema": rpc_request}}},
            "responses": {"200": {"description": "the success envelope"}, "default": error},
        }},
        "/api/v1/events": {"get": {
            "summary": "server-sent events; Last-Event-ID resumes",
            "parameters": [{"name": "topics", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "text/event-stream"}, "default": error},
        }},
        "/health": {"get": {"responses": {"200": {"description": "the process is up"}}}},
        "/ready": {"get": {"responses": {"200": {"description": "ledger open, prices loaded"}, "503": error}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
    }
    for (method, path, kind, _, body), result in zip(REST, result_schemas):
        doc_path = path.replace(":path", "").replace(":int", "")
        op: dict[str, Any] = {"operationId": f"{method.lower()}_{kind.__struct_config__.tag.replace('.', '_')}",
                              "responses": {"200": {"description": "the result",
                                                    "content": {JSON: {"schema": result}}}, "default": error}}
        params = [{"name": n.split(":")[0], "in": "path", "required": True,
                   "schema": {"type": "integer" if n.endswith(":int") else "string"}}
                  for n in _path_names(path)]
        if method == "GET":
            params += [{"name": f, "in": "query", "schema": {"type": "string"}}
                       for f in kind.__struct_fields__ if f not in ("id", *[p["name"] for p in params])
                       and f != "filters"]
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schemas[id(body)]}}}
        paths.setdefault(doc_path, {})[method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "budgetd", "version": budgetd.__version__},
            "paths": paths, "components": {"schemas": components,
                                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _component_of(req: Request) -> str | None:
    for holder in ("usage", "estimate"):
        inner = getattr(req, holder, None)
        if inner is not None:
            return getattr(inner, "component", None)
    return None


async def _not_found(request: HttpRequest, _exc: Exception) -> Response:
    return _error(None, OpError("not_found", f"no route {request.method} {request.url.path}; "
                                            "the API is under /api/v1 (POST /api/v1/rpc takes any op)"))


async def _not_allowed(request: HttpRequest, _exc: Exception) -> Response:
    response = _error(None, OpError("invalid", f"{request.method} is not allowed on {request.url.path}"))
    response.status_code = 405
    return response


def _usage_query(query: Any, _body: Any, _path: dict) -> dict:
    return _query_fields(query, ("since", "until", "limit", "after"))


def _report_query(query: Any, _body: Any, _path: dict) -> dict:
    """`group_by=component,model` (or repeated), the dims as filters, the rest as they are."""
    fields = _query_fields(query, ("since", "until", "bucket", "timezone", "limit", "order"))
    group_by = [d for value in query.getlist("group_by") for d in value.split(",") if d]
    if group_by:
        fields["group_by"] = group_by
    return fields


def _query_fields(query: Any, names: tuple[str, ...]) -> dict:
    fields: dict[str, Any] = {name: query[name] for name in names if name in query}
    filters = {d: query[d] for d in DIMS if d in query}
    if filters:
        fields["filters"] = filters
    return fields


def _budget_body(_query: Any, body: Any, path: dict) -> dict:
    """PUT /budgets/{name}: the body is the BudgetSpec; its name, when absent, is the path's."""
    spec = dict(body or {})
    spec.setdefault("name", path["name"])
    if spec["name"] != path["name"]:
        raise OpError("invalid", f"the body names budget {spec['name']!r} but the path {path['name']!r}",
                      "$.budget.name")
    return {"budget": spec}


class HttpServer:
    """uvicorn inside the daemon's task group: no signal handlers of its own, stopped by `stop()`.

    The listening socket is bound here, before uvicorn runs, so a busy or forbidden
    address is a clear start-up error rather than uvicorn's own `sys.exit`.
    """

    def __init__(self, door: HttpDoor, host: str, port: int) -> None:
        import uvicorn

        class _Embedded(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the daemon owns the signals
                yield

        self.host, self.port = host, port
        self.socket = _listen(host, port)
        config = uvicorn.Config(door.app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5)
        self.server = _Embedded(config)
        self.done = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until `stop()`; started once uvicorn accepts on the socket."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run)
            while not self.server.started:
                if self.done.is_set():
                    raise HttpRefused(f"the HTTP door on {self.host}:{self.port} could not start; see the log above")
                await anyio.sleep(0.01)
            task_status.started()

    async def _run(self) -> None:
        try:
            await self.server.serve(sockets=[self.socket])
        except SystemExit:  # uvicorn's way of saying it could not start
            raise HttpRefused(f"the HTTP door on {self.host}:{self.port} could not start; see the log above") from None
        finally:
            self.socket.close()
            self.done.set()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful timeout), return when closed."""
        self.server.should_exit = True
        await self.done.wait()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or HttpRefused that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise HttpRefused(
                f"the HTTP address {where} is already in use (another budgetd, perhaps `make run`?); choose another "
                "with --http HOST:PORT or BUDGET_PORT, or run without HTTP with --no-http") from None
        if exc.errno == errno.EACCES:
            raise HttpRefused(f"not allowed to listen on {where} (ports below 1024 need privileges); choose "
                              "another with --http HOST:PORT or BUDGET_PORT, or run without HTTP with --no-http"
                              ) from None
        raise HttpRefused(f"cannot listen on {where}: {exc.strerror or exc}; check the address given to --http "
                          "or [http] listen, or run without HTTP with --no-http") from None
    return sock
