"""The actor runtime: bounded mailboxes, tell/ask, supervision with backoff.

An actor is a task with private state and a mailbox (an anyio memory object
stream). Other parts hold its `Ref`, never the actor: they can only send it
messages. The mailbox belongs to the Ref, so messages waiting in it survive a
restart of the actor.
"""

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from budgetd.backoff import Backoff
from budgetd.errors import OpError

log = logging.getLogger("budgetd.actors")
DRAIN_LIMIT = 256
HEALTHY_S = 30.0  # an actor that ran this long before it crashed restarts at once again
T = TypeVar("T")


class ReplyTo(Protocol[T]):
    """Where an actor sends its answer: `Reply` (awaitable) or a door's own slot.

    A door may pass a slot whose `set` writes the answer straight to its
    client, so a request costs no task and no wake-up of its own.
    """

    def set(self, value: T) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class Reply(Generic[T]):
    """A one-shot reply slot carried inside a message that expects an answer.

    Waited on with a future of the running asyncio loop (the daemon runs on asyncio): an anyio Event and
    cancel scope per ask cost four times as much, on every request the HTTP door and the actors make."""

    __slots__ = ("_done", "_value", "_error", "_future")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._future: asyncio.Future | None = None  # made by the first `wait`

    @property
    def done(self) -> bool:
        """Answered, or given up by its waiter: an actor need not do the work (nor open what it would)."""
        return self._done

    def set(self, value: T) -> None:
        if not self._done:
            self._done, self._value = True, value
            self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._wake()

    def _wake(self) -> None:
        if self._future is not None:
            _wake_up(self._future)

    async def wait(self, timeout: float) -> T:
        if not self._done:
            loop = asyncio.get_running_loop()
            future = self._future = loop.create_future()
            timer = loop.call_later(timeout, _wake_up, future)
            try:
                await future
            finally:
                timer.cancel()
                if not self._done:  # timed out, or the waiter was cancelled: an answer now would be lost
                    self._done = True
                    self._error = OpError("busy", f"the daemon did not answer within {timeout:g}s; retry shortly")
        if self._error is not None:
            raise self._error
        return self._value


def _wake_up(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Actor:
    """Subclasses set `name` and `handlers` (message type -> handler), and may override
    `started`/`stopped`. A handler answers its message's `reply` itself (or passes it on to the
    actor that will); it may be a coroutine. `run` may be overridden for actors that drain their
    mailbox in batches.
    """

    name = "actor"
    handlers: dict[type, Callable[[Any], Any]] = {}

    def __init__(self) -> None:
        self.ref: Ref | None = None

    async def started(self) -> None:
        """(Re)load state. Called before the first message and after every restart."""

    async def stopped(self) -> None:
        """Release resources. Called on shutdown and before a restart."""

    async def handle(self, message: Any) -> None:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise TypeError(f"the {self.name} actor does not handle {type(message).__name__}")
        result = handler(message)
        if inspect.isawaitable(result):
            self.awaiting()
            await result

    def awaiting(self) -> None:
        """Called before a handler awaits: other tasks run meanwhile (the actor's own mailbox waits)."""

    async def run(self, mailbox: anyio.abc.ObjectReceiveStream[Any]) -> None:
        while True:
            try:
                message = await mailbox.receive()
            except anyio.EndOfStream:
                return
            # Then what is already waiting, without a trip through the event loop each
            # (but a bounded number, so a busy actor still lets others run).
            handled = 0
            try:
                while True:
                    try:
                        await self.handle(message)
                    except OpError as exc:  # a refusal, not a fault: the actor carries on
                        fail_reply(message, exc)
                    except Exception as exc:
                        fail_reply(message, exc)
                        raise
                    handled += 1
                    if handled >= DRAIN_LIMIT:
                        break
                    try:
                        message = mailbox.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
            finally:
                self.drained()

    def drained(self) -> None:
        """Called once the messages waiting in the mailbox were handled (before the actor waits again, and
        before it raises): work that can be done once for all of them."""


def answering(ask: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[None]]:
    """A handler that awaits `ask(message)` and answers the message's reply with it."""

    async def handler(message: Any) -> None:
        message.reply.set(await ask(message))

    return handler


def fail_reply(message: Any, exc: BaseException) -> None:
    reply = getattr(message, "reply", None)
    if reply is not None:
        reply.fail(exc if isinstance(exc, OpError) else OpError("internal", f"{type(exc).__name__}: {exc}"))


class Ref:
    """The address of an actor: its mailbox and counters."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._send, self._receive = anyio.create_memory_object_stream[Any](capacity)
        self.restarts = 0
        self.running = False
        self.finished = anyio.Event()

    @property
    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def tell(self, message: Any) -> None:
        """Send without waiting; a full mailbox is `busy` (backpressure, never an unbounded queue)."""
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            raise OpError("busy", f"the {self.name} actor is overloaded; retry shortly") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise OpError("unavailable", f"the {self.name} actor is shutting down") from None

    async def send(self, message: Any, timeout: float) -> None:
        """Send, waiting up to `timeout` for room in the mailbox."""
        try:
            self._send.send_nowait(message)
            return
        except anyio.WouldBlock:
            pass
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise OpError("unavailable", f"the {self.name} actor is shutting down") from None
        with anyio.move_on_after(timeout):
            try:
                await self._send.send(message)
                return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise OpError("unavailable", f"the {self.name} actor is shutting down") from None
        raise OpError("busy", f"the {self.name} actor is overloaded; retry shortly")

    async def ask(self, make: Callable[[Reply[T]], Any], timeout: float = 10.0) -> T:
        """Build a message around a fresh reply slot, send it and await the answer."""
        reply: Reply[T] = Reply()
        await self.send(make(reply), timeout)
        return await reply.wait(timeout)

    def close(self) -> None:
        """No more messages: the actor drains what is queued, then stops."""
        self._send.close()


class Supervisor:
    """Runs actors in a task group and restarts any that raises, with backoff."""

    def __init__(self, max_backoff: float = 5.0) -> None:
        self.refs: dict[str, Ref] = {}
        self.max_backoff = max_backoff

    def ref(self, name: str, capacity: int) -> Ref:
        ref = self.refs[name] = Ref(name, capacity)
        return ref

    async def supervise(
        self, ref: Ref, factory: Callable[[], Actor], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor until its mailbox is closed and drained; restart it when it raises."""
        try:
            await self._supervise(ref, factory, task_status)
        finally:
            ref.finished.set()

    async def _supervise(self, ref: Ref, factory: Callable[[], Actor], task_status: TaskStatus[None]) -> None:
        backoff = Backoff(first=0.05, cap=self.max_backoff)
        announced = False
        while True:
            actor = factory()
            actor.ref = ref
            began = time.monotonic()
            try:
                await actor.started()
                ref.running = True
                if not announced:
                    announced = True
                    task_status.started()
                await actor.run(ref._receive)
                await actor.stopped()
                ref.running = False
                return
            except anyio.get_cancelled_exc_class():
                # The daemon is going down (a start-up failure elsewhere, or the last resort of a
                # shutdown): release what the actor holds, or its threads keep the process alive.
                ref.running = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await actor.stopped()
                    except Exception:
                        log.exception("actor %s failed to stop cleanly", ref.name)
                raise
            except Exception:
                ref.running = False
                with anyio.CancelScope(shield=True):
                    try:
                        await actor.stopped()
                    except Exception:
                        log.exception("actor %s failed to stop cleanly", ref.name)
                if not announced:
                    raise  # a first start that fails is the daemon's to report, not to retry
                ref.restarts += 1
                log.exception("actor %s crashed (restart %d)", ref.name, ref.restarts)
                if time.monotonic() - began > HEALTHY_S:
                    backoff.reset()  # it ran well for a while: this crash is not part of a crash loop
                await anyio.sleep(backoff.next())
