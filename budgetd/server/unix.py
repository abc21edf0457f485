"""The Unix socket door: line-delimited JSON, pipelined, answered by id."""

import errno
import fcntl
import logging
import socket
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus

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
MAX_IN_FLIGHT = 512  # per connection: past it we stop reading (backpressure)


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
        self.connections: set[anyio.CancelScope] = set()
        self._accepting = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_unix_listener(self.path, mode=self.mode)
        try:
            async with anyio.create_task_group() as connections:
                with self._accepting:
                    task_status.started()
                    async with listener:
                        while True:
                            stream = await listener.accept()
                            connections.start_soon(self._connection, stream)
                # not accepting any more; the task group waits for open connections to drain
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def shutdown(self) -> None:
        """Stop accepting and stop reading; requests in flight are still answered."""
        self._accepting.cancel()
        for reader in list(self.connections):
            reader.cancel()

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            if len(self.connections) >= self.max_connections:
                error = OpError("busy", f"too many connections (limit {self.max_connections}); retry later")
                await _send_quietly(stream, encode_line(err(None, error)))
                return
            reader = anyio.CancelScope()
            self.connections.add(reader)
            try:
                async with anyio.create_task_group() as requests:
                    with reader:
                        await Connection(stream, self.ops, self.max_frame_bytes, requests).read()
            finally:
                self.connections.discard(reader)


async def _send_quietly(stream: SocketStream, data: bytes) -> None:
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


class Connection:
    """One client: splits frames, answers immediate ops inline, spawns the rest."""

    def __init__(self, stream: SocketStream, ops: Ops, max_frame: int, requests: anyio.abc.TaskGroup) -> None:
        self.stream = stream
        self.ops = ops
        self.max_frame = max_frame
        self.requests = requests
        self.send_lock = anyio.Lock()
        self.in_flight = anyio.Semaphore(MAX_IN_FLIGHT)
        self.closed = False

    async def read(self) -> None:
        buffer = bytearray()
        skipping = False  # inside an oversized frame: drop bytes up to its newline
        while not self.closed:
            try:
                chunk = await self.stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # a half-written frame of a departed client is dropped
            start = 0
            out = bytearray()
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    if not skipping:
                        buffer += chunk[start:]
                        if len(buffer) > self.max_frame:
                            skipping = True
                            buffer.clear()
                            out += self._too_large()
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
                        out += self._too_large()
                    elif frame.strip():
                        answer = self._frame(frame)
                        if answer is not None:
                            out += answer
                        elif out:  # keep answers in order of arrival where we can
                            await self._send(bytes(out))
                            out.clear()
                        if answer is None:
                            await self._spawn_pending()
                start = newline + 1
            if out:
                await self._send(bytes(out))

    def _too_large(self) -> bytes:
        return encode_line(err(None, OpError(
            "frame_too_large",
            f"frame exceeds max_frame_bytes ({self.max_frame}); it was skipped up to its newline",
        )))

    def _frame(self, frame: bytes) -> bytes | None:
        """Answer now (bytes), or leave `self._pending` to be spawned (None)."""
        try:
            request = decode_request(frame)
        except OpError as error:
            return encode_line(err(request_id_of(error), error))
        immediate = self.ops.immediate.get(type(request))
        if immediate is not None:
            try:
                return encode_line(ok(request.id, immediate(request)))
            except OpError as error:
                return encode_line(err(request.id, error))
        self._pending = request
        return None

    async def _spawn_pending(self) -> None:
        await self.in_flight.acquire()
        self.requests.start_soon(self._answer, self._pending)

    async def _answer(self, request: Any) -> None:
        try:
            try:
                result = await self.ops.dispatch(request)
                data = encode_line(ok(request.id, result))
            except OpError as error:
                data = encode_line(err(request.id, error))
            except Exception as exc:
                log.exception("op %s failed", type(request).__name__)
                data = encode_line(err(request.id, OpError("internal", f"internal error: {type(exc).__name__}")))
            await self._send(data)
        finally:
            self.in_flight.release()

    async def _send(self, data: bytes) -> None:
        if self.closed:
            return
        async with self.send_lock:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.closed = True

