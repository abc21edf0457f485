"""SyncBudgetClient: one blocking request at a time, over the Unix socket or HTTP."""

import itertools
import time
from pathlib import Path
from typing import Any, Iterator

from budgetd.client._errors import DaemonUnavailable, Disconnected
from budgetd.client._guard import SyncGuard
from budgetd.client._http import HttpTransport, http_headers, http_url
from budgetd.client._ops import Reservations, SyncOps
from budgetd.client._retry import attempts
from budgetd.client._socket import SocketTransport, event_of
from budgetd.paths import client_socket_path
from budgetd.protocol import Event, OpError, Request, Subscribe


class SyncBudgetClient(SyncOps, SyncGuard):
    """Blocking client over the Unix socket, or over HTTP when given an `http://` URL (with `token=` or
    BUDGETD_TOKEN); one request at a time. Thread-unsafe: one per thread."""

    def __init__(self, socket: str | Path | None = None, *, timeout: float = 10.0, retries: int = 3,
                 token: str | None = None) -> None:
        self.url = http_url(socket)
        self.path = Path(self.url) if self.url else client_socket_path(socket)
        self.timeout = timeout
        self.retries = retries
        self._transport = (HttpTransport(self.url, http_headers(token)) if self.url
                           else SocketTransport(self.path, connect_timeout=timeout))
        self._reservations = Reservations()
        self._ids = itertools.count(1)

    def __enter__(self) -> "SyncBudgetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def call(self, request: Request, timeout: float | None = None) -> Any:
        """Send any protocol request and return its typed result (raising BudgetError on failure)."""
        for attempt in attempts(request, self._ids, self.retries, self.path):
            with attempt:
                return attempt.result(self._transport.roundtrip(attempt.line, attempt.request_id,
                                                                timeout or self.timeout))
            time.sleep(attempt.delay)

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
            while True:
                try:
                    response = stream._transport.receive(idle_timeout)  # type: ignore[union-attr]
                except Disconnected as exc:
                    raise DaemonUnavailable(stream.path, f"subscription ended: {exc}") from None
                if response.event is not None:
                    yield event_of(response)
