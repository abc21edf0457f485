"""The event bus: numbered events fanned out to subscribers through bounded feeds.

A publisher tells the bus and never waits. Each subscriber has a `Feed` of
bounded length: when it falls behind, the oldest events are dropped and the
next thing it reads is a `lagged` marker saying how many it missed. The bus
keeps the last `RECENT` events so that a subscriber can resume from a `seq`.

In a fleet, the bus also carries the other nodes' events (`Relayed`, from `actors.fleet`), each stamped
with its node; the daemon's own consumers (the alerter, the relay itself) subscribe `local_only`.
"""

import collections
from typing import Any, Iterable

import anyio
import msgspec

from actors.runtime import Actor, ReplyTo
from budgetd.clock import SYSTEM, Clock
from budgetd.protocol import Event

RECENT = 1000
FEED_LENGTH = 1000


def topic_of(event: str) -> str:
    """An event's topic: its name's first part (`usage` of `usage.recorded`)."""
    return event.split(".", 1)[0]


class Publish(msgspec.Struct, frozen=True):
    """Events to publish: (name, data) pairs; the topic is the name's first part."""

    events: list[tuple[str, Any]]


class Relayed(msgspec.Struct, frozen=True):
    """Events another node of the fleet published, each with its node and time: numbered here and
    published to every feed that is not `local_only`."""

    events: list[Event]


class SubscribeMsg(msgspec.Struct, frozen=True):
    topics: list[str]
    after: int | None  # resume after this seq, from the recent events still kept
    reply: ReplyTo
    local_only: bool = False  # this node's events only (for the daemon's own consumers)
    length: int = FEED_LENGTH


class WantedTopics(msgspec.Struct, frozen=True):
    """Answer: the topics that subscribers other than `local_only` ones follow (a frozenset)."""

    reply: ReplyTo


class Unsubscribe(msgspec.Struct, frozen=True):
    feed: Any


class CountFeeds(msgspec.Struct, frozen=True):
    """Answer: how many feeds (subscriptions) are open."""

    reply: ReplyTo


class Feed:
    """One subscriber's bounded queue of events; filled by the bus, drained by one reader."""

    def __init__(self, topics: Iterable[str], clock: Clock = SYSTEM, length: int = FEED_LENGTH,
                 local_only: bool = False) -> None:
        self.clock = clock
        self.topics = frozenset(topics)
        self.length = length
        self.local_only = local_only
        self._events: collections.deque[Event] = collections.deque()
        self._lost = 0
        self._ready = anyio.Event()
        self.closed = False

    def put(self, event: Event) -> None:
        if len(self._events) >= self.length:
            self._events.popleft()
            self._lost += 1
        self._events.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def take(self) -> list[Event]:
        """Everything waiting, led by a `lagged` marker when events were dropped."""
        events = list(self._events)
        self._events.clear()
        if self._lost:
            first = events[0].seq if events else 0
            events.insert(0, Event(event="lagged", seq=first - 1, ts=self.clock.now(), data={"missed": self._lost}))
            self._lost = 0
        self._ready = anyio.Event()
        return events

    async def wait(self) -> None:
        if not self._events and not self.closed:
            await self._ready.wait()


class Bus(Actor):
    name = "bus"

    def __init__(self, clock: Clock = SYSTEM, node: str | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.node = node  # in a fleet: this node's name, on each of its events
        self.seq = 0
        self.recent: collections.deque[Event] = collections.deque(maxlen=RECENT)
        self.feeds: set[Feed] = set()
        self.handlers = {Publish: self._publish, Relayed: self._relayed, SubscribeMsg: self._subscribe,
                         Unsubscribe: self._unsubscribe, CountFeeds: lambda m: m.reply.set(len(self.feeds)),
                         WantedTopics: self._wanted}

    async def stopped(self) -> None:
        for feed in self.feeds:
            feed.close()

    def _publish(self, message: Publish) -> None:
        ts = self.clock.now()
        for name, data in message.events:
            self._put(Event(event=name, seq=0, ts=ts, data=data, node=self.node))

    def _relayed(self, message: Relayed) -> None:
        for event in message.events:
            self._put(event)

    def _put(self, event: Event) -> None:
        self.seq += 1
        event.seq = self.seq
        self.recent.append(event)
        for feed in self.feeds:
            if self._delivers(feed, event):
                feed.put(event)

    def _delivers(self, feed: Feed, event: Event) -> bool:
        return topic_of(event.event) in feed.topics and not (feed.local_only and event.node != self.node)

    def _subscribe(self, message: SubscribeMsg) -> None:
        if getattr(message.reply, "done", False):
            return  # its waiter gave up: a feed opened now would never be closed
        feed = Feed(message.topics, self.clock, message.length, message.local_only)
        if message.after is not None:
            for event in self.recent:
                if event.seq > message.after and self._delivers(feed, event):
                    feed.put(event)
        self.feeds.add(feed)
        message.reply.set(feed)

    def _wanted(self, message: WantedTopics) -> None:
        message.reply.set(frozenset().union(*(f.topics for f in self.feeds if not f.local_only)))

    def _unsubscribe(self, message: Unsubscribe) -> None:
        self.feeds.discard(message.feed)
        message.feed.close()
