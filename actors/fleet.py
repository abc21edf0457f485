"""The fleet: how a node follows the others that share its PostgreSQL database.

Every `fleet.sync_interval` it writes its heartbeat and reads, on a connection of its own, what the
other nodes spent in current windows, what they hold on hard budgets and the budgets' version; the
allocator adds that to its counters (`FleetView`) so checks, status and reports answer for the fleet.
Exactness does not depend on it: the database admits every reserve on a hard budget against all nodes
(see `actors.ledger.postgres.fleet`). While the database is away the view simply stops moving.

It also relays events (on a second connection): this node's events of the topics that the other nodes'
subscribers follow go to the database as they come, and the others' events of the topics this node's
subscribers follow come back onto this node's bus, each with its node (`actors.ledger.postgres.relay`).
"""

import contextlib
import logging
from typing import Any

import anyio
import msgspec

from actors.allocator.messages import Following
from actors.bus import Relayed, SubscribeMsg, Unsubscribe, WantedTopics, topic_of
from actors.ledger import FollowTotals, ReplaySpool
from actors.ledger.postgres import relay
from actors.ledger.postgres.fleet import PRICES_LEADER, SERVING, Seen, view
from actors.ledger.postgres.writes import Connection
from actors.ledger.store import StoreUnreachable
from actors.prices import PricesMoved
from actors.runtime import Actor, Mailbox, Ref, ReplyTo
from budgetd.clock import SYSTEM, Clock
from budgetd.config import dsn_shown
from budgetd.model import Topic
from budgetd.periods import from_us
from budgetd.protocol import FleetNode, FleetStatusResult, OpError

log = logging.getLogger("budgetd.fleet")

#: How long the relay lets this node's events gather before it ships them, and reads the others' as often.
RELAY_INTERVAL_S = 0.1
#: The most events the relay keeps to ship while the database is away (the oldest go first).
RELAY_BACKLOG = 20_000
#: How far a node's clock may be from the database's before it says so.
CLOCK_TOLERANCE_US = 1_000_000
TOPICS: list[str] = list(Topic.__args__)  # type: ignore[attr-defined]


class FleetStatusMsg(msgspec.Struct, frozen=True):
    """Answer: `FleetStatusResult`, the nodes as the database knows them."""

    reply: ReplyTo


class AwaitFollowers(msgspec.Struct, frozen=True):
    """Answer (None) once every serving node binds by the budgets as the database has them now, or after
    `timeout_s` (a node that follows no more is left behind; a warning is logged)."""

    timeout_s: float
    reply: ReplyTo


#: The serving nodes that do not bind by the budgets' current version yet.
_BEHIND = (
    "SELECT array(SELECT n.node FROM fleet_nodes n, meta m WHERE m.key = 'budgets_version' "
    f"AND n.budgets_version < m.value::bigint AND {SERVING} ORDER BY n.node)"
)
_NODES = (
    f"SELECT n.node, n.version, n.started_at, n.heartbeat_at, {SERVING}, "
    "(SELECT count(*) FROM holds h WHERE h.node = n.node AND h.expires_at > $1), "
    "(SELECT coalesce(sum(nanos), 0) FROM fleet_held f WHERE f.node = n.node AND f.expires_at > $1), n.spooled "
    "FROM fleet_nodes n ORDER BY n.node"
)
#: The topics that the other serving nodes' subscribers follow.
_WANTED = ("SELECT array(SELECT DISTINCT unnest(n.topics) FROM fleet_nodes n "
           f"WHERE n.node <> $1 AND {SERVING})")


class FleetSync(Actor):
    name = "fleet"

    def __init__(self, dsn: str, node: str, interval_s: float, allocator: Ref, ledger: Ref, prices: Ref, bus: Ref,
                 clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.node, self.interval_s, self.clock = node, interval_s, clock
        self.allocator, self.ledger, self.prices, self.bus = allocator, ledger, prices, bus
        self._leading: Any = None  # the connection that holds the price refresher's lock, while it does
        self._clock_off = False
        self.where = dsn_shown(dsn)
        self.connection = Connection(dsn, self.where)
        self.relay_connection = Connection(dsn, self.where)
        self.wanted_here: list[str] = []  # the topics this node's subscribers follow
        self.wanted_there: frozenset[str] = frozenset()  # and the other nodes' subscribers
        self.following = 0  # the budgets' version this node's allocator binds by
        self._one_at_a_time = anyio.Lock()  # a connection runs one query at a time; views and answers share it
        self._tg: Any = None
        self.handlers = {FleetStatusMsg: self._status, Following: self._following, AwaitFollowers: self._await}

    async def stopped(self) -> None:
        await self.connection.close()
        await self.relay_connection.close()

    async def _run(self, fn: Any) -> Any:
        async with self._one_at_a_time:
            return await self.connection.run(fn)

    async def run(self, mailbox: Mailbox) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._follow)
            tg.start_soon(self._relay)
            await super().run(mailbox)
            tg.cancel_scope.cancel()

    async def _follow(self) -> None:
        while True:
            try:
                # the ledger replays its spool first, if it holds one (it does not wait for its next write)
                spooled = await self.ledger.ask(lambda reply: ReplaySpool(reply=reply), self.interval_s * 20)
            except OpError:
                spooled = -1  # still away, or busy: said as unknown
            try:
                self.wanted_here = sorted(await self.bus.ask(lambda reply: WantedTopics(reply=reply), self.interval_s))
            except OpError:
                pass  # the bus is busy: the topics stand
            try:
                seen = await self._run(lambda conn: self._look(conn, spooled))
            except StoreUnreachable:
                pass  # the view stands still until the database is back
            else:
                self._clock_agrees(seen.ahead_us)
                try:
                    self.allocator.tell(seen.view)
                    self.ledger.tell(FollowTotals(others=seen.recorded.others, mine=seen.recorded.mine))
                    self.prices.tell(PricesMoved(version=seen.price_version, overrides=seen.overrides,
                                                 leading=self._leading is not None))
                except OpError:
                    pass  # a full or closing mailbox: the next view says it all again
            await anyio.sleep(self.interval_s)

    def _clock_agrees(self, ahead_us: int) -> None:
        """Holds expire by the clock of the node that judges them: a node whose clock runs ahead takes the
        others' holds for expired early, and a hard limit could be passed. Said once it is off, and once it is
        right again."""
        off = abs(ahead_us) > CLOCK_TOLERANCE_US
        if off and not self._clock_off:
            log.warning("this node's clock is %.1f s %s the fleet database's: the nodes' clocks must agree (within "
                        "%d s; use NTP), or holds expire early or late", abs(ahead_us) / 1e6,
                        "ahead of" if ahead_us > 0 else "behind", CLOCK_TOLERANCE_US // 1_000_000)
        elif self._clock_off and not off:
            log.info("this node's clock agrees with the fleet database's again")
        self._clock_off = off

    async def _look(self, conn: Any, spooled: int) -> Seen:
        if self._leading is not conn:  # not yet, or on a connection that broke (and the lock went with it)
            taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRICES_LEADER)
            self._leading = conn if taken else None
        self.wanted_there = frozenset(await conn.fetchval(_WANTED, self.node))
        return await view(conn, self.node, self.clock.now_us(), spooled, self.following, self.wanted_here)

    async def _relay(self) -> None:
        feed = await self.bus.ask(lambda reply: SubscribeMsg(
            topics=TOPICS, after=None, reply=reply, local_only=True, length=RELAY_BACKLOG), 10.0)
        try:
            await self._relay_from(feed)
        finally:
            with contextlib.suppress(OpError):  # a closed bus closed its feeds
                self.bus.tell(Unsubscribe(feed=feed))

    async def _relay_from(self, feed: Any) -> None:
        outgoing: list = []
        cursor: int | None = None  # None: this node's subscribers follow nothing of the others' yet
        while not feed.closed:
            await anyio.sleep(RELAY_INTERVAL_S)  # events gather meanwhile: one exchange for all of them
            for event in feed.take():
                if event.event == "lagged":
                    log.warning("%d events could not be relayed to the other nodes in time",
                                event.data["missed"])
                elif topic_of(event.event) in self.wanted_there:
                    outgoing.append(event)
            del outgoing[:-RELAY_BACKLOG]
            topics = self.wanted_here
            if not topics:
                cursor = None
            if not outgoing and not topics:
                continue
            try:
                if topics and cursor is None:
                    cursor = await self.relay_connection.run(relay.newest)
                shipping, reading_after = outgoing, cursor or 0
                got = await self.relay_connection.run(
                    lambda conn: relay.exchange(conn, self.node, shipping, reading_after, topics))
            except StoreUnreachable:
                await anyio.sleep(self.interval_s)  # what is to ship waits for the database
                continue
            outgoing = []
            if topics:
                cursor = got.cursor
            if got.events:
                try:
                    self.bus.tell(Relayed(events=got.events))
                except OpError:
                    pass  # a full or closing bus: these are lost to this node's subscribers, as a lag would be

    async def _following(self, m: Following) -> None:
        if m.budgets_version != self.following:
            self.following = m.budgets_version
            try:  # at once: a budget set on this node or another one may be waiting for it
                await self._run(lambda conn: conn.execute(
                    "UPDATE fleet_nodes SET budgets_version = $2 WHERE node = $1", self.node, self.following))
            except StoreUnreachable:
                pass  # the next heartbeat writes it

    def _await(self, m: AwaitFollowers) -> None:
        self._tg.start_soon(self._wait_for_followers, m)  # in the background: `Following` must get through

    async def _wait_for_followers(self, m: AwaitFollowers) -> None:
        deadline = anyio.current_time() + m.timeout_s
        behind: list[str] = []
        while anyio.current_time() < deadline:
            try:
                behind = await self._run(lambda conn: conn.fetchval(_BEHIND))
            except StoreUnreachable:
                break
            if not behind:
                m.reply.set(None)
                return
            await anyio.sleep(0.02)
        log.warning("budgets changed, but nodes %s did not follow within %g s", ", ".join(behind) or "?", m.timeout_s)
        m.reply.set(None)

    async def _status(self, m: FleetStatusMsg) -> None:
        now = self.clock.now_us()

        async def read(conn: Any) -> list:
            return await conn.fetch(_NODES, now)

        try:
            rows = await self._run(read)
        except StoreUnreachable as exc:
            raise OpError("unavailable", f"the fleet database could not answer ({exc}); retry shortly") from None
        m.reply.set(FleetStatusResult(database=self.where, node=self.node, now=from_us(now), nodes=[
            FleetNode(node=r[0], version=r[1], started_at=from_us(r[2]), heartbeat_at=from_us(r[3]), serving=r[4],
                      open_holds=int(r[5]), held_usd=int(r[6]) / 1e9, spooled=r[7], this=r[0] == self.node)
            for r in rows]))
