"""The Unix socket door: one JSON line per frame, answers matched to their request by id, events in between."""

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import anyio
import msgspec

from budgetd.client._errors import DaemonUnavailable, Disconnected
from budgetd.protocol import Event, OpError, Response, decode_response

#: A line longer than this is taken for a broken stream, not an answer.
MAX_LINE = 64 << 20


def event_of(response: Response) -> Event:
    return Event(event=response.event or "", seq=response.seq or 0,
                 ts=dt.datetime.fromisoformat(response.ts) if response.ts else None,  # type: ignore[arg-type]
                 data=msgspec.json.decode(response.data) if response.data else None, node=response.node)


class SocketTransport:
    """Blocking, one request at a time on one kept connection; events that come in between are skipped."""

    def __init__(self, path: Path, connect_timeout: float) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def roundtrip(self, line: bytes, request_id: int, timeout: float) -> Response:
        sock = self._connect()
        sock.settimeout(timeout)
        try:
            sock.sendall(line)
            while True:
                response = self._next_frame(sock)
                if response.event is None and response.id == request_id:
                    return response
        except Disconnected:
            self.close()
            raise
        except (OSError, msgspec.DecodeError) as exc:  # a timeout too: TimeoutError is an OSError
            self.close()
            raise Disconnected(str(exc) or type(exc).__name__) from None

    def receive(self, timeout: float | None) -> Response:
        """The next frame, answer or event (a subscription reads nothing else); TimeoutError after `timeout`."""
        sock = self._connect()
        sock.settimeout(timeout)
        return self._next_frame(sock)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                raise DaemonUnavailable(self.path, exc.strerror or type(exc).__name__) from None
            except OSError as exc:
                sock.close()
                raise Disconnected(str(exc) or type(exc).__name__) from None
            self._sock = sock
        return self._sock

    def _next_frame(self, sock: socket.socket) -> Response:
        newline = self._buffer.find(b"\n")
        while newline < 0:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise Disconnected("the daemon closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE:
                raise Disconnected("answer too large")
            newline = self._buffer.find(b"\n")
        frame = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        return decode_response(frame)


class _Slot:
    """Where the reader puts the answer to one request."""

    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.response: Response | None = None


class AsyncSocketTransport:
    """Pipelined: concurrent requests share one connection, whose reader task hands each answer to its request
    by id and each event to `events`. Use as `async with` (the reader runs in its task group)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: Any = None  # where the reader puts the events of this client's subscription, if any
        self._stream: Any = None
        self._pending: dict[int, _Slot] = {}
        self._send_lock: anyio.Lock | None = None
        self._connect_lock: anyio.Lock | None = None
        self._tg: Any = None

    async def __aenter__(self) -> "AsyncSocketTransport":
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
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        self._fail_pending()

    async def roundtrip(self, line: bytes, request_id: int, timeout: float) -> Response:
        stream = await self._connect()
        slot = _Slot()
        self._pending[request_id] = slot
        try:
            async with self._send_lock:  # type: ignore[union-attr]
                await stream.send(line)
            with anyio.move_on_after(timeout):
                await slot.event.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._lost(stream, str(exc)) from None
        finally:
            self._pending.pop(request_id, None)
        if not slot.event.is_set():  # the connection is fine, the daemon is slow: retried, then `busy`
            raise OpError("busy", f"no answer from budgetd within {timeout:g}s; retry shortly")
        if slot.response is None:
            raise self._lost(stream, "the daemon closed the connection")
        return slot.response

    def _lost(self, stream: Any, reason: str) -> Disconnected:
        if self._stream is stream:  # another request may have connected again meanwhile
            self._stream = None  # the next request connects again
        return Disconnected(reason)

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
        from anyio.streams.buffered import BufferedByteReceiveStream  # loaded with the first connection

        buffered = BufferedByteReceiveStream(stream)
        try:
            while True:
                response = decode_response(await buffered.receive_until(b"\n", MAX_LINE))
                if response.event is not None:
                    if self.events is not None:
                        try:
                            self.events.send_nowait(event_of(response))
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
                if self.events is not None:
                    self.events.close()
