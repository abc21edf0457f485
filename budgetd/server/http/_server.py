"""uvicorn embedded in the daemon's task group, on a socket bound before it runs."""

import contextlib
import errno
import ipaddress
import socket
from typing import Any, Iterator

import anyio
from anyio.abc import TaskStatus

from budgetd.config import host_port


class HttpRefused(Exception):
    """The HTTP door cannot listen as configured; the message says why."""


def parse_listen(listen: str, tokens_configured: bool) -> tuple[str, int]:
    """`HOST:PORT`; without tokens only a loopback host is allowed (docs/PROTOCOL.md, "Auth")."""
    try:
        host, port = host_port(listen)
    except ValueError as exc:
        raise HttpRefused(f"http {exc}") from None
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
    return host, port


class HttpServer:
    """uvicorn inside the daemon's task group: no signal handlers of its own, stopped by `stop()`.

    The listening socket is bound here, before uvicorn runs, so a busy or forbidden
    address is a clear start-up error rather than uvicorn's own `sys.exit`.
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class _Embedded(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the daemon owns the signals
                yield

        self.host, self.port = host, port
        self.socket = _listen(host, port)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, interface="asgi3",
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
