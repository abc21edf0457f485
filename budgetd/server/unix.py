"""The Unix socket door: line-delimited JSON, pipelined, answered by id."""

import asyncio
import errno
import fcntl
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from budgetd.protocol import (
    OpError,
    decode_request,
    encode_line,
    err,
    ok,
    request_id_of,
)
from budgetd.server.ops import Ops

log = logging.getLogger("budgetd.socket")

MAX_IN_FLIGHT = 512  # requests per connection: past it we stop reading (backpressure)
MAX_ASKS_IN_FLIGHT = 16  # of them, ops answered by a handler that awaits (lists, reports: large answers)
MAX_STREAMS = 16  # subscriptions per connection
OUTPUT_LIMIT = 8 << 20  # answers a client has not read yet: past it we stop reading
BACKLOG = 65535  # connections the kernel queues before we accept them (asyncio's default is 100)
STREAM_BACKLOG = 256 << 10  # unread events past which a subscription stops taking from its feed


class SocketInUse(Exception):
    """Another live daemon owns the socket."""


def prepare_socket_path(path: Path) -> Any:
    """Make the directory (0700), take the socket's lock, replace a stale socket.

    Returns the open lock file, to be kept for the daemon's lifetime.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise SocketInUse(f"another budgetd is already serving {path}; stop it first or use --socket") from None
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK, errno.EPROTOTYPE):
                lock.close()
                raise
            path.unlink(missing_ok=True)  # stale: its daemon is gone
        else:
            lock.close()
            raise SocketInUse(f"a live server answers on {path}; stop it first or use --socket")
        finally:
            probe.close()
    return lock


class SocketServer:
    """Serves the socket with asyncio's transports: a frame is handled in the loop's own read callback,
    with no task and no stream object in between (the daemon runs on asyncio, with uvloop when
    installed); ops that await run as tasks of `serve`'s task group."""

    def __init__(self, path: Path, ops: Ops, mode: int, max_frame_bytes: int, max_connections: int) -> None:
        self.path = path
        self.ops = ops
        self.mode = mode
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self._accepting = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listening = _listen(self.path, self.mode)
        try:
            async with anyio.create_task_group() as tg:
                self.spawn = tg.start_soon
                loop = asyncio.get_running_loop()
                server = await loop.create_unix_server(lambda: Connection(self), sock=listening, backlog=BACKLOG)
                listening = None  # the server owns it now
                try:
                    with self._accepting:
                        tg.start_soon(self._reap)
                        task_status.started()
                        await anyio.sleep_forever()
                finally:
                    server.close()
                # Not accepting any more: wait for open connections to answer what they hold.
                with anyio.move_on_after(self.ops.refresh_timeout + 5):
                    while self.connections:
                        await anyio.sleep(0.01)
                for connection in list(self.connections):
                    connection.abort()
                tg.cancel_scope.cancel()
        finally:
            if listening is not None:
                listening.close()
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def shutdown(self) -> None:
        """Stop accepting and stop reading; requests in flight are still answered."""
        self._accepting.cancel()
        for connection in list(self.connections):
            connection.stop_reading()

    async def _reap(self) -> None:
        """Answer `busy` to requests that waited longer than the ask timeout."""
        while True:
            await anyio.sleep(0.25)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.expire(now)


def _listen(path: Path, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class ConnectionReply:
    """A reply slot that writes its answer straight into its connection's output."""

    __slots__ = ("connection", "request_id", "deadline", "op", "started", "asks")

    def __init__(self, connection: "Connection", request_id: Any, deadline: float, op: str, asks: bool) -> None:
        self.connection = connection
        self.request_id = request_id
        self.deadline = deadline
        self.op = op
        self.started = time.perf_counter()
        self.asks = asks  # served by a handler that awaits

    def set(self, value: Any) -> None:
        self.connection.ops.finished(self.op, "ok", self.started)
        self.connection.deliver(self, encode_line(ok(self.request_id, value)))

    def fail(self, error: BaseException) -> None:
        if not isinstance(error, OpError):
            log.error("request %r failed: %r", self.request_id, error)
            error = OpError("internal", f"internal error: {type(error).__name__}")
        self.connection.ops.finished(self.op, error.code, self.started)
        self.connection.deliver(self, encode_line(err(self.request_id, error)))


class Connection(asyncio.Protocol):
    """One client: splits frames, answers by id.

    Immediate ops are answered inline; ops served by one actor are told to it
    with a `ConnectionReply`; the rest run as tasks. Answers made while a chunk
    of input is read go out in one write after it; others are written at once
    (the transport buffers what the kernel does not take).
    """

    def __init__(self, server: SocketServer) -> None:
        self.server = server
        self.ops = server.ops
        self.max_frame = server.max_frame_bytes
        self.outstanding: dict[ConnectionReply, None] = {}
        self.closed = False  # the client is gone: nothing more is written
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._skipping = False  # inside an oversized frame: drop bytes up to its newline
        self._out: list[bytes] | None = None  # answers gathered while a chunk is read
        self._paused_by: set[str] = set()  # why reading is paused: full (see `_full`), stopped
        self._ended = False  # the client sent EOF, or we stopped reading: close once all is answered
        self._streams: set[anyio.CancelScope] = set()
        self._asks = 0  # outstanding requests served by a handler that awaits
        self._held = b""  # input not yet taken: the connection was full (see `_full`)
        self._taking = False

    # -- the transport's callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.server.max_connections:
            error = OpError("busy", f"too many connections (limit {self.server.max_connections}); retry later")
            self.transport.write(encode_line(err(None, error)))  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            self.closed = True
            return
        self.server.connections.add(self)
        self.transport.set_write_buffer_limits(high=OUTPUT_LIMIT)  # type: ignore[union-attr]
        if self.server._accepting.cancel_called:
            self.stop_reading()

    def data_received(self, data: bytes) -> None:
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Serve the frames of `data` while the connection has room; keep the rest for when it has again."""
        self._out, self._taking = [], True
        try:
            rest = self._split(data)
            if rest:
                self._held = rest
                self._pause("full")
        except Exception:  # a fault of one connection never takes the door down with it
            log.exception("a connection failed and was closed")
            self.abort()
        finally:
            out, self._out, self._taking = self._out, None, False
            if out and not self.closed:
                self.transport.write(b"".join(out))  # type: ignore[union-attr]

    def _full(self) -> bool:
        """Too much in flight, or answers the client has not read: take no more requests for now (memory
        stays bounded by what is in flight, whatever a client sends or fails to read)."""
        return (len(self.outstanding) >= MAX_IN_FLIGHT or self._asks >= MAX_ASKS_IN_FLIGHT
                or self._unsent() > OUTPUT_LIMIT)

    def _room(self) -> None:
        """Room again: the input held back is served, then reading resumes."""
        if self._taking or self.closed or self._full():
            return
        if self._held:
            held, self._held = self._held, b""
            self._take(held)
            if self._held:
                return
        self._resume("full")
        if self._ended:
            self._close_when_answered()

    def eof_received(self) -> bool:
        # A half-written frame of a departed client is dropped; what it sent whole is still answered.
        self._end()
        return True  # keep the transport open to write the answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for scope in self._streams:
            scope.cancel()

    def pause_writing(self) -> None:
        self._pause("full")  # the client is not reading its answers

    def resume_writing(self) -> None:
        self._room()

    # -- output --

    def deliver(self, reply: ConnectionReply, data: bytes) -> None:
        if self.outstanding.pop(reply, False) is False:
            return  # already answered `busy`
        if reply.asks:
            self._asks -= 1
        self._write(data)
        self._room()
        if self._ended:
            self._close_when_answered()

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        if self._out is not None:
            self._out.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def expire(self, now: float) -> None:
        late = [r for r in self.outstanding if r.deadline <= now]
        for reply in late:
            reply.fail(OpError("busy", f"the daemon did not answer within {self.ops.timeout:g}s; retry shortly"))

    def stop_reading(self) -> None:
        """Shutting down: read nothing more, answer what is in flight, then close (input held back is
        dropped, as unread input is)."""
        self._pause("stopped")
        self._held = b""
        self._end()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _end(self) -> None:
        """No more requests will come: subscriptions end, and the connection closes once all is answered."""
        self._ended = True
        for scope in self._streams:
            scope.cancel()
        self._close_when_answered()

    def _close_when_answered(self) -> None:
        if not (self.outstanding or self._streams or self._held or self.closed) and self.transport is not None:
            self.closed = True
            self.transport.close()  # after what it has buffered is sent

    def _pause(self, why: str) -> None:
        if not self._paused_by and not self.closed and self.transport is not None:
            self.transport.pause_reading()
        self._paused_by.add(why)

    def _resume(self, why: str) -> None:
        if why not in self._paused_by:
            return
        self._paused_by.discard(why)
        if not self._paused_by and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    # -- input --

    def _split(self, chunk: bytes) -> bytes:
        """Serve every whole frame of `chunk`, keeping a partial one for the next; the part not served
        because the connection is full."""
        buffer = self._buffer
        start = 0
        while True:
            if not buffer and not self._skipping and start < len(chunk) and self._full():
                return chunk[start:]
            newline = chunk.find(b"\n", start)
            if newline < 0:
                if not self._skipping:
                    buffer += chunk[start:]
                    if len(buffer) > self.max_frame:
                        self._skipping = True
                        buffer.clear()
                        self._write(self._too_large())
                return b""
            if self._skipping:
                self._skipping = False
            else:
                if buffer:
                    buffer += chunk[start:newline]
                    frame = bytes(buffer)
                    buffer.clear()
                else:
                    frame = chunk[start:newline]
                if len(frame) > self.max_frame:
                    self._write(self._too_large())
                elif frame.strip():
                    self._frame(frame)
            start = newline + 1

    def _too_large(self) -> bytes:
        return encode_line(err(None, OpError(
            "frame_too_large",
            f"frame exceeds max_frame_bytes ({self.max_frame}); it was skipped up to its newline",
        )))

    def _frame(self, frame: bytes) -> None:
        try:
            request = decode_request(frame)
        except OpError as error:
            self._write(encode_line(err(request_id_of(error), error)))
            return
        kind = type(request)
        if kind.serve == "immediate":  # answered inline: no reply slot, no task
            started = time.perf_counter()
            try:
                self._write(encode_line(ok(request.id, self.ops.served[kind].handler(request))))
                self.ops.finished(kind.__struct_config__.tag, "ok", started)
            except OpError as error:
                self._write(encode_line(err(request.id, error)))
            return
        if kind.serve == "stream":
            if len(self._streams) >= MAX_STREAMS:
                self._write(encode_line(err(request.id, OpError(
                    "busy", f"this connection has {MAX_STREAMS} subscriptions, the most one may have; "
                    "subscribe to several topics at once, or on another connection"))))
                return
            scope = anyio.CancelScope()  # counted from now: the connection is not closed before it answers
            self._streams.add(scope)
            self.server.spawn(self._stream, request, scope)
            return
        # A told actor may never answer (it crashed mid-message): the reaper answers `busy` for it.
        # A spawned handler always answers, its asks carrying their own timeouts.
        deadline = time.monotonic() + self.ops.timeout if kind.serve == "tell" else math.inf
        asks = kind.serve == "ask"
        reply = ConnectionReply(self, request.id, deadline, kind.__struct_config__.tag, asks)
        self.outstanding[reply] = None
        if asks:
            self._asks += 1
        try:
            self.ops.submit(request, reply, self.server.spawn)
        except Exception as exc:
            reply.fail(exc)

    async def _stream(self, request: Any, scope: anyio.CancelScope) -> None:
        """Answer `subscribe`, then send the feed's events until the connection ends.

        Events are taken from the feed only while the client keeps up; when it does
        not, the feed drops its oldest events and later sends a `lagged` marker.
        """
        try:
            with scope:
                await self._feed(request)
        finally:
            self._streams.discard(scope)
            if self._ended:
                self._close_when_answered()

    async def _feed(self, request: Any) -> None:
        # Not cancelled half-way: a feed the bus opened is always closed again, and the request answered.
        with anyio.CancelScope(shield=True):
            try:
                result, feed = await self.ops.subscribe(request)
            except OpError as error:
                self._write(encode_line(err(request.id, error)))
                return
        try:
            self._write(encode_line(ok(request.id, result)))
            while not self.closed and not feed.closed and not self._ended:
                await feed.wait()
                while self._unsent() > STREAM_BACKLOG and not self.closed:
                    await anyio.sleep(0.01)
                for event in feed.take():
                    self._write(encode_line(event))
        finally:
            self.ops.unsubscribe(feed)

    def _unsent(self) -> int:
        return 0 if self.transport is None or self.closed else self.transport.get_write_buffer_size()
