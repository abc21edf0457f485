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
