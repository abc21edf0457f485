"""The fleet's events in the database: each node ships there the events that the other nodes' subscribers
follow, and reads from there the others' events that its own subscribers follow (see `actors.fleet`).

Events are inserted one batch at a time, fleet-wide (an advisory transaction lock), so that `seq` order is
commit order: a reader that goes on after the last `seq` it saw misses nothing. The table keeps the newest
`KEEP` events; a node away for longer misses the older ones (they were live events, not records: those
are in the ledger).
"""

from typing import Any

import msgspec

from budgetd.periods import from_us, to_us
from budgetd.protocol import Event

#: Held while a batch of events is inserted (any 64-bit number of our own).
EVENTS_LOCK = 0x42554447_00000006
KEEP = 100_000
#: The most events read in one exchange (the rest come at the next).
READ_AT_MOST = 5_000

_INSERT = (
    "WITH shipped AS (INSERT INTO fleet_events (node, ts, event, data) "
    "SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[]) RETURNING seq) SELECT max(seq) FROM shipped"
)
_READ = (
    "SELECT seq, node, ts, event, data FROM fleet_events WHERE seq > $1 AND seq <= $5 AND node <> $2 "
    "AND split_part(event, '.', 1) = ANY($3::text[]) ORDER BY seq LIMIT $4"
)


class Exchanged(msgspec.Struct, frozen=True):
    """The other nodes' events read, and the `seq` to read after next time."""

    cursor: int
    events: list[Event]


async def newest(conn: Any) -> int:
    """The `seq` of the newest event: a node that starts to read goes on after it."""
    return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM fleet_events"))


async def exchange(conn: Any, node: str, outgoing: list[Event], cursor: int, topics: list[str]) -> Exchanged:
    """Ship `outgoing` (this node's events) and read the others' events of `topics` after `cursor`."""
    if outgoing:
        async with conn.transaction():
            # live events, not records: not worth a flush to disk each (a crash of the server may lose the last)
            await conn.execute("SET LOCAL synchronous_commit TO off")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
            top = await conn.fetchval(_INSERT, node, [to_us(e.ts) for e in outgoing], [e.event for e in outgoing],
                                      [msgspec.json.encode(e.data) for e in outgoing])
            if top // 10_000 != (top - len(outgoing)) // 10_000:  # now and then: the oldest go
                await conn.execute("DELETE FROM fleet_events WHERE seq <= $1", top - KEEP)
    if not topics:
        return Exchanged(cursor, [])
    # Up to the newest event there is now (every one before it is committed: see above); the cursor goes on
    # past the events of topics this node does not follow too, so a topic it follows later starts from now.
    top = await newest(conn)
    rows = await conn.fetch(_READ, cursor, node, topics, READ_AT_MOST, top)
    events = [Event(event=r[3], seq=0, ts=from_us(r[2]), data=msgspec.Raw(bytes(r[4])), node=r[1]) for r in rows]
    return Exchanged(rows[-1][0] if len(rows) == READ_AT_MOST else top, events)
