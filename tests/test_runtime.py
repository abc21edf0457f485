"""The actor runtime: mailboxes, ask with timeouts, supervision with restarts."""

import anyio
import msgspec
import pytest

from actors.runtime import Actor, Mailbox, Reply, Supervisor
from budgetd.protocol import OpError


class Get(msgspec.Struct):
    reply: Reply


class Crash(msgspec.Struct):
    reply: Reply


class Counter(Actor):
    """Counts its starts in a box it does not own, so restarts are visible."""

    name = "counter"

    def __init__(self, starts: list[int]) -> None:
        super().__init__()
        self.starts = starts
        self.handled = 0

    async def started(self) -> None:
        self.starts.append(1)

    async def handle(self, message) -> None:
        if isinstance(message, Crash):
            raise RuntimeError("boom")
        self.handled += 1
        message.reply.set(self.handled)


@pytest.mark.anyio
async def test_crashed_actor_is_restarted_and_counted():
    sup = Supervisor(max_backoff=0.05)
    ref = sup.ref("counter", 8)
    starts: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Counter(starts))
        assert await ref.ask(lambda r: Get(r)) == 1
        with pytest.raises(OpError) as info:
            await ref.ask(lambda r: Crash(r))
        assert info.value.code == "internal" and "boom" in info.value.message
        # the restarted actor has fresh state and still serves
        assert await ref.ask(lambda r: Get(r)) == 1
        assert ref.restarts == 1 and len(starts) == 2
        ref.close()
    assert ref.finished.is_set()


@pytest.mark.anyio
async def test_full_mailbox_is_busy_not_unbounded():
    sup = Supervisor()
    ref = sup.ref("slow", 2)
    # nobody runs this actor: the mailbox fills up
    ref.tell(Get(Reply()))
    ref.tell(Get(Reply()))
    with pytest.raises(OpError) as info:
        ref.tell(Get(Reply()))
    assert info.value.code == "busy"
    with pytest.raises(OpError) as info:
        await ref.ask(lambda r: Get(r), timeout=0.05)
    assert info.value.code == "busy"
    assert ref.depth == 2


@pytest.mark.anyio
async def test_ask_times_out_as_busy():
    class Silent(Actor):
        async def handle(self, message) -> None:
            pass  # never answers

    sup = Supervisor()
    ref = sup.ref("silent", 4)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, Silent)
        with pytest.raises(OpError) as info:
            await ref.ask(lambda r: Get(r), timeout=0.05)
        assert info.value.code == "busy"
        ref.close()
    with pytest.raises(OpError) as info:
        ref.tell(Get(Reply()))
    assert info.value.code == "unavailable"


@pytest.mark.anyio
async def test_a_burst_longer_than_one_drain_loses_nothing():
    """Every message of a burst is handled, across the drain limit's boundaries."""
    sup = Supervisor()
    ref = sup.ref("counter", 5000)
    starts: list[int] = []
    replies = [Reply() for _ in range(3000)]
    for reply in replies:
        ref.tell(Get(reply))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Counter(starts))
        answers = [await r.wait(5) for r in replies]
        ref.close()
    assert answers == list(range(1, 3001))


@pytest.mark.anyio
async def test_a_freed_slot_goes_to_the_sender_waiting_longest():
    """Senders waiting for room get it in their order, before a `tell` that comes later; one that gives up
    (timed out) sends nothing and passes its turn on."""
    mailbox = Mailbox(1)
    mailbox.send_nowait("first")
    order: list[str] = []

    async def send(message: str, timeout: float = 5) -> None:
        with anyio.move_on_after(timeout):
            await mailbox.send(message)
            order.append(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "waits-1")
        await anyio.sleep(0.01)
        tg.start_soon(send, "gives-up", 0.02)
        await anyio.sleep(0.01)
        tg.start_soon(send, "waits-2")
        await anyio.sleep(0.05)  # "gives-up" has given up
        with pytest.raises(anyio.WouldBlock):
            mailbox.send_nowait("late")  # full, and senders wait before it
        received = [mailbox.receive_nowait()]
        await anyio.sleep(0.01)
        received.append(mailbox.receive_nowait())
        await anyio.sleep(0.01)
        received.append(mailbox.receive_nowait())
    assert received == ["first", "waits-1", "waits-2"] and order == ["waits-1", "waits-2"]
    mailbox.send_nowait("late")  # room again, nobody waiting
    mailbox.deliver("past-capacity")  # what an actor owes another is never refused as busy
    assert len(mailbox) == 2


@pytest.mark.anyio
async def test_closing_a_mailbox_refuses_waiting_senders_and_drains_what_is_queued():
    mailbox = Mailbox(1)
    mailbox.send_nowait("queued")
    refused: list[type] = []

    async def send() -> None:
        try:
            await mailbox.send("never")
        except anyio.ClosedResourceError:
            refused.append(anyio.ClosedResourceError)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await anyio.sleep(0.01)
        mailbox.close()
    assert refused == [anyio.ClosedResourceError]
    assert [message async for message in mailbox] == ["queued"]
    with pytest.raises(anyio.ClosedResourceError):
        mailbox.deliver("after close")


class Note(msgspec.Struct):
    """Appended to the log of the actor that handles it, with how it was handled."""

    text: str
    reply: Reply


class Slow(msgspec.Struct):
    """Handled by awaiting: the actor is busy meanwhile."""

    release: anyio.Event
    reply: Reply


class Logger(Actor):
    """Handles `Note` without awaiting (so at once, when idle) and `Slow` by awaiting."""

    name = "logger"

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.drains = 0
        self.handlers = {Note: self._note, Slow: self._slow}
        self.immediate = frozenset({Note})

    def _note(self, m: Note) -> None:
        if m.text == "boom":
            raise RuntimeError("boom")
        self.log.append(m.text)
        m.reply.set(len(self.log))

    async def _slow(self, m: Slow) -> None:
        await m.release.wait()
        self.log.append("slow")
        m.reply.set(len(self.log))

    def drained(self) -> None:
        self.drains += 1


@pytest.mark.anyio
async def test_an_immediate_message_to_an_idle_actor_is_handled_in_the_senders_call():
    sup = Supervisor(max_backoff=0.05)
    ref = sup.ref("logger", 8)
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Logger(log))
        await anyio.sleep(0.01)  # the actor waits on its empty mailbox
        assert ref.ready is not None
        actor = ref.ready
        reply: Reply = Reply()
        ref.tell(Note("a", reply))
        # answered before `tell` returned, nothing queued, and counted as a drain of one
        assert log == ["a"] and reply.done and ref.depth == 0 and actor.drains == 1
        assert await reply.wait(1) == 1
        ref.close()


@pytest.mark.anyio
async def test_an_immediate_message_waits_its_turn_behind_a_busy_actor():
    sup = Supervisor(max_backoff=0.05)
    ref = sup.ref("logger", 8)
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Logger(log))
        await anyio.sleep(0.01)
        release = anyio.Event()
        slow: Reply = Reply()
        ref.tell(Slow(release, slow))
        first: Reply = Reply()
        ref.tell(Note("queued behind the slow one", first))  # the mailbox is not empty: queued
        await anyio.sleep(0.01)
        assert ref.ready is None and not first.done  # the actor awaits inside `Slow`
        second: Reply = Reply()
        ref.tell(Note("queued too", second))
        assert not second.done and ref.depth == 2
        release.set()
        assert await second.wait(1) == 3
        assert log == ["slow", "queued behind the slow one", "queued too"]
        await anyio.sleep(0.01)
        assert ref.ready is not None  # idle again
        ref.close()


@pytest.mark.anyio
async def test_a_fault_of_a_message_handled_at_once_crashes_the_actor_in_its_own_task():
    sup = Supervisor(max_backoff=0.05)
    ref = sup.ref("logger", 8)
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Logger(log))
        await anyio.sleep(0.01)
        crashed: Reply = Reply()
        ref.tell(Note("boom", crashed))  # the sender's call returns: the fault is the actor's
        with pytest.raises(OpError) as info:
            await crashed.wait(1)
        assert info.value.code == "internal" and "boom" in info.value.message
        after: Reply = Reply()
        ref.tell(Note("after", after))  # behind the fault in the mailbox: handled by the restarted actor
        assert await after.wait(1) == 1 and log == ["after"]
        assert ref.restarts == 1
        ref.close()


@pytest.mark.anyio
async def test_a_closed_actor_takes_no_message_at_once():
    sup = Supervisor(max_backoff=0.05)
    ref = sup.ref("logger", 8)
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ref, lambda: Logger(log))
        await anyio.sleep(0.01)
        ref.close()
        with pytest.raises(OpError) as info:
            ref.tell(Note("late", Reply()))
        assert info.value.code == "unavailable" and log == []
    assert ref.ready is None
