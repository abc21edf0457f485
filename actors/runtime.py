"""The actor runtime: bounded mailboxes, tell/ask, supervision with backoff.

An actor is a task with private state and a `Mailbox`. Other parts hold its
`Ref`, never the actor: they can only send it messages. The mailbox belongs to
the Ref, so messages waiting in it survive a restart of the actor.
"""

import asyncio
import collections
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Generic, NamedTuple, Protocol, TypeVar

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


class Mailbox:
    """A bounded queue of messages with one receiver, on the running asyncio loop.

    It answers as anyio's memory object streams do (`WouldBlock` when full or empty, `EndOfStream` once
    closed and drained, `ClosedResourceError` to a sender after `close`), for a fraction of their cost: a
    receive from a non-empty mailbox does not pass through the event loop, and one that waits waits on a
    single future. A slot freed goes to the sender waiting longest, never to a later `send_nowait`.
    Fairness among actors is the receiver's: `Actor.run` yields after a long drain."""

    __slots__ = ("capacity", "_queue", "_closed", "_receiver", "_senders")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: collections.deque[Any] = collections.deque()
        self._closed = False
        self._receiver: asyncio.Future | None = None  # the receiver waiting for a message
        self._senders: collections.deque[_Sender] = collections.deque()  # senders waiting for room, in order

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def open_and_empty(self) -> bool:
        return not self._queue and not self._closed

    def send_nowait(self, message: Any) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if len(self._queue) >= self.capacity or self._senders:
            raise anyio.WouldBlock
        self._put(message)

    def deliver(self, message: Any) -> None:
        """Send past the capacity: for what an actor owes another (a settlement dropped as `busy` would
        leave its state wrong), never for requests."""
        if self._closed:
            raise anyio.ClosedResourceError
        self._put(message)

    def _put(self, message: Any) -> None:
        self._queue.append(message)
        if self._receiver is not None:
            _wake_up(self._receiver)

    async def send(self, message: Any) -> None:
        """Send, waiting for room (in turn with the other waiting senders)."""
        try:
            return self.send_nowait(message)
        except anyio.WouldBlock:
            pass
        sender = _Sender(asyncio.get_running_loop().create_future(), message)
        self._senders.append(sender)
        try:
            await sender.room
        except BaseException:
            if sender.sent:
                return  # it is in the mailbox: sent (the cancellation reaches the caller's next await)
            self._senders.remove(sender)
            raise
        if not sender.sent:
            raise anyio.ClosedResourceError

    def receive_nowait(self) -> Any:
        if self._queue:
            message = self._queue.popleft()
            if self._senders:  # the freed slot is the first waiting sender's
                sender = self._senders.popleft()
                sender.sent = True
                self._queue.append(sender.message)
                _wake_up(sender.room)
            return message
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> Any:
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                waiting = self._receiver = asyncio.get_running_loop().create_future()
                try:
                    await waiting
                finally:
                    self._receiver = None

    def close(self) -> None:
        """No more messages: the receiver gets what is queued, then `EndOfStream`."""
        self._closed = True
        if self._receiver is not None:
            _wake_up(self._receiver)
        while self._senders:
            _wake_up(self._senders.popleft().room)  # each finds its message not sent: closed

    def __aiter__(self) -> "Mailbox":
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _Sender:
    """A sender waiting for room: its message goes in when a slot frees (`sent`), then `room` is set."""

    __slots__ = ("room", "message", "sent")

    def __init__(self, room: asyncio.Future, message: Any) -> None:
        self.room, self.message, self.sent = room, message, False


class Actor:
    """Subclasses set `name` and `handlers` (message type -> handler), and may override
    `started`/`stopped`. A handler answers its message's `reply` itself (or passes it on to the
    actor that will); it may be a coroutine. `run` may be overridden for actors that drain their
    mailbox in batches.

    `immediate` names the message types whose handlers never await. One sent while the actor waits on
    an empty mailbox is handled in the sender's own call (`Ref.tell`), exactly where the actor would
    have handled it next, without the two wake-ups of the event loop a trip through the mailbox costs.
    """

    name = "actor"
    handlers: dict[type, Callable[[Any], Any]] = {}
    immediate: frozenset[type] = frozenset()

    def __init__(self) -> None:
        self.ref: Ref | None = None

    async def started(self) -> None:
        """(Re)load state. Called before the first message and after every restart."""

    async def stopped(self) -> None:
        """Release resources. Called on shutdown and before a restart."""

    async def handle(self, message: Any) -> None:
        if type(message) is _Fault:
            raise message.error  # of a message handled in its sender's call: the actor crashes here
        handler = self.handlers.get(type(message))
        if handler is None:
            raise TypeError(f"the {self.name} actor does not handle {type(message).__name__}")
        result = handler(message)
        if inspect.isawaitable(result):
            self.awaiting()
            await result

    def handle_sync(self, message: Any) -> None:
        """`handle` for a message whose handler does not await."""
        if inspect.isawaitable(self.handlers[type(message)](message)):
            raise TypeError(f"the {self.name} actor's handler of {type(message).__name__} awaits: it cannot be "
                            "immediate")

    def handle_now(self, message: Any) -> None:
        """Handle an `immediate` message in the sender's call, as `run` would have (a drain of one).

        A fault is the actor's, not the sender's: the message's reply fails, and the actor raises it in its
        own task (the supervisor restarts it) before it handles anything sent after."""
        try:
            self.handle_sync(message)
        except OpError as exc:
            fail_reply(message, exc)
        except Exception as exc:
            fail_reply(message, exc)
            self.ref.deliver(_Fault(exc))  # type: ignore[union-attr]
        finally:
            self.drained()

    def awaiting(self) -> None:
        """Called before a handler awaits: other tasks run meanwhile (the actor's own mailbox waits)."""

    async def run(self, mailbox: Mailbox) -> None:
        while True:
            try:
                message = mailbox.receive_nowait()
            except anyio.WouldBlock:
                message = await self._wait(mailbox)
            except anyio.EndOfStream:
                return
            if message is None:
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
            if handled >= DRAIN_LIMIT:
                await asyncio.sleep(0)  # a busy actor lets the others run

    async def _wait(self, mailbox: Mailbox) -> Any:
        """The next message, waited for (None once the mailbox is closed and drained). Meanwhile the actor is
        its Ref's `ready` one: an `immediate` message is handled in its sender's call."""
        ref = self.ref
        if ref is not None and self.immediate:
            ref.ready = self
        try:
            return await mailbox.receive()
        except anyio.EndOfStream:
            return None
        finally:
            if ref is not None:
                ref.ready = None

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


class _Fault(NamedTuple):
    """What an actor raises in its own task: the fault of a message handled in its sender's call."""

    error: Exception


class Ref:
    """The address of an actor: its mailbox and counters."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.mailbox = Mailbox(capacity)
        self.restarts = 0
        self.running = False
        self.finished = anyio.Event()
        self.ready: Actor | None = None  # the actor, while it waits on an empty mailbox (see `Actor.immediate`)

    @property
    def depth(self) -> int:
        return len(self.mailbox)

    def deliver(self, message: Any) -> None:
        """Send past the mailbox's capacity (see `Mailbox.deliver`); `unavailable` once it is closed."""
        try:
            self.mailbox.deliver(message)
        except anyio.ClosedResourceError:
            raise OpError("unavailable", f"the {self.name} actor is shutting down") from None

    def tell(self, message: Any) -> None:
        """Send without waiting; a full mailbox is `busy` (backpressure, never an unbounded queue)."""
        if self._handled_now(message):
            return
        try:
            self.mailbox.send_nowait(message)
        except anyio.WouldBlock:
            raise OpError("busy", f"the {self.name} actor is overloaded; retry shortly") from None
        except anyio.ClosedResourceError:
            raise OpError("unavailable", f"the {self.name} actor is shutting down") from None

    async def send(self, message: Any, timeout: float) -> None:
        """Send, waiting up to `timeout` for room in the mailbox."""
        if self._handled_now(message):
            return
        try:
            self.mailbox.send_nowait(message)
            return
        except anyio.WouldBlock:
            pass
        except anyio.ClosedResourceError:
            raise OpError("unavailable", f"the {self.name} actor is shutting down") from None
        with anyio.move_on_after(timeout):
            try:
                await self.mailbox.send(message)
                return
            except anyio.ClosedResourceError:
                raise OpError("unavailable", f"the {self.name} actor is shutting down") from None
        raise OpError("busy", f"the {self.name} actor is overloaded; retry shortly")

    def _handled_now(self, message: Any) -> bool:
        """Handle an `immediate` message in this call if the actor waits on an empty mailbox."""
        actor = self.ready
        if actor is None or type(message) not in actor.immediate or not self.mailbox.open_and_empty:
            return False
        self.ready = None  # what the handler sends this actor waits in the mailbox, in order
        try:
            actor.handle_now(message)
        finally:
            if self.mailbox.open_and_empty:
                self.ready = actor
        return True

    async def ask(self, make: Callable[[Reply[T]], Any], timeout: float = 10.0) -> T:
        """Build a message around a fresh reply slot, send it and await the answer."""
        reply: Reply[T] = Reply()
        await self.send(make(reply), timeout)
        return await reply.wait(timeout)

    def close(self) -> None:
        """No more messages: the actor drains what is queued, then stops."""
        self.mailbox.close()


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
                await actor.run(ref.mailbox)
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
