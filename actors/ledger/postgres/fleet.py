"""What the fleet's nodes share beyond the ledger's own tables: exact admission, their spend, themselves.

Hard limits are exact across nodes because every reserve already writes its holds in a durable
transaction: the statement that writes the batch asks `budgetd_admit` (a function of the schema) first, which locks
each hard counter the batch charges, sums what every node spent in the window (`fleet_spent`) and holds on
it (`fleet_held_sums`, the unexpired `fleet_held` rows), and admits each reserve whole or refuses it.
No request waits on a round trip of its own, and the last dollar of a budget goes to whichever node asks first, to the nano-dollar.

`fleet_spent` holds each node's spend per counter, added in the transaction of the records. A counter
also has one row of node '' that corrects the sum to what the records say: written when a node loads the
counter from the records (at start, when a budget is set), it covers records from before the fleet
counted them (an import, an older schema) and those written by a node that did not know the budget yet.
Concurrent corrections of one counter meet on that row, so one of them is made again from a newer
snapshot. A node follows the others' rows and the corrections as they grow (`FleetView`), from what
they were in the snapshot it loaded the counter in.
"""

from typing import Any

import msgspec

from actors.allocator.messages import FleetCount, FleetView
from actors.ledger.messages import (
    ALL_TIME,
    Counted,
    Tally,
    UsageRow,
    Refused,
    WindowSum,
    WindowTotal,
    Write,
    WriteHold,
    WriteUsage,
    counter_key,
    row_tokens,
)
from actors.ledger.report_plan import SUMS
from budgetd.model import BudgetSpec, nanos
from budgetd.protocol import OpError

#: The key space of node locks: `pg_try_advisory_lock(NODE_LOCK_CLASS, hashtext(node))` (two int4 keys, so
#: `pg_locks` tells them from any other lock, and `budget fleet status` lists the nodes that hold one).
NODE_LOCK_CLASS = 0x42554447
#: Held by each change of the prices, so nodes make them one at a time.
PRICES_LOCK = 0x42554447_00000004
#: Held (by its `FleetSync` connection) by the one node that refreshes the fleet's prices from the feeds.
PRICES_LEADER = 0x42554447_00000005
#: Every serving node holds it shared; `budget fleet import` takes it alone, so no node serves meanwhile.
NODES_LOCK = 0x42554447_00000003
#: A window start as `fleet_spent` keeps it (a total budget's one window has none).
_WINDOW = "coalesce($1::bigint, -9223372036854775808)"
_WAIT = ("a node of the fleet is replaying records it kept while the database was away, and a reservation on a "
         "hard budget waits until they are counted: nothing was held; retry shortly")
_DENIED = ("budget {names} has no room left for this call across the fleet: other nodes spent or reserved it "
           "meanwhile; see `budget status`")

#: Whether node `n` serves now: it holds its node lock in this database (advisory locks are per database).
SERVING = ("EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
           "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
           f"AND l.classid::bigint = {NODE_LOCK_CLASS} "
           "AND l.objid::bigint = (hashtext(n.node)::bigint & 4294967295))")

assert ALL_TIME == -9223372036854775808


class Admission(msgspec.Struct):
    """The arguments of `budgetd_admit` for a batch's reserves, and which writes they are: the counters they
    charge, each once, and each hold's charge on each counter (its group is the reserve it is of)."""

    at: list[int] = []  # positions in the batch of the reserves asked about, in order (group n is at[n - 1])
    first: list[int] = []  # 1-based into the charge arrays
    last: list[int] = []
    counters: dict[tuple[str, str, int], int] = {}  # (budget, key, window) -> its 1-based number
    hold: list[str] = []
    counter: list[int] = []
    bounded: list[bool] = []
    nanos: list[int] = []
    tokens: list[int] = []
    expires: list[int] = []

    def groups(self, writes: list[Write]) -> tuple[dict[str, int], dict[str, int]]:
        """The group of each hold id, and of each reserve's idempotency key."""
        holds: dict[str, int] = {}
        keys: dict[str, int] = {}
        for n, i in enumerate(self.at, 1):
            w = writes[i]
            assert type(w) is WriteHold
            holds.update((h.id, n) for h in w.holds)
            if w.idempotency_key is not None:
                keys[w.idempotency_key] = n
        return holds, keys


#: A batch that only closes holds (the function takes them off the fleet's sums).
NOTHING_TO_ADMIT = Admission()


def admission(writes: list[Write], answers: list[Any]) -> Admission | None:
    """What the batch asks the database to admit: every new reserve that holds on a hard budget."""
    a = Admission()
    for at, (w, answer) in enumerate(zip(writes, answers)):
        if type(w) is not WriteHold or not w.holds or not w.hard or getattr(answer, "duplicate", True):
            continue
        a.at.append(at)
        a.first.append(len(a.hold) + 1)
        numbers = [a.counters.setdefault((c.budget, c.key, c.window_start), len(a.counters) + 1) for c in w.hard]
        for h in w.holds:
            for c, number in zip(w.hard, numbers):
                a.hold.append(h.id)
                a.counter.append(number)
                a.bounded.append(c.bounded)
                a.nanos.append(h.cost_nanos)
                a.tokens.append(h.tokens)
                a.expires.append(h.expires_at)
        a.last.append(len(a.hold))
    return a if a.at else None


#: The call, its arguments numbered from {0}: now, node, the counters with what the batch's records add to
#: them, the groups and charges (`Admission`), the holds the batch closes and the keys it takes for new.
ADMIT = ("budgetd_admit(${0}, ${1}, ${2}::text[], ${3}::text[], ${4}::bigint[], ${5}::bigint[], ${6}::bigint[], "
         "${7}::int[], ${8}::int[], ${9}::text[], ${10}::int[], ${11}::bool[], ${12}::bigint[], ${13}::bigint[], "
         "${14}::bigint[], ${15}::text[], ${16}::text[])")


def admit_args(a: Admission, now_us: int, node: str, spent: dict[tuple[str, str, int], list[int]],
               closed: list[str], new_keys: list[str]) -> list:
    """`spent`: what the batch's records add to each counter. `new_keys`: the idempotency keys the batch takes
    for new without having looked them up; the function fails the batch if the database holds one (not every
    answer writes its key: a denial, a refused reserve)."""
    counters = list(a.counters)
    added = [spent.get(c, (0, 0)) for c in counters]
    return [now_us, node, [c[0] for c in counters], [c[1] for c in counters], [c[2] for c in counters],
            [v[0] for v in added], [v[1] for v in added], a.first, a.last, a.hold, a.counter, a.bounded,
            a.nanos, a.tokens, a.expires, closed, new_keys]


def refuse(writes: list[Write], answers: list[Any], a: Admission, refused: list[int]) -> None:
    """The refused reserves' answers become denials, not kept (and a repeat of one in the batch is that
    denial again); those told to wait (negative numbers) are refused as `unavailable`."""
    denied: dict[str, Any] = {}
    for n in refused:
        if n < 0:
            answers[a.at[-n - 1]] = OpError("unavailable", _WAIT)
            continue
        i = a.at[n - 1]
        w = writes[i]
        assert type(w) is WriteHold
        names = ", ".join(sorted({c.budget for c in w.hard if c.bounded}))
        d = w.decision
        denial = msgspec.structs.replace(d, allowed=False, action="deny", reservation_id=None, reservation_ids=[],
                                         expires_at=None, reasons=[*d.reasons, _DENIED.format(names=names)])
        answers[i] = Refused(denial)
        if w.idempotency_key is not None:
            denied[w.idempotency_key] = denial
    if denied:
        for i, w in enumerate(writes):
            key = w.idempotency_key if type(w) is WriteHold else None
            if key in denied and getattr(answers[i], "duplicate", False):
                answers[i] = msgspec.structs.replace(denied[key], duplicate=True)


#: Two parts of a statement: budget $1's hard limits into `fleet_limits` ($5: whether it has any, $6 and $7
#: the limits), or out of it.
SET_LIMITS = ("l AS (INSERT INTO fleet_limits (budget, limit_nanos, limit_tokens) SELECT $1, $6, $7 WHERE $5 "
              "ON CONFLICT (budget) DO UPDATE SET limit_nanos = excluded.limit_nanos, "
              "limit_tokens = excluded.limit_tokens), "
              "d AS (DELETE FROM fleet_limits WHERE budget = $1 AND NOT $5)")


def hard_limits(spec: bytes) -> tuple[int | None, int | None] | None:
    """A budget's limits when it is hard and enabled and has one (what the fleet's admission checks)."""
    b = msgspec.json.decode(spec, type=BudgetSpec)
    if b.policy != "hard" or not b.enabled or (b.limit_usd is None and b.limit_tokens is None):
        return None
    return (None if b.limit_usd is None else nanos(b.limit_usd)), b.limit_tokens


async def sync_limits(conn: Any) -> None:
    """`fleet_limits` as the budgets say."""
    rows = [(name, *limits) for name, spec in await conn.fetch("SELECT name, spec FROM budgets")
            if (limits := hard_limits(bytes(spec))) is not None]
    async with conn.transaction():
        await conn.execute("DELETE FROM fleet_limits")
        await conn.executemany("INSERT INTO fleet_limits (budget, limit_nanos, limit_tokens) VALUES ($1, $2, $3)",
                               rows)


def recorded(writes: list[Write], answers: list[Any]) -> list[tuple[UsageRow, list[Counted]]]:
    """The batch's new records, with the counters each counts in."""
    return [(w.row, w.counted) for w, answer in zip(writes, answers)
            if type(w) is WriteUsage and getattr(answer, "record_id", None) is not None and not answer.duplicate]


def spent(records: list[tuple[UsageRow, list[Counted]]]) -> dict[tuple[str, str, int], list[int]]:
    """What records add to each counter they count in (one sum per counter)."""
    sums: dict[tuple[str, str, int], list[int]] = {}
    for r, counted in records:
        tokens = row_tokens(r)
        for c in counted:
            acc = sums.setdefault((c.budget, c.key, c.window_start), [0, 0])
            acc[0] += r.cost_nanos
            acc[1] += tokens
    return sums


async def others_in(conn: Any, s: WindowSum, me: str) -> dict[str, list[int]]:
    """What the other nodes counted in a budget's window, by counter key (inside the caller's snapshot), with the
    corrections (node ''): one another node makes later counts records this node has not seen."""
    rows = await conn.fetch(f"SELECT key, sum(nanos), sum(tokens) FROM fleet_spent WHERE budget = $2 "
                            f"AND window_start = {_WINDOW} AND node <> $3 GROUP BY key",
                            s.start, s.budget, me)
    return {r[0]: [int(r[1]), int(r[2])] for r in rows}


async def correct(conn: Any, s: WindowSum, totals: list[WindowTotal], me: str) -> list[WindowTotal]:
    """Make the database's sums of a budget's window equal to its records (see the module's docstring), in the
    caller's repeatable-read snapshot: a correction another node made meanwhile fails it as a serialization
    error, and the caller tries again. The totals, with what the other nodes counted."""
    counted = {r[0]: (int(r[1]), int(r[2])) for r in await conn.fetch(
        f"SELECT key, sum(nanos), sum(tokens) FROM fleet_spent WHERE budget = $2 AND window_start = {_WINDOW} "
        "GROUP BY key", s.start, s.budget)}
    fixes = []
    by_key = {}
    for t in totals:
        text = counter_key(t.key)
        by_key[text] = t
        have = counted.get(text, (0, 0))
        if (t.nanos, t.tokens) != have:
            fixes.append((text, t.nanos - have[0], t.tokens - have[1]))
    for text, have in counted.items():
        if text not in by_key and have != (0, 0):
            fixes.append((text, -have[0], -have[1]))
    if fixes:
        await conn.execute(
            f"INSERT INTO fleet_spent AS t (budget, key, window_start, node, nanos, tokens) "
            f"SELECT $2, k, {_WINDOW}, '', n, tk FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS f(k, n, tk) "
            "ON CONFLICT (budget, key, window_start, node) DO UPDATE SET nanos = t.nanos + excluded.nanos, "
            "tokens = t.tokens + excluded.tokens",
            s.start, s.budget, [f[0] for f in fixes], [f[1] for f in fixes], [f[2] for f in fixes])
    others = await others_in(conn, s, me)  # with this correction: it is in the records summed
    out = []
    for text, t in by_key.items():
        o = others.pop(text, (0, 0))
        out.append(WindowTotal(t.key, t.nanos, t.tokens, o[0], o[1]))
    for text, o in others.items():  # counted by others under this name, not in the records of its scope now
        out.append(WindowTotal(tuple(msgspec.json.decode(text)), 0, 0, o[0], o[1]))
    return out



_SPENT_BY_OTHERS = ("SELECT budget, key, window_start, sum(nanos), sum(tokens) FROM fleet_spent "
                    "WHERE node <> $1 AND (window_start >= $2 OR window_start = -9223372036854775808) "
                    "GROUP BY budget, key, window_start")
_HELD_BY_OTHERS = ("SELECT budget, key, sum(nanos), sum(tokens) FROM fleet_held WHERE node <> $1 AND expires_at > $2 "
                   "GROUP BY budget, key")
#: No window is longer than a month: the others' spend in older ones is not looked at.
_RECENT_US = 32 * 86_400_000_000


class Seen(msgspec.Struct, frozen=True):
    """What a node sees of the fleet every sync interval."""

    view: FleetView  # for the allocator
    recorded: "Tallies"  # for the ledger's totals
    price_version: int  # the newest price version, and how many overrides there are
    overrides: int
    ahead_us: int  # how far this node's clock is ahead of the database's (behind: negative)


async def view(conn: Any, node: str, now_us: int, spooled: int, following: int, topics: list[str]) -> Seen:
    """This node's heartbeat (with the batches its spool holds, the budgets' version it binds by and the topics
    its subscribers follow), and what the other nodes did: on budgets (see `FleetView`), in all, and to the
    prices."""
    await conn.execute("UPDATE fleet_nodes SET heartbeat_at = $2, spooled = $3, budgets_version = $4, topics = $5 "
                       "WHERE node = $1", node, now_us, spooled, following, topics)
    version, db_now = await conn.fetchrow("SELECT value::bigint, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint "
                                          "FROM meta WHERE key = 'budgets_version'")
    spent = [FleetCount(r[0], r[1], r[2], int(r[3]), int(r[4]))
             for r in await conn.fetch(_SPENT_BY_OTHERS, node, now_us - _RECENT_US)]
    held = [FleetCount(r[0], r[1], ALL_TIME, int(r[2]), int(r[3]))
            for r in await conn.fetch(_HELD_BY_OTHERS, node, now_us)]
    released = [r[0] for r in await conn.fetch("DELETE FROM fleet_released WHERE node = $1 RETURNING hold_id", node)]
    totals = await recorded_by(conn, node)
    prices = await conn.fetchrow("SELECT (SELECT coalesce(max(version), 0) FROM price_versions), "
                                 "(SELECT count(*) FROM price_overrides)")
    return Seen(FleetView(spent=spent, held=held, budgets_version=int(version or 0), released=released), totals,
                int(prices[0]), int(prices[1]), now_us - int(db_now))


class Tallies(msgspec.Struct, frozen=True):
    """What the fleet recorded in all, as the database counts it: by the other nodes, and by this one."""

    others: Tally
    mine: Tally


async def recorded_by(conn: Any, node: str) -> Tallies:
    sums = ", ".join(f"coalesce(sum({c}) FILTER (WHERE node {{op}} $1), 0)" for c in SUMS)
    row = await conn.fetchrow(f"SELECT {sums.format(op='<>')}, {sums.format(op='=')} FROM fleet_totals", node)
    values = [int(v) for v in row]
    return Tallies(Tally(*values[:len(SUMS)]), Tally(*values[len(SUMS):]))
