"""The PostgreSQL store's writer side: one asyncpg connection, one transaction per batch.

A batch is decided by `actors.ledger.batch` exactly as on SQLite; its rows go in with one statement per
table (asyncpg pipelines `executemany` into one round trip). Record ids come from a sequence, so nodes
sharing the database never give the same id twice (they may leave gaps).
"""

import logging
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import anyio

from actors.ledger import batch
from actors.ledger.messages import (
    ApplyPrices,
    HoldRow,
    PriceState,
    PriceVersion,
    SaveAlert,
    SourceState,
    StoredBudget,
    Tally,
    WindowSum,
    WindowTotal,
    Write,
    WriteHold,
    WriteUsage,
)
from actors.ledger.postgres import fleet
from actors.ledger.postgres.schema import FleetDatabaseError, migrate
from actors.ledger.postgres.spool import Spool, SpooledBatch, SpooledRecord
from actors.ledger.report_plan import SUMS, TOKEN_SUMS, accumulate
from actors.ledger.sqlite import rollups
from actors.ledger.sqlite.schema import USAGE_COLUMNS
from actors.ledger.store import StoreBroken, StoreFull, StoreUnreachable
from budgetd import __version__
from budgetd.config import dsn_shown
from budgetd.periods import HOUR_US
from budgetd.protocol import OpError, Released

log = logging.getLogger("budgetd.ledger")
_TOKENS = " + ".join(TOKEN_SUMS)
_DIMS = rollups.ROLLUP_DIMS
_ADD = ", ".join(f"{s} = t.{s} + excluded.{s}" for s in SUMS)


def _placeholders(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


_UPSERT_LOCAL = [
    f"INSERT INTO rollup_{unit} AS t (zone, {unit}, {', '.join(_DIMS)}, {', '.join(SUMS)}) "
    f"VALUES ({_placeholders(2 + len(_DIMS) + len(SUMS))}) "
    f"ON CONFLICT (zone, {unit}, {', '.join(_DIMS)}) DO UPDATE SET {_ADD}"
    for unit in rollups.LOCAL_UNITS
]


_TYPES = {name: "bigint" for name in (*USAGE_COLUMNS, *SUMS, "hour", "day", "week", "month", "created_at",
                                       "expires_at", "tokens")}
_TYPES.update({name: "text" for name in ("component", "model", "provider", "tier", "context_id", "task_type",
                                         "reservation_id", "request_id", "metadata", "idempotency_key",
                                         "service_tier", "zone", "id", "key", "node")})
_TYPES.update({"priced": "integer", "estimate": "bytea", "attrs": "bytea", "payload_hash": "bytea", "result": "bytea"})
_HOLD_COLUMNS = ("id", "created_at", "expires_at", "component", "estimate", "attrs", "cost_nanos", "tokens", "node")
_KEY_COLUMNS = ("key", "payload_hash", "result", "created_at")
_LOOKUP = ("SELECT array(SELECT nextval('usage_record_ids') FROM generate_series(1, $2)), "
           "array(SELECT key FROM idempotency WHERE key = ANY($1::text[]) ORDER BY key), "
           "array(SELECT payload_hash FROM idempotency WHERE key = ANY($1::text[]) ORDER BY key), "
           "array(SELECT result FROM idempotency WHERE key = ANY($1::text[]) ORDER BY key)")
#: How many record ids a node with a spool keeps claimed: as many records as it acknowledges while the database is
#: away (then it refuses them as `unavailable`). Claimed at open, topped up once half are used.
SPOOL_IDS = 20_000
#: About how many spooled records go into the database in one transaction, and before the next batch.
REPLAY_RECORDS = 2_000
_REPLAYING = "this node is putting into the database what it kept while the database was away"
_CLAIM = "SELECT array(SELECT nextval('usage_record_ids') FROM generate_series(1, $1))"
_KNOWN_KEYS = "SELECT array(SELECT key FROM idempotency WHERE key = ANY($1::text[]))"
_KNOWN_IDS = "SELECT array(SELECT record_id FROM usage WHERE record_id = ANY($1::bigint[]))"
#: The budgets' version, moved on when a statement's `s` changed a budget (other nodes poll it).
_BUDGETS_MOVED = ("UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'budgets_version' "
                  "AND EXISTS (SELECT 1 FROM s)")


class _Statement:
    """One statement that writes a whole batch (its rows as one array per column): a single round trip, and a
    single implicit transaction, so it is committed when it returns. On a fleet it first admits the batch's
    reserves on hard budgets (`admit`): the holds and keys of those refused are left out, and the statement
    answers their group numbers."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.parts: list[str] = []
        self.args: list[Any] = []
        self.admitting = False

    def _part(self, sql: str, name: str | None = None) -> None:
        self.parts.append(f"{name or f'w{len(self.parts)}'} AS ({sql})")

    def admit(self, args: list) -> None:
        self._part("SELECT " + fleet.ADMIT.format(*range(len(self.args) + 1, 100)) + " AS r", "refused")
        self.args.extend(args)
        self.admitting = True

    def _unnest(self, table: str, columns: tuple[str, ...], rows: list[tuple], tail: str = "") -> None:
        first = len(self.args) + 1
        arrays = ", ".join(f"${first + i}::{_TYPES[c]}[]" for i, c in enumerate(columns))
        self._part(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}){tail}")
        self.args.extend([list(column) for column in zip(*rows)])

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple], groups: list[int] | None = None) -> None:
        """Rows of `table`; with `groups` (the reserve each row is of, 0 for none) only those not refused."""
        if not rows:
            return
        if groups is None or not self.admitting:
            self._unnest(table, columns, rows)
            return
        first = len(self.args) + 1
        arrays = ", ".join(f"${first + i}::{_TYPES[c]}[]" for i, c in enumerate(columns))
        names = ", ".join(columns)
        self._part(f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}, "
                   f"${first + len(columns)}::int[]) AS u({names}, g) "
                   "WHERE NOT (abs(g) = ANY(ARRAY(SELECT abs(x) FROM refused, unnest(r) AS x)))")
        self.args.extend([list(column) for column in zip(*rows)])
        self.args.append(groups)

    def add_sums(self, table: str, key: tuple[str, ...], sums: dict[tuple, list[int]]) -> None:
        if sums:
            add = ", ".join(f"{s} = {table}.{s} + excluded.{s}" for s in SUMS)
            self._unnest(table, (*key, *SUMS), [(*k, *v) for k, v in sums.items()],
                         f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {add}")

    def delete_holds(self, ids: list[str]) -> None:
        if ids:
            self.args.append(ids)
            # a hold of another node (committed here) is gone for it too: `fleet_released` tells it to forget it
            self._part(f"DELETE FROM holds WHERE id = ANY(${len(self.args)}::text[]) RETURNING id, node", "gone_holds")
            self._part("INSERT INTO fleet_released (hold_id, node) SELECT id, node FROM gone_holds "
                       f"WHERE node <> ${len(self.args) + 1} AND node <> '' ON CONFLICT (hold_id) DO NOTHING")
            self.args.append(self.node)

    def add_spent(self, sums: dict[tuple[str, str, int], list[int]], node: str) -> None:
        """What this node's new records add to the fleet's counters (see `fleet`)."""
        if sums:
            first = len(self.args) + 1
            self.args.extend([[k[0] for k in sums], [k[1] for k in sums], [k[2] for k in sums],
                              [v[0] for v in sums.values()], [v[1] for v in sums.values()], node])
            self._part(
                "INSERT INTO fleet_spent AS t (budget, key, window_start, node, nanos, tokens) "
                f"SELECT b, k, w, ${first + 5}, n, tk FROM unnest(${first}::text[], ${first + 1}::text[], "
                f"${first + 2}::bigint[], ${first + 3}::bigint[], ${first + 4}::bigint[]) AS s(b, k, w, n, tk) "
                "ON CONFLICT (budget, key, window_start, node) DO UPDATE SET nanos = t.nanos + excluded.nanos, "
                "tokens = t.tokens + excluded.tokens")

    @property
    def sql(self) -> str:
        return "WITH " + ", ".join(self.parts) + (" SELECT (SELECT r FROM refused)" if self.admitting else " SELECT 1")


def connection_problem(exc: BaseException) -> bool:
    """Whether `exc` says the connection (or the server) is gone, rather than that a statement was wrong."""
    import asyncpg

    if isinstance(exc, asyncpg.exceptions.DataError):  # a value asyncpg refused to encode: nothing was sent
        return False
    # InternalClientError: the connection's state broke with it (e.g. "another operation is in progress", when
    # a transaction's rollback runs on a connection that went away in the middle of a statement)
    return isinstance(exc, (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresConnectionError,
                            asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
                            asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.exceptions.InternalClientError))


#: Who this process is, as the server's sessions show it (pg_stat_activity.application_name).
APPLICATION = f"budgetd {socket.gethostname()} {os.getpid()}"[:63]
# The server notices a client that vanished (its session, and the lock it holds, end) within about 20 s.
_SESSION = {"application_name": APPLICATION, "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "3",
            "tcp_keepalives_count": "3"}


async def connect(dsn: str, where: str, timeout: float = 10.0) -> Any:
    """An asyncpg connection to the fleet database, or FleetDatabaseError saying what to do."""
    import asyncpg

    try:
        return await asyncpg.connect(dsn, timeout=timeout, command_timeout=30, server_settings=_SESSION)
    except TimeoutError:
        raise FleetDatabaseError(f"the fleet database {where} did not answer within {timeout:g} s; check "
                                 "fleet.dsn and the network") from None
    except (asyncpg.exceptions.InsufficientPrivilegeError, asyncpg.exceptions.InvalidAuthorizationSpecificationError,
            asyncpg.exceptions.InvalidPasswordError) as exc:
        raise FleetDatabaseError(f"the fleet database {where} refused this user ({exc}); check the user and password "
                                 "in fleet.dsn and that the user may connect (GRANT CONNECT ON DATABASE ...)") from None
    except asyncpg.exceptions.InvalidCatalogNameError as exc:
        raise FleetDatabaseError(f"the fleet database {where} does not exist ({exc}); create it (createdb) or fix "
                                 "the database name in fleet.dsn") from None
    except (OSError, asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError) as exc:
        raise FleetDatabaseError(f"cannot reach the fleet database {where} ({exc}); check fleet.dsn "
                                 "(or BUDGETD_FLEET_DSN) and that the server is up") from None


class _LostInCommit(Exception):
    """The connection broke while a batch's statement was on its way: it may have been committed."""


class Connection:
    """One connection to the fleet database, made again (at most every half second, waiting at most two) at
    the first call after it broke: while the database is away a call fails fast as StoreUnreachable."""

    RETRY_S = 0.5
    RECONNECT_TIMEOUT_S = 2.0

    def __init__(self, dsn: str, where: str, on_connect: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self.dsn, self.where, self.on_connect = dsn, where, on_connect
        self.conn: Any = None
        self._retry_at = 0.0
        self._was_connected = False
        self.refusal: str | None = None  # set: no more connections, every call fails with this

    async def open(self, timeout: float = 10.0) -> None:
        """A connection: FleetDatabaseError when it cannot be made (at start: the daemon does not start)."""
        conn = await connect(self.dsn, self.where, timeout)
        try:
            if self.on_connect is not None:
                await self.on_connect(conn)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        self._was_connected = True

    async def get(self) -> Any:
        if self.refusal is not None:
            raise StoreUnreachable(self.refusal, lasting=True)
        if self.conn is not None and not self.conn.is_closed():
            return self.conn
        self.drop()
        if time.monotonic() < self._retry_at:
            raise StoreUnreachable(f"the fleet database {self.where} is unreachable; reconnecting")
        try:
            await self.open(self.RECONNECT_TIMEOUT_S)
        except FleetDatabaseError as exc:
            self._retry_at = time.monotonic() + self.RETRY_S
            raise StoreUnreachable(str(exc), lasting=self.refusal is not None) from None
        log.info("%s the fleet database %s", "reconnected to" if self._was_connected else "connected to", self.where)
        self._was_connected = True
        return self.conn

    async def run(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """`fn(conn)`; a lost connection as StoreUnreachable (the next call reconnects), a full disk on the
        server as StoreFull."""
        import asyncpg

        conn = await self.get()
        try:
            return await fn(conn)
        except _LostInCommit as exc:
            self.drop()
            raise StoreUnreachable(f"the fleet database {self.where} went away ({exc.__cause__})",
                                   committing=True) from None
        except asyncpg.exceptions.DiskFullError as exc:
            raise StoreFull(f"the fleet database {self.where} is out of disk ({exc})") from None
        except Exception as exc:
            if connection_problem(exc):
                self.drop()
                raise StoreUnreachable(f"the fleet database {self.where} is unreachable ({exc})") from None
            raise

    def drop(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.terminate()

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await conn.close(timeout=5)
                except Exception:
                    conn.terminate()


class PostgresStore:
    """The ledger's writer side on PostgreSQL, with its rollups, as the fleet node `node`."""

    def __init__(self, dsn: str, report_zones: Sequence[str] = ("UTC",), node: str = "",
                 on_lost: Callable[[str], None] | None = None, spool: Path | None = None) -> None:
        self.where = dsn_shown(dsn)
        self.spool = None if spool is None else Spool(spool)
        self._ids: list[int] = []  # record ids claimed from the sequence, for records spooled while it is away
        self.node = node or socket.gethostname()
        self.rollups = rollups.Rollups(["UTC", *report_zones])
        self.connection = Connection(dsn, self.where, self._lock)
        self.on_lost = on_lost
        # The ledger's totals when this store opened, what this node added since (as it knows), and what each
        # side of the fleet had recorded then and has now, as the database says (see `follow`).
        self._opened = self._added = Tally()
        self._then = self._now = fleet.Tallies(Tally(), Tally())
        self._run = self.connection.run

    async def _lock(self, conn: Any) -> None:
        """On each new connection: this node's lock (two daemons with one node name would count each other's
        spend as their own), and the shared lock every serving node holds (see `fleet.NODES_LOCK`)."""
        if not await self._try_lock(conn):
            # This process's own earlier session may hold it still (its connection broke without the server
            # noticing yet): end that one, then try again.
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(a.pid)) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1 "
                "AND a.pid <> pg_backend_pid() AND l.objsubid = 2 AND l.classid::bigint = $2::bigint & 4294967295",
                APPLICATION, fleet.NODE_LOCK_CLASS)
            deadline = time.monotonic() + 5.0
            while True:
                if ended and await self._try_lock(conn):
                    break
                if not ended or time.monotonic() > deadline:
                    why = (f"another budgetd node named {self.node!r} already serves the fleet database "
                           f"{self.where}: give each node its own fleet.node (BUDGETD_FLEET_NODE), or stop the other")
                    if self.on_lost is not None:
                        self.on_lost(why)  # one took this node's name while this one was cut off: it stops
                    self.connection.refusal = why
                    raise FleetDatabaseError(why)
                await anyio.sleep(0.05)
        await conn.fetchval("SELECT pg_advisory_lock_shared($1)", fleet.NODES_LOCK)
        if self.spool is not None and self.spool.depth:
            # said before anything else: the other nodes hold back reserves on hard budgets until it is replayed
            await conn.execute("UPDATE fleet_nodes SET spooled = $2 WHERE node = $1", self.node, self.spool.depth)

    async def _try_lock(self, conn: Any) -> bool:
        return await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", fleet.NODE_LOCK_CLASS,
                                   self.node)

    async def open(self) -> None:
        import asyncpg

        where = self.where
        try:
            try:
                conn = await connect(self.connection.dsn, where)
            except FleetDatabaseError as exc:
                raise FleetDatabaseError(f"{exc}{await self._spool_kept()}") from None
            self.connection.conn = None
            try:
                await self._lock(conn)  # before it migrates anything
            except BaseException:
                conn.terminate()
                raise
            self.connection.conn = conn
            await migrate(conn, where)
            await fleet.sync_limits(conn)  # a ledger imported, or of an older schema, has budgets without them
            await self._zones(conn)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                self._opened, self._added = await _position(conn), Tally()
                self._then = self._now = await fleet.recorded_by(conn, self.node)
            if self.spool is not None:
                self._ids = list(await conn.fetchval(_CLAIM, SPOOL_IDS))
                await self._spooling(self.spool.open())
                await self.replay()  # what this node acknowledged while the database was away, before it stopped
            await conn.execute(
                "INSERT INTO fleet_nodes (node, application, version, started_at, heartbeat_at) "
                "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (node) DO UPDATE SET application = excluded.application, "
                "version = excluded.version, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                self.node, APPLICATION, __version__, time.time_ns() // 1000)
        except (OSError, asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError) as exc:
            await self.close()
            raise FleetDatabaseError(f"the fleet database {where} could not be used ({exc}); check that its "
                                     "user may create tables there") from None
        except BaseException:
            await self.close()
            raise

    async def _spool_kept(self) -> str:
        """What a node that cannot start says of its spool: its writes are kept for the next start."""
        if self.spool is None or not self.spool.path.exists():
            return ""
        try:
            await self.spool.open()
        except sqlite3.Error:
            return ""
        finally:
            self.spool.close()
        return (f". Its spool {self.spool.path} keeps {self.spool.depth} batches acknowledged while the database "
                "was away: they are replayed once the node starts with the database back" if self.spool.depth else "")

    async def _zones(self, conn: Any) -> None:
        """Every zone some node keeps local rollups for is kept by every node (a report of any node reads
        them); this node's own zones are built first when they are new to the fleet."""
        async with conn.transaction():
            await conn.execute("LOCK TABLE rollup_zones IN EXCLUSIVE MODE")
            have = [r[0] for r in await conn.fetch("SELECT zone FROM rollup_zones ORDER BY zone")]
            for zone in self.rollups.zones:
                if zone not in have:
                    await _backfill(conn, rollups.LocalCalendar(zone))
                    await conn.execute("INSERT INTO rollup_zones (zone) VALUES ($1)", zone)
                    log.info("day rollups built for %s in the fleet database", zone)
            self.rollups = rollups.Rollups(dict.fromkeys([*self.rollups.zones, *have]))

    async def close(self) -> None:
        await self.connection.close()
        if self.spool is not None:
            self.spool.close()

    def totals(self) -> Tally:
        """Of the whole fleet: what the ledger held at open, what this node added since, and what the others
        did as last followed."""
        whole = Tally(*self._opened.values())
        if self._now is not self._then:
            whole.add(_minus(self._now.others, self._then.others))
        mine = _minus(self._now.mine, self._then.mine)
        # The database's count of this node's records is behind by what it spooled, and ahead by what was
        # committed while the connection broke (unconfirmed here): the larger one is right, once followed.
        whole.add(mine if mine.requests > self._added.requests else self._added)
        return whole

    def follow(self, others: Tally, mine: Tally) -> None:
        """What the other nodes and this one have recorded in all, as the database says now (`FleetSync` reads it
        every sync interval)."""
        if others.requests >= self._now.others.requests and mine.requests >= self._now.mine.requests:
            self._now = fleet.Tallies(others, mine)

    # -- records --

    async def append(self, writes: list[Write], now_us: int) -> list[Any]:
        """One statement that admits the batch's reserves on hard budgets against the whole fleet (see `fleet`)
        and writes it all; before it, when the batch has records (their ids) or a try met a key the database
        holds, a round trip for the batch's known keys and record ids.

        A batch without records is first written as if none of its keys were known: the admitting function
        fails the statement (nothing written) if the database holds one, and the next try looks them up. Most
        keys are new, and a reserve then costs one round trip."""
        import asyncpg

        async def write(conn: Any, optimistic: bool) -> tuple[list[Any], Tally]:
            keyed = batch.keys_of(writes)
            wanted = batch.records_in(writes)
            # the spool's claimed ids are topped up along with the batch's own
            claim = SPOOL_IDS - len(self._ids) if self.spool is not None and len(self._ids) < SPOOL_IDS // 2 else 0
            known: dict[str, tuple[bytes, bytes]] = {}
            ids: list[int] = []
            looked_up = bool(wanted or claim or (keyed and not optimistic))
            if looked_up:
                ids, keys, hashes, results = await conn.fetchrow(_LOOKUP, keyed, wanted + claim)
                known = {k: (bytes(h), bytes(r)) for k, h, r in zip(keys, hashes, results)}
                ids, claimed = ids[:wanted], ids[wanted:]
            b = batch.plan(writes, known, now_us, iter(ids), self.totals())
            recorded = fleet.recorded(writes, b.answers)
            spent = fleet.spent(recorded)
            admit = fleet.admission(writes, b.answers)
            st = _Statement(self.node)
            hold_groups: dict[str, int] = {}
            key_groups: dict[str, int] = {}
            new_keys = [] if looked_up else keyed  # the function checks them (not every answer writes its key)
            if admit is not None or b.closed or new_keys:  # closed holds leave the fleet's sums there too
                st.admit(fleet.admit_args(admit or fleet.NOTHING_TO_ADMIT, now_us, self.node, spent, b.closed,
                                          new_keys))
                if admit is not None:
                    hold_groups, key_groups = admit.groups(writes)
            st.insert("usage", USAGE_COLUMNS, b.usage)
            if b.inserted:
                hours, local = self.rollups.sums(b.inserted)
                st.add_sums("rollup_hour", ("hour", *_DIMS), hours)
                for unit, sums in zip(rollups.LOCAL_UNITS, local):
                    st.add_sums(f"rollup_{unit}", ("zone", unit, *_DIMS), sums)
                st.add_spent(spent, self.node)
                st.add_sums("fleet_totals", ("node",), {(self.node,): list(Tally.of_rows(b.inserted).values())})
            # The parts of one statement see the same snapshot: a hold opened and closed in one batch is neither.
            closed = set(b.closed)
            opened = {h[0] for h in b.holds}
            held = [(*h, self.node) for h in b.holds if h[0] not in closed]
            st.insert("holds", _HOLD_COLUMNS, held, [hold_groups.get(h[0], 0) for h in held])
            st.delete_holds([i for i in b.closed if i not in opened])
            st.insert("idempotency", _KEY_COLUMNS, b.keys, [key_groups.get(k[0], 0) for k in b.keys])
            refused: list[int] = []
            if st.parts:
                try:
                    if st.admitting:
                        refused = await conn.fetchval(st.sql, *st.args)
                    else:
                        await conn.execute(st.sql, *st.args)
                except Exception as exc:
                    if connection_problem(exc):
                        raise _LostInCommit() from exc
                    raise
            if claim:
                self._ids.extend(claimed)
            if refused:
                fleet.refuse(writes, b.answers, admit, refused)  # type: ignore[arg-type]
            return b.answers, Tally.of_rows(b.inserted)

        try:
            if self.spool is not None and self.spool.depth:
                # first: the spool's records are older, and may hold this batch's keys; a part of it at a time,
                # so the node answers meanwhile (what comes goes into the spool behind the rest)
                if await self.replay(REPLAY_RECORDS):
                    return await self._spool(writes, now_us, StoreUnreachable(_REPLAYING))
            for attempt in range(3):
                try:
                    answers, added = await self._run(lambda conn: write(conn, optimistic=attempt == 0))
                    break
                except (asyncpg.exceptions.UniqueViolationError, asyncpg.exceptions.DeadlockDetectedError):
                    if attempt == 2:
                        raise
                    # A key known to the database (not looked up, or written by another node since the lookup),
                    # or a deadlock with another node's transaction: nothing was written; the next try looks
                    # the keys up.
        except StoreUnreachable as exc:
            if exc.committing or exc.lasting or self.spool is None:
                raise
            return await self._spool(writes, now_us, exc)
        self._added.add(added)
        return answers

    async def _spool(self, writes: list[Write], now_us: int, away: StoreUnreachable) -> list[Any]:
        """The batch while the database is away: records and closed holds are kept in the spool (durably, before
        they are answered), each record with an id claimed earlier; reserves are refused. `away` is raised when
        the claimed ids do not suffice (nothing is spooled)."""
        kept = [w for w in writes if type(w) is not WriteHold]
        spool = self.spool
        assert spool is not None
        if batch.records_in(kept) > len(self._ids):
            raise away
        known = await self._spooling(spool.known(batch.keys_of(kept)))
        b = batch.plan(kept, known, now_us, iter(self._ids), self.totals())
        counted = {id(w.row): w.counted for w in kept if type(w) is WriteUsage}
        keys = {k[0]: k for k in b.keys}
        records = [SpooledRecord(u, r, counted.get(id(r), []), keys.get(r.idempotency_key))  # type: ignore[arg-type]
                   for u, r in zip(b.usage, b.inserted)]
        if records or b.closed:
            await self._spooling(spool.add(SpooledBatch(records, b.closed)))
        del self._ids[:len(b.usage)]
        self._added.add(Tally.of_rows(b.inserted))
        if spool.depth == 1:
            log.warning("the fleet database %s is away: records are kept in the spool %s until it is back (%s)",
                        self.where, spool.path, away)
        answers = iter(b.answers)
        refused = OpError("unavailable", f"a reservation must be admitted by the fleet database against every node, "
                          f"and it cannot be now ({away}): nothing was held; retry shortly")
        return [refused if type(w) is WriteHold else next(answers) for w in writes]

    async def _spooling(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StoreFull(f"the spool {self.spool.path} is out of disk ({exc})") from None  # type: ignore
            raise StoreBroken(f"the spool {self.spool.path} cannot be written ({exc})") from exc  # type: ignore

    async def replay(self, records: int | None = None) -> int:
        """What the spool holds goes into the database, in order, each record exactly once (see `spool`), about
        `records` records of it (None: all); how many batches wait still. StoreUnreachable when the database
        is still away."""
        import asyncpg

        spool = self.spool
        if spool is None:
            return 0
        # asked every sync interval: a node that has nothing to write connects again (and takes its node lock
        # back, so that its name stays its own) as soon as the database is back, not at its next write
        await self.connection.get()
        done = 0
        while spool.depth and (records is None or done < records):
            seqs, kept = await self._spooling(spool.oldest(REPLAY_RECORDS))
            if not seqs:
                spool.depth = 0
                break
            for attempt in range(3):
                try:
                    await self._run(lambda conn: self._replay(conn, kept))
                    break
                except asyncpg.exceptions.UniqueViolationError:
                    if attempt == 2:
                        raise
                    # a key another node wrote since the check: nothing was written; the next try skips it
            await self._spooling(spool.done(seqs))
            done += sum(len(k.records) for k in kept)
            if not spool.depth:
                log.info("the spool is replayed into the fleet database %s", self.where)
        return spool.depth

    async def _replay(self, conn: Any, batches: list[SpooledBatch]) -> None:
        records = [r for b in batches for r in b.records]
        closed = [i for b in batches for i in b.closed]
        async with conn.transaction():
            keys = [r.key[0] for r in records if r.key is not None]
            ids = [r.usage[0] for r in records]
            known = set(await conn.fetchval(_KNOWN_KEYS, keys)) if keys else set()
            there = set(await conn.fetchval(_KNOWN_IDS, ids)) if ids else set()
            new = []
            for r in records:  # a key twice in the spool (a batch that repeated one) is recorded once
                if r.usage[0] not in there and (r.key is None or r.key[0] not in known):
                    new.append(r)
                    if r.key is not None:
                        known.add(r.key[0])
            st = _Statement(self.node)
            st.insert("usage", USAGE_COLUMNS, [r.usage for r in new])
            rows = [r.row for r in new]
            if rows:
                hours, local = self.rollups.sums(rows)
                st.add_sums("rollup_hour", ("hour", *_DIMS), hours)
                for unit, sums in zip(rollups.LOCAL_UNITS, local):
                    st.add_sums(f"rollup_{unit}", ("zone", unit, *_DIMS), sums)
                st.add_spent(fleet.spent([(r.row, r.counted) for r in new]), self.node)
                st.add_sums("fleet_totals", ("node",), {(self.node,): list(Tally.of_rows(rows).values())})
            st.delete_holds(closed)
            if closed:
                st.admit(fleet.admit_args(fleet.NOTHING_TO_ADMIT, 0, self.node, {}, closed, []))
            st.insert("idempotency", _KEY_COLUMNS, [r.key for r in new if r.key is not None])
            if st.parts:
                await conn.execute(st.sql, *st.args)

    async def release_elsewhere(self, ids: list[str], components: frozenset[str] | None, now_us: int) -> Released:
        """Holds of other nodes go from the database (their room off the fleet's sums, under the counters'
        locks), and `fleet_released` tells each node that opened one to forget it (see `fleet.view`)."""
        import asyncpg

        async def release(conn: Any) -> Released:
            async with conn.transaction():
                rows = await conn.fetch("SELECT id, component FROM holds WHERE id = ANY($1::text[]) AND node <> $2 "
                                        "AND expires_at > $3", ids, self.node, now_us)
                for hold_id, component in rows:
                    if components is not None and component not in components:
                        raise OpError("forbidden", f"reservation {hold_id} belongs to component {component!r}, "
                                      "which this token may not spend for", "$.reservation_id")
                if not rows:
                    return Released(released=False, count=0)
                # The counters' locks first, then the holds' rows, as a batch that closes holds takes them.
                await conn.execute("SELECT " + fleet.ADMIT.format(*range(1, 100)), *fleet.admit_args(
                    fleet.NOTHING_TO_ADMIT, now_us, self.node, {}, [r[0] for r in rows], []))
                gone = await conn.fetchval(
                    "WITH gone AS (DELETE FROM holds WHERE id = ANY($1::text[]) AND node <> $2 RETURNING id, node), "
                    "told AS (INSERT INTO fleet_released (hold_id, node) SELECT id, node FROM gone "
                    "ON CONFLICT (hold_id) DO NOTHING) SELECT count(*) FROM gone", [r[0] for r in rows], self.node)
                return Released(released=gone > 0, count=gone)

        tries = 0
        while True:
            try:
                return await self._run(release)
            except asyncpg.exceptions.DeadlockDetectedError:  # nothing was done: try again
                tries += 1
                if tries == 3:
                    raise

    async def load_holds(self, now_us: int) -> list[HoldRow]:
        async def load(conn: Any) -> list[HoldRow]:
            async with conn.transaction():
                await conn.execute("DELETE FROM holds WHERE expires_at <= $1", now_us)
                # what expired, off the fleet's sums
                await conn.execute("SELECT budgetd_expire($1)", now_us)
                # this node's own (node '': opened before the fleet knew nodes); the others' are theirs to close
                return [HoldRow(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]), r[6], r[7]) for r in await conn.fetch(
                    "SELECT id, created_at, expires_at, component, estimate, attrs, cost_nanos, tokens FROM holds "
                    "WHERE node = $1 OR node = ''", self.node)]

        return await self._run(load)

    async def window_sums(self, sums: list[WindowSum]) -> dict[str, list[WindowTotal]]:
        """From the records, in one snapshot, with what the other nodes counted; the fleet's sums of these
        windows are corrected to the records in the same transaction (see `fleet`)."""
        import asyncpg

        async def read(conn: Any) -> dict[str, list[WindowTotal]]:
            async with conn.transaction(isolation="repeatable_read"):
                compacted = await compacted_before(conn)
                return {s.budget: await fleet.correct(conn, s, await _window_sum(conn, s, compacted), self.node)
                        for s in sums}

        if self.spool is not None and self.spool.depth:
            await self.replay()  # the counters count what the spool holds too
        for attempt in range(5):
            try:
                return await self._run(read)
            except (asyncpg.exceptions.SerializationError, asyncpg.exceptions.UniqueViolationError):
                if attempt == 4:
                    raise
                # another node corrected the same sums meanwhile: read them again
        raise AssertionError("unreachable")

    async def compact(self, before_us: int) -> int:
        before = before_us // HOUR_US * HOUR_US  # whole hours: the hour rollup then covers exactly what went

        async def compact(conn: Any) -> int:
            async with conn.transaction():
                last = await conn.fetchval("SELECT max(record_id) FROM usage WHERE ts < $1", before)
                gone = await conn.fetchval("WITH d AS (DELETE FROM usage WHERE ts < $1 RETURNING 1) "
                                           "SELECT count(*) FROM d", before)
                for key, value in (("compacted_before", before), ("last_compacted_id", last)):
                    if value is not None:
                        await conn.execute(
                            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET "
                            "value = greatest(meta.value::bigint, excluded.value::bigint)::text", key, str(value))
            return gone

        return await self._run(compact)

    async def expire_keys(self, before_us: int) -> int:
        return await self._run(lambda conn: conn.fetchval(
            "WITH d AS (DELETE FROM idempotency WHERE created_at < $1 RETURNING 1) SELECT count(*) FROM d",
            before_us))

    # -- budgets --

    async def load_budgets(self) -> list[StoredBudget]:
        async def load(conn: Any) -> list[StoredBudget]:
            return [StoredBudget(bytes(r[0]), r[1]) for r in await conn.fetch(
                "SELECT spec, origin FROM budgets ORDER BY name")]

        return await self._run(load)

    async def save_budget(self, name: str, spec: bytes, origin: str, now_us: int) -> bool:
        """Saved with its hard limits (which the fleet's admission reads), and the budgets' version moved on, in
        one statement: every node reloads them."""
        limits = fleet.hard_limits(spec)
        await self._run(lambda conn: conn.execute(
            "WITH s AS (INSERT INTO budgets (name, spec, origin, updated_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin, "
            "updated_at = excluded.updated_at WHERE budgets.spec <> excluded.spec RETURNING 1), "
            f"{fleet.SET_LIMITS} {_BUDGETS_MOVED}",
            name, spec, origin, now_us, limits is not None, *(limits or (None, None))))
        return True

    async def delete_budget(self, name: str) -> bool:
        async def delete(conn: Any) -> bool:
            return await conn.fetchval(f"WITH s AS (DELETE FROM budgets WHERE name = $1 RETURNING 1), "
                                       "l AS (DELETE FROM fleet_limits WHERE budget = $1), "
                                       f"v AS ({_BUDGETS_MOVED}) SELECT count(*) FROM s", name) > 0

        return await self._run(delete)

    # -- prices --

    async def load_prices(self) -> PriceState:
        async def load(conn: Any) -> PriceState:
            return PriceState(
                entries=[bytes(r[0]) for r in await conn.fetch(
                    "SELECT entry FROM price_versions WHERE effective_to IS NULL ORDER BY model")],
                overridden=[r[0] for r in await conn.fetch("SELECT model FROM price_overrides ORDER BY model")],
                sources=[SourceState(*r) for r in await conn.fetch(
                    "SELECT source, models, last_success, last_error, etag, last_modified FROM price_sources "
                    "ORDER BY source")],
                version=await conn.fetchval("SELECT coalesce(max(version), 0) FROM price_versions"),
            )

        return await self._run(load)

    async def apply_prices(self, m: ApplyPrices) -> int:
        async def apply(conn: Any) -> int:
            async with conn.transaction():
                # One change at a time, each on the newest version: nodes of a fleet change prices in turn.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", fleet.PRICES_LOCK)
                newest = await conn.fetchval("SELECT coalesce(max(version), 0) FROM price_versions")
                if (m.changes or m.close or m.set_override or m.unset_override) and m.version <= newest:
                    if m.changes and await conn.fetchval(
                            "SELECT entry FROM price_versions WHERE version = $1 AND model = $2", m.version,
                            m.changes[0].model) == m.changes[0].entry:
                        return len(m.changes)  # applied already: the answer to an earlier try got lost
                    raise OpError("conflict", f"the fleet's prices moved on to version {newest} meanwhile (another "
                                  "node changed them): this change was not applied; make it again")
                for change in m.changes:
                    await conn.execute("UPDATE price_versions SET effective_to = $1 WHERE model = $2 "
                                       "AND effective_to IS NULL", m.effective_from, change.model)
                    await conn.execute("INSERT INTO price_versions (version, model, entry, source, effective_from) "
                                       "VALUES ($1, $2, $3, $4, $5)", m.version, change.model, change.entry,
                                       change.source, m.effective_from)
                for model in m.close:
                    await conn.execute("UPDATE price_versions SET effective_to = $1 WHERE model = $2 "
                                       "AND effective_to IS NULL", m.effective_from, model)
                if m.set_override is not None:
                    await conn.execute("INSERT INTO price_overrides (model, entry, updated_at) VALUES ($1, $2, $3) "
                                       "ON CONFLICT (model) DO UPDATE SET entry = excluded.entry, "
                                       "updated_at = excluded.updated_at", m.set_override, b"", m.effective_from)
                if m.unset_override is not None:
                    await conn.execute("DELETE FROM price_overrides WHERE model = $1", m.unset_override)
                for s in m.sources:
                    await conn.execute(
                        "INSERT INTO price_sources (source, models, last_success, last_error, etag, last_modified) "
                        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source) DO UPDATE SET "
                        "models = excluded.models, last_success = excluded.last_success, "
                        "last_error = excluded.last_error, etag = excluded.etag, "
                        "last_modified = excluded.last_modified",
                        s.source, s.models, s.last_success, s.last_error, s.etag, s.last_modified)
            return len(m.changes)

        return await self._run(apply)

    async def price_history(self, model: str) -> list[PriceVersion]:
        async def read(conn: Any) -> list[PriceVersion]:
            return [PriceVersion(bytes(r[0]), r[1], r[2]) for r in await conn.fetch(
                "SELECT entry, effective_from, effective_to FROM price_versions WHERE model = $1 ORDER BY version",
                model)]

        return await self._run(read)

    async def source_price(self, model: str) -> bytes | None:
        async def read(conn: Any) -> bytes | None:
            entry = await conn.fetchval("SELECT entry FROM price_versions WHERE model = $1 AND source != 'override' "
                                        "ORDER BY version DESC LIMIT 1", model)
            return None if entry is None else bytes(entry)

        return await self._run(read)

    # -- alerts --

    async def save_alert(self, a: SaveAlert) -> int | None:
        return await self._run(lambda conn: conn.fetchval(
            "INSERT INTO alerts (ts, kind, severity, budget, key, window_start, message, data, dedupe) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dedupe) DO NOTHING RETURNING id",
            a.ts, a.kind, a.severity, a.budget, a.key, a.window_start, a.message, a.data, a.dedupe))

    async def ack_alert(self, alert_id: int, by: str | None, at_us: int) -> bool:
        async def ack(conn: Any) -> bool:
            done = await conn.fetchval("UPDATE alerts SET acked = 1, acked_by = $1, acked_at = $2 "
                                       "WHERE id = $3 AND acked = 0 RETURNING id", by, at_us, alert_id)
            if done is not None:
                return True
            if await conn.fetchval("SELECT 1 FROM alerts WHERE id = $1", alert_id) is None:
                raise OpError("not_found", f"no alert {alert_id}; see `budget alerts --all` for their ids",
                              "$.alert_id")
            return False

        return await self._run(ack)


async def _position(conn: Any) -> Tally:
    """The totals of every record ever written (the hour rollup still holds what compaction removed)."""
    row = await conn.fetchrow(f"SELECT {', '.join(f'coalesce(sum({c}), 0)' for c in SUMS)} FROM rollup_hour")
    return Tally(*(int(v) for v in row))


def _minus(a: Tally, b: Tally) -> Tally:
    return Tally(*(x - y for x, y in zip(a.values(), b.values())))


async def compacted_before(conn: Any) -> int | None:
    """The instant (µs) before which records were compacted into the rollups, if any were."""
    value = await conn.fetchval("SELECT value::bigint FROM meta WHERE key = 'compacted_before'")
    return None if value is None else int(value)


async def _backfill(conn: Any, calendar: rollups.LocalCalendar) -> None:
    """A zone's day, week and month rollups, from the hour rollup where the zone's days start on UTC hours,
    else from the records (the fleet database is new, or was imported with its records)."""
    days: dict[tuple, list[int]] = {}
    on_hours = True
    dims, sums = ", ".join(_DIMS), ", ".join(SUMS)
    for hour, *rest in await conn.fetch(f"SELECT hour, {dims}, {sums} FROM rollup_hour"):
        day = calendar.start(hour)[0]
        if calendar.start(hour + HOUR_US - 1)[0] != day:
            on_hours = False
            break
        accumulate(days, (calendar.zone, day, *rest[:len(_DIMS)]), [int(v) for v in rest[len(_DIMS):]])
    if not on_hours:
        days = {}
        columns = ", ".join(f"coalesce({d}, '')" for d in _DIMS)
        for ts, *rest in await conn.fetch(f"SELECT ts, {columns}, 1, {', '.join(SUMS[1:])} FROM usage"):
            accumulate(days, (calendar.zone, calendar.start(ts)[0], *rest[:len(_DIMS)]),
                       [int(v) for v in rest[len(_DIMS):]])
    for i, upsert in enumerate(_UPSERT_LOCAL):
        by_unit: dict[tuple, list[int]] = {}
        for (zone, day, *rest), values in days.items():
            accumulate(by_unit, (zone, calendar.start(day)[i], *rest), values)
        if by_unit:
            await conn.executemany(upsert, [(*k, *v) for k, v in by_unit.items()])


def conditions(equal: dict[str, str], since: int | None, until: int | None,
               start: int = 1) -> tuple[list[str], list[Any]]:
    """WHERE terms (numbered from `start`) for exact dims (names from our own schema) and a time range."""
    where, args = [], []
    for dim, value in equal.items():
        args.append(value)
        where.append(f"{dim} = ${start + len(args) - 1}")
    if since is not None:
        args.append(since)
        where.append(f"ts >= ${start + len(args) - 1}")
    if until is not None:
        args.append(until)
        where.append(f"ts < ${start + len(args) - 1}")
    return where, args


async def _window_sum(conn: Any, s: WindowSum, compacted: int | None) -> list[WindowTotal]:
    records_from = s.start if compacted is None or (s.start is not None and s.start >= compacted) else compacted
    where, args = conditions(dict(s.exact), records_from, s.end)
    where += [f"{dim} IS NOT NULL" for dim in s.star]
    columns = "".join(f"{dim}, " for dim in s.star)
    sql = (f"SELECT {columns}coalesce(sum(cost_nanos), 0), coalesce(sum({_TOKENS}), 0) FROM usage"
           + (" WHERE " + " AND ".join(where) if where else "")
           + (f" GROUP BY {', '.join(s.star)}" if s.star else ""))
    n = len(s.star)
    merged: dict[tuple, list[int]] = {}
    for row in await conn.fetch(sql, *args):
        merged[tuple(row[:n])] = [int(row[n]), int(row[n + 1])]
    dims = {d for d, _ in s.exact} | set(s.star)
    if compacted is None or (s.start is not None and s.start >= compacted) or "context_id" in dims:
        return [WindowTotal(key, nanos, tokens) for key, (nanos, tokens) in merged.items()]
    # The compacted part of the window, from the hour rollup (absent dims are '' there).
    args = [value for _, value in s.exact] + [compacted]
    where = [f"{dim} = ${i + 1}" for i, (dim, _) in enumerate(s.exact)] + [f"{dim} != ''" for dim in s.star]
    where.append(f"hour < ${len(args)}")
    if s.start is not None:
        args.append(s.start)
        where.append(f"hour >= ${len(args)}")
    sql = (f"SELECT {columns}coalesce(sum(cost_nanos), 0), coalesce(sum({_TOKENS}), 0) "
           f"FROM rollup_hour WHERE {' AND '.join(where)}" + (f" GROUP BY {', '.join(s.star)}" if s.star else ""))
    for row in await conn.fetch(sql, *args):
        acc = merged.setdefault(tuple(row[:n]), [0, 0])
        acc[0] += int(row[n])
        acc[1] += int(row[n + 1])
    return [WindowTotal(key, nanos, tokens) for key, (nanos, tokens) in merged.items()
            if nanos or tokens or not s.star]

