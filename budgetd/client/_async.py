"""BudgetClient: concurrent calls pipelined on one Unix socket connection, or over HTTP."""

import itertools
from pathlib import Path
from typing import Any, AsyncIterator

import anyio

from budgetd.client._guard import AsyncGuard
from budgetd.client._http import AsyncHttpTransport, http_headers, http_url
from budgetd.client._ops import AsyncOps, Reservations
from budgetd.client._retry import attempts
from budgetd.client._socket import AsyncSocketTransport
from budgetd.paths import client_socket_path
from budgetd.protocol import Event, OpError, Request, Subscribe


class BudgetClient(AsyncOps, AsyncGuard):
    """Async client: pipelines concurrent calls on one connection (or, given an `http://` URL, calls
    POST /api/v1/rpc with httpx, imported only then). Use as `async with`."""

    def __init__(self, socket: str | Path | None = None, *, timeout: float = 10.0, retries: int = 3,
                 token: str | None = None) -> None:
        self.url = http_url(socket)
        self.path = Path(self.url) if self.url else client_socket_path(socket)
        self.timeout = timeout
        self.retries = retries
        self._transport: AsyncSocketTransport | AsyncHttpTransport = (
            AsyncHttpTransport(self.url, http_headers(token)) if self.url else AsyncSocketTransport(self.path))
        self._reservations = Reservations()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> "BudgetClient":
        await self._transport.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._transport.__aexit__(*exc)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(self, request: Request, timeout: float | None = None) -> Any:
        """Send any protocol request and return its typed result (raising BudgetError on failure)."""
        for attempt in attempts(request, self._ids, self.retries, self.path):
            with attempt:
                return attempt.result(await self._transport.roundtrip(attempt.line, attempt.request_id,
                                                                      timeout or self.timeout))
            await anyio.sleep(attempt.delay)

    def subscribe(self, topics: list[str], after: int | None = None) -> "Subscription":
        """Events of `topics` as they happen, on this client's connection (one subscription per client).
        `await client.subscribe(...)` returns once the daemon confirmed it (events from then on are
        seen); `async for event in client.subscribe(...)` subscribes when iteration starts. A `lagged`
        event says how many were dropped; the iteration ends if the connection is lost."""
        if self.url is not None:
            raise OpError("invalid", "subscriptions need the socket; over HTTP read GET /api/v1/events")
        return Subscription(self, topics, after)


class Subscription:
    """A subscription of a BudgetClient: awaitable (confirmed), an async iterator of its events, closable."""

    def __init__(self, client: BudgetClient, topics: list[str], after: int | None) -> None:
        self._client = client
        self._request = Subscribe(topics=topics, after=after)  # type: ignore[arg-type]
        self._receive: Any = None

    def __await__(self) -> Any:
        return self._start().__await__()

    async def _start(self) -> "Subscription":
        if self._receive is None:
            transport: AsyncSocketTransport = self._client._transport  # type: ignore[assignment]
            send, self._receive = anyio.create_memory_object_stream[Event](10_000)
            transport.events = send
            try:
                await self._client.call(self._request)
            except BaseException:
                transport.events = None
                raise
        return self

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        await self._start()
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await self.aclose()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        transport: AsyncSocketTransport = self._client._transport  # type: ignore[assignment]
        if self._receive is not None:
            self._receive.close()
            if transport.events is not None:
                transport.events = None
