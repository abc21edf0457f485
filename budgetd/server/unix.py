"""The Unix socket door: line-delimited JSON, pipelined, answered by id."""

import errno
import fcntl
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

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

READ_CHUNK = 1 << 16
MAX_IN_FLIGHT = 512  # requests per connection: past it we stop reading (backpressure)
OUTPUT_LIMIT = 8 << 20  # answers a client has not read yet: past it we stop reading
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
    def __init__(self, path: Path, ops: Ops, mode: int, max_frame_bytes: int, max_connections: int) -> None:
        self.path = path
        self.ops = ops
        self.mode = mode
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self._accepting = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_unix_listener(self.path, mode=self.mode)
        try:
            async with anyio.create_task_group() as tg:
                with self._accepting:
                    tg.start_soon(self._reap)
                    task_status.started()
                    async with listener:
                        while True:
                            stream = await listener.accept()
                            tg.start_soon(self._connection, stream)
                # Not accepting any more: wait for open connections to answer what they hold.
                tg.cancel_scope.deadline = anyio.current_time() + self.ops.refresh_timeout + 5
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def shutdown(self) -> None:
        """Stop accepting and stop reading; requests in flight are still answered."""
        self._accepting.cancel()
        for connection in list(self.connections):
            connection.reader.cancel()

    async def _reap(self) -> None:
        """Answer `busy` to requests that waited longer than the ask timeout."""
        while not (self._accepting.cancel_called and not self.connections):
            await anyio.sleep(0.25)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.expire(now)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            if len(self.connections) >= self.max_connections:
                error = OpError("busy", f"too many connections (limit {self.max_connections}); retry later")
                try:
                    await stream.send(encode_line(err(None, error)))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                return
            connection = Connection(stream, self.ops, self.max_frame_bytes)
            self.connections.add(connection)
            try:
                await connection.run()
            except Exception:  # a fault of one connection never takes the door down with it
                log.exception("a connection failed and was closed")
            finally:
                self.connections.discard(connection)


class ConnectionReply:
    """A reply slot that writes its answer straight into its connection's output."""

    __slots__ = ("connection", "request_id", "deadline", "op", "started")

    def __init__(self, connection: "Connection", request_id: Any, deadline: float, op: str) -> None:
        self.connection = connection
        self.request_id = request_id
        self.deadline = deadline
        self.op = op
        self.started = time.perf_counter()

    def set(self, value: Any) -> None:
        self.connection.ops.finished(self.op, "ok", self.started)
        self.connection.deliver(self, encode_line(ok(self.request_id, value)))

    def fail(self, error: BaseException) -> None:
        if not isinstance(error, OpError):
            log.error("request %r failed: %r", self.request_id, error)
            error = OpError("internal", f"internal error: {type(error).__name__}")
        self.connection.ops.finished(self.op, error.code, self.started)
        self.connection.deliver(self, encode_line(err(self.request_id, error)))


class Connection:
    """One client: splits frames, answers by id, writes answers from one writer task.

    Immediate ops are answered inline; ops served by one actor are told to it
    with a `ConnectionReply`; the rest run as tasks. Every answer lands in
    `out`, and the writer sends whatever has gathered in one write.
    """

    def __init__(self, stream: SocketStream, ops: Ops, max_frame: int) -> None:
        self.stream = stream
        self.ops = ops
        self.max_frame = max_frame
        self.reader = anyio.CancelScope()
        self.out = bytearray()
        self.outstanding: dict[ConnectionReply, None] = {}
        self.closed = False
        self._socket = stream.extra(SocketAttribute.raw_socket)
        self._writing = False
        self._in_chunk = False
        self._wake_writer = anyio.Event()
        self._room = anyio.Event()
        self._room.set()

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            self.tasks = tasks
            tasks.start_soon(self._writer)
            with self.reader:
                await self._read()
            # The client is gone or we are shutting down: answer what is in flight, then close.
            deadline = time.monotonic() + self.ops.refresh_timeout + 1
            while (self.outstanding or self.out) and not self.closed and time.monotonic() < deadline:
                await anyio.sleep(0.005)
            tasks.cancel_scope.cancel()

    # -- output --

    def deliver(self, reply: ConnectionReply, data: bytes) -> None:
        if self.outstanding.pop(reply, False) is False:
            return  # already answered `busy`
        self._write(data)
        if not self._room.is_set() and len(self.outstanding) < MAX_IN_FLIGHT:
            self._room.set()

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        self.out += data
        if not self._in_chunk:  # the reader pushes once after its whole chunk
            self._push()

    def _push(self) -> None:
        """Send from here when the socket takes it all (the usual case): no task switch per answer.

        Whatever the kernel does not take at once is left to the writer task.
        """
        if self._writing or not self.out:
            return  # the writer task owns the socket until it has sent `out`
        try:
            sent = self._socket.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.closed = True
            self.out.clear()
            return
        del self.out[:sent]
        if self.out:
            self._wake_writer.set()

    async def _writer(self) -> None:
        while not self.closed:
            await self._wake_writer.wait()
            self._wake_writer = anyio.Event()
            self._writing = True
            try:
                while self.out and not self.closed:
                    data = bytes(self.out)
                    self.out.clear()
                    await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.closed = True
                self.out.clear()
            finally:
                self._writing = False

    def expire(self, now: float) -> None:
        late = [r for r in self.outstanding if r.deadline <= now]
        for reply in late:
            reply.fail(OpError("busy", f"the daemon did not answer within {self.ops.timeout:g}s; retry shortly"))

    # -- input --

    async def _read(self) -> None:
        buffer = bytearray()
        skipping = False  # inside an oversized frame: drop bytes up to its newline
        while not self.closed:
            if not self._room.is_set():
                await self._room.wait()  # backpressure: too much in flight on this connection
            if len(self.out) > OUTPUT_LIMIT:
                await anyio.sleep(0.001)  # the client is not reading its answers
                continue
            try:
                chunk = await self.stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # a half-written frame of a departed client is dropped
            start = 0
            self._in_chunk = True
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    if not skipping:
                        buffer += chunk[start:]
                        if len(buffer) > self.max_frame:
                            skipping = True
                            buffer.clear()
                            self._write(self._too_large())
                    break
                if skipping:
                    skipping = False
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
            self._in_chunk = False
            self._push()

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
            self.tasks.start_soon(self._stream, request)
            return
        # A told actor may never answer (it crashed mid-message): the reaper answers `busy` for it.
        # A spawned handler always answers, its asks carrying their own timeouts.
        deadline = time.monotonic() + self.ops.timeout if kind.serve == "tell" else math.inf
        reply = ConnectionReply(self, request.id, deadline, kind.__struct_config__.tag)
        self.outstanding[reply] = None
        if len(self.outstanding) >= MAX_IN_FLIGHT:
            self._room = anyio.Event()
        try:
            self.ops.submit(request, reply, self.tasks.start_soon)
        except Exception as exc:
            reply.fail(exc)

    async def _stream(self, request: Any) -> None:
        """Answer `subscribe`, then send the feed's events until the connection ends.

        Events are taken from the feed only while the client keeps up; when it does
        not, the feed drops its oldest events and later sends a `lagged` marker.
        """
        try:
            result, feed = await self.ops.subscribe(request)
        except OpError as error:
            self._write(encode_line(err(request.id, error)))
            return
        self._write(encode_line(ok(request.id, result)))
        try:
            while not self.closed and not feed.closed:
                await feed.wait()
                while len(self.out) > STREAM_BACKLOG and not self.closed:
                    await anyio.sleep(0.01)
                for event in feed.take():
                    self._write(encode_line(event))
        finally:
            self.ops.unsubscribe(feed)

