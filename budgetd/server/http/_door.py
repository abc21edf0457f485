"""The HTTP door: the protocol over `POST /api/v1/rpc`, REST faces for people and tools, health.

Every route builds a protocol request and serves it through the same `Ops`
dispatch as the socket door, so a feature exists on both or on neither.
REST answers carry the bare result on success; every failure is the
protocol's error envelope with an HTTP status that matches its code.
"""

import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from budgetd.protocol import (
    HTTP_STATUS,
    ROLES,
    OpError,
    Request,
    Status,
    Subscribe,
    decode_json,
    decode_request,
    encode,
    err,
    ok,
    request_id_of,
    validation_error,
)
from budgetd.server.http._openapi import openapi_document
from budgetd.server.http._rest import REST
from budgetd.server.ops import Ops

log = logging.getLogger("budgetd.http")

JSON = "application/json"
KEEPALIVE_S = 15.0


#: A token's role covers the ops of its own role and of the roles before it.
RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Token:
    secret: str
    role: str
    components: frozenset[str] | None


class HttpRefused(Exception):
    """The HTTP door cannot listen as configured; the message says why."""


def _status(error: OpError) -> int:
    return getattr(error, "http_status", None) or HTTP_STATUS.get(error.code, 500)


def _error(request_id: Any, error: OpError) -> Response:
    return Response(encode(err(request_id, error)), status_code=_status(error), media_type=JSON)


async def _chunks(receive: Callable) -> AsyncIterator[bytes]:
    """The body of an ASGI request, as it arrives."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpError("bad_frame", "the client went away before its body was complete")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


@contextlib.contextmanager
def _translated(kind: type[Request]) -> Iterator[None]:
    """msgspec's complaints about a request of `kind` become `invalid` errors naming the field."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise validation_error(exc, root=kind) from None


def _event_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63


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
        routes += [Route(face.path, self._face(face.op, face.build), methods=[face.method]) for face in REST]
        self._starlette = Starlette(exception_handlers={404: _not_found, 405: _not_allowed}, routes=routes)
        self._openapi: bytes | None = None

    async def app(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The ASGI app. `POST /api/v1/rpc`, what the client library sends, is served here on the ASGI
        messages themselves; every other route through Starlette."""
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/api/v1/rpc":
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            status, body = await self._rpc(headers, _chunks(receive))
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._starlette(scope, receive, send)

    async def _body(self, headers: Any, chunks: AsyncIterator[bytes]) -> bytes:
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and "json" not in kind and kind != "application/x-www-form-urlencoded":  # curl -d sends the latter
            error = OpError("invalid", f"the body must be JSON (Content-Type: application/json), not {kind}")
            error.http_status = 415  # type: ignore[attr-defined]
            raise error
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise OpError("frame_too_large", f"body over http.max_body_bytes ({self.max_body})")
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > self.max_body:
                raise OpError("frame_too_large", f"body over http.max_body_bytes ({self.max_body})")
        return bytes(body)

    def authorize(self, headers: Any, req: Request) -> frozenset[str] | None:
        """With tokens configured, each request needs a bearer token whose role covers the op
        and, for a token limited to components, a request for one of them. Returns the components the
        caller may spend for (None: any), which commit and release check against the reservation's."""
        if not self.tokens:
            return None
        header = headers.get("authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        token = None
        for candidate in self.tokens:  # compare with every token, in constant time each
            if hmac.compare_digest(candidate.secret.encode(), presented.encode()):
                token = candidate
        if token is None:
            raise OpError("unauthorized", "a valid `Authorization: Bearer <token>` header is required")
        op, needed = req.__struct_config__.tag, type(req).role  # the socket's file mode is its own control
        if RANK[token.role] < RANK[needed]:
            raise OpError("forbidden", f"op {op!r} needs a {needed} token; this one is {token.role}")
        if token.components is not None:
            component = _component_of(req)
            if needed != "read" and component is not None and component not in token.components:
                raise OpError("forbidden", f"this token may not spend for component {component!r}",
                              "$.usage.component" if hasattr(req, "usage") else "$.estimate.component")
        return token.components

    async def openapi(self, request: HttpRequest) -> Response:
        if self._openapi is None:
            self._openapi = encode(openapi_document())
        return Response(self._openapi, media_type=JSON)

    async def _dispatch(self, headers: Any, req: Request) -> Any:
        """Authorize, serve through the shared dispatch, and count the request."""
        op = req.__struct_config__.tag
        started = time.perf_counter()
        try:
            components = self.authorize(headers, req)
            result = await self.ops.call(req, components)
        except OpError as error:
            self.ops.finished(op, error.code, started)
            raise
        self.ops.finished(op, "ok", started)
        return result

    async def metrics(self, request: HttpRequest) -> Response:
        try:
            self.authorize(request.headers, Status())
            text = await self.ops.prometheus()
        except OpError as error:
            return _error(None, error)
        return Response(text, media_type="text/plain; version=0.0.4")

    async def health(self, request: HttpRequest) -> Response:
        return Response(b'{"ok":true}', media_type=JSON)

    async def ready(self, request: HttpRequest) -> Response:
        """Readiness says what the daemon holds (prices, actors): a read token's to know. `/health` stays open."""
        try:
            self.authorize(request.headers, Status())
            status = await self.ops.call(Status())
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
            if request.headers.get("last-event-id") and not _event_id(after):
                raise OpError("invalid", f"the Last-Event-ID header {after[:40]!r} is not the id of an event of this "
                              "stream (a whole number it sent); leave it out to start from now", "Last-Event-ID")
            with _translated(Subscribe):
                req = msgspec.convert({"topics": [t.strip() for t in topics if t.strip()], "after": after},
                                      Subscribe, strict=False)
            self.authorize(request.headers, req)
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
        """Any protocol request; the same envelope as the socket (served by `app` before Starlette)."""
        status, body = await self._rpc(request.headers, request.stream())
        return Response(body, status_code=status, media_type=JSON)

    async def _rpc(self, headers: Any, chunks: AsyncIterator[bytes]) -> tuple[int, bytes]:
        try:
            body = await self._body(headers, chunks)
            req = decode_request(body)
        except OpError as error:
            return _status(error), encode(err(request_id_of(error), error))
        if isinstance(req, Subscribe):
            error = OpError("invalid", "subscribe streams events: use GET /api/v1/events", "$.op")
            return _status(error), encode(err(req.id, error))
        try:
            result = await self._dispatch(headers, req)
        except OpError as error:
            return _status(error), encode(err(req.id, error))
        return 200, encode(ok(req.id, result))

    def _face(self, kind: type[Request], build: Callable[[Any, Any, dict], dict]) -> Callable:
        """A REST route: path parameters, the query and the JSON body make one protocol request."""

        async def handle(request: HttpRequest) -> Response:
            try:
                raw = await self._body(request.headers, request.stream()) if request.method in ("POST", "PUT") \
                    else b""
                body = decode_json(raw) if raw.strip() else None
                if request.method in ("POST", "PUT") and body is not None and not isinstance(body, dict):
                    raise OpError("bad_frame", "the body must be a JSON object")
                fields = build(request.query_params, body, request.path_params)
                key = request.headers.get("idempotency-key")
                if key and "idempotency_key" in kind.__struct_fields__:
                    fields.setdefault("idempotency_key", key)
                with _translated(kind):
                    req = msgspec.convert(fields, kind, strict=False)
            except OpError as error:
                self.ops.finished(kind.__struct_config__.tag, error.code, time.perf_counter())
                return _error(None, error)
            try:
                result = await self._dispatch(request.headers, req)
            except OpError as error:
                return _error(None, error)
            return Response(encode(result), media_type=JSON)

        handle.__name__ = "rest_" + kind.__struct_config__.tag.replace(".", "_")
        return handle


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
