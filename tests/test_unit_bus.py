"""The bus in-process: in a fleet it carries the other nodes' events to subscribers, but not to the daemon's
own consumers (`local_only`), and says which topics its subscribers follow."""

import datetime as dt

import anyio
import pytest

from actors.bus import Bus, CountFeeds, Publish, Relayed, SubscribeMsg, WantedTopics
from actors.runtime import Supervisor
from budgetd.protocol import Event, encode


async def subscribe(bus, topics, **kw):
    return await bus.ask(lambda reply: SubscribeMsg(topics=topics, after=kw.pop("after", None), reply=reply, **kw))


@pytest.mark.anyio
async def test_relayed_events_reach_subscribers_but_not_local_only_ones_and_are_numbered_here():
    sup = Supervisor()
    bus = sup.ref("bus", 64)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, bus, lambda: Bus(node="node-a"))
        user = await subscribe(bus, ["usage", "alert"])
        alerter = await subscribe(bus, ["usage", "alert"], local_only=True)
        assert await bus.ask(lambda reply: WantedTopics(reply=reply)) == {"usage", "alert"}
        bus.tell(Publish(events=[("usage.recorded", {"record_id": 1})]))
        then = dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
        bus.tell(Relayed(events=[Event(event="alert.raised", seq=0, ts=then, data={"id": 7}, node="node-b"),
                                 Event(event="price.changed", seq=0, ts=then, data={}, node="node-b")]))
        await bus.ask(lambda reply: CountFeeds(reply=reply))  # everything before it was handled
        seen = user.take()
        assert [(e.event, e.seq, e.node) for e in seen] == [("usage.recorded", 1, "node-a"),
                                                             ("alert.raised", 2, "node-b")]
        assert seen[1].ts == then  # the time it happened on its node
        assert [(e.event, e.node) for e in alerter.take()] == [("usage.recorded", "node-a")]
        # a resume from the recent events keeps the same rule
        assert [e.seq for e in (await subscribe(bus, ["alert", "price", "usage"], after=0)).take()] == [1, 2, 3]
        assert [e.seq for e in (await subscribe(bus, ["alert", "price", "usage"], after=0,
                                                local_only=True)).take()] == [1]
        bus.close()


@pytest.mark.anyio
async def test_a_single_hosts_events_name_no_node():
    sup = Supervisor()
    bus = sup.ref("bus", 64)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, bus, lambda: Bus())
        feed = await subscribe(bus, ["usage"], local_only=True)
        bus.tell(Publish(events=[("usage.recorded", {})]))
        await bus.ask(lambda reply: CountFeeds(reply=reply))
        assert b'"node"' not in encode(feed.take()[0])
        assert await bus.ask(lambda reply: WantedTopics(reply=reply)) == frozenset()  # local-only feeds count not
        bus.close()
