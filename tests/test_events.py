"""The bus through the real socket: subscriptions, live events, slow subscribers, resume."""

import json
import time

import anyio
import pytest
from conftest import RawConn
from feeds import FeedServer, litellm_price

from budgetd.client import BudgetClient, SyncBudgetClient


@pytest.mark.anyio
async def test_subscribers_receive_usage_events_in_order(daemon):
    async with BudgetClient(daemon.socket) as watcher, BudgetClient(daemon.socket) as writer:
        received = []

        events = await watcher.subscribe(["usage"])  # returns once the daemon confirmed it

        async def watch() -> None:
            async for event in events:
                received.append(event)
                if len(received) == 3:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for i in range(3):
                await writer.record(component="ev", model="gpt-4o", input_tokens=100 + i)
        assert [e.event for e in received] == ["usage.recorded"] * 3
        assert [e.data["input_tokens"] for e in received] == [100, 101, 102]
        seqs = [e.seq for e in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert received[0].data["cost_usd"] == 250_000 / 1e9


def test_duplicates_and_other_topics_are_not_sent(daemon):
    with RawConn(daemon.socket) as sub:
        assert sub.call({"op": "subscribe", "id": 1, "topics": ["price"]})["result"] == {"subscribed": ["price"]}
        with SyncBudgetClient(daemon.socket) as c:
            c.record(component="x", model="gpt-4o", input_tokens=1, idempotency_key="once")
            c.record(component="x", model="gpt-4o", input_tokens=1, idempotency_key="once")
            c.prices_set(model="gpt-4o", input_per_mtok=1, output_per_mtok=1)
        event = sub.recv()
        assert event["event"] == "price.changed" and event["data"]["model"] == "gpt-4o"
    with RawConn(daemon.socket) as sub:
        answer = sub.call({"op": "subscribe", "id": 2, "topics": ["usage"], "after": 0})
        assert answer["ok"]
        replayed = sub.recv()  # recent events are kept for a resume
        assert replayed["event"] == "usage.recorded" and replayed["data"]["record_id"] == 1
        bad = sub.call({"op": "subscribe", "id": 3, "topics": ["gossip"]})
        assert bad["error"]["code"] == "invalid"


def rss_kb(daemon) -> int:
    return int(next(line for line in open(f"/proc/{daemon.proc.pid}/status") if line.startswith("VmRSS")).split()[1])


FLOOD = 30_000


def flood(daemon, first_id: int) -> None:
    frame = '{"op": "record", "id": %d, "usage": {"component": "flood", "model": "gpt-4o-mini", "input_tokens": 1}}\n'
    with RawConn(daemon.socket, timeout=60) as writer:
        for start in range(first_id, first_id + FLOOD, 5000):
            writer.send("".join(frame % i for i in range(start, start + 5000)).encode())
            for _ in range(5000):
                assert writer.recv()["ok"]


def test_a_subscriber_that_does_not_read_is_dropped_behind_not_buffered(daemon):
    flood(daemon, 0)  # warms what records alone grow (SQLite's page cache, the allocator's counters)
    warm_kb = rss_kb(daemon)
    slow = RawConn(daemon.socket)
    slow.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    assert slow.call({"op": "subscribe", "id": 1, "topics": ["usage"]})["ok"]
    flood(daemon, FLOOD)
    assert daemon.request({"op": "status", "id": "s"})["result"]["totals"]["requests"] == 2 * FLOOD
    # bounded it grows ~1 MB; the same 30,000 usage events buffered for the reader grow it ~20 MB
    grown_kb = rss_kb(daemon) - warm_kb
    assert grown_kb < 12_000, f"the daemon grew by {grown_kb} kB for a reader that does not read"
    # now read: somewhere in the stream a `lagged` marker says how much was dropped
    slow.sock.settimeout(5)
    seen, lagged = 0, 0
    try:
        while True:
            event = slow.recv()
            seen += 1
            if event["event"] == "lagged":
                lagged += event["data"]["missed"]
    except (TimeoutError, OSError):
        pass
    slow.close()
    assert lagged > 0 and seen < FLOOD
    assert seen - 1 + lagged >= FLOOD - 5_000  # what was not delivered was counted as missed


def test_price_events_from_a_refresh(make_daemon):
    with FeedServer() as feeds:
        d = make_daemon(feeds.config())
        with SyncBudgetClient(d.socket) as c:
            c.prices_refresh(timeout=60)
            events = c.subscribe(["price", "system"], idle_timeout=10)
            data = feeds.edit("litellm")
            litellm_price(data, "gpt-4o-mini", input_per_token=7.5e-07)   # held
            litellm_price(data, "gpt-4o", input_per_token=2.6e-06)        # changed
            feeds.publish("litellm", data)
            feeds.break_("openrouter", __import__("feeds").Route(b"oops", status=503))
            with SyncBudgetClient(d.socket) as other:
                other.prices_refresh(timeout=60)
            got = {}
            deadline = time.monotonic() + 10
            for event in events:
                got.setdefault(event.event, []).append(event.data)
                if {"price.held", "price.changed", "system.source_failed"} <= set(got) or time.monotonic() > deadline:
                    break
        assert got["price.held"][0]["model"] == "gpt-4o-mini"
        assert got["price.held"][0]["old"]["input_per_mtok"] == 0.15
        assert got["price.held"][0]["new"]["input_per_mtok"] == 0.75
        assert any(e["model"] == "gpt-4o" for e in got["price.changed"])
        assert got["system.source_failed"][0]["source"] == "openrouter"
        json.dumps(got, default=str)
