"""The fleet's PostgreSQL ledger: its schema and forward migrations, applied by the first node that starts.

The tables are the SQLite ledger's (records, keys, holds, budgets, prices, alerts, rollups), in
PostgreSQL's types: times and sums are BIGINT microseconds and nano-dollars, JSON is BYTEA as the
daemon encodes it. A database is used only when it is one of ours (the `budgetd_meta` table names the
schema version) at a version this budgetd reads; one with other tables and none of ours is refused.
"""

import logging

from actors.ledger.postgres.fleet import SERVING
from actors.ledger.report_plan import SUMS
from actors.ledger.sqlite.rollups import ROLLUP_DIMS

log = logging.getLogger("budgetd.ledger")

#: Held while migrating, so two nodes starting at once migrate once (any 64-bit number of our own).
MIGRATION_LOCK = 0x42554447_00000001

#: The key space of the per-node advisory lock (see `node_lock`): two daemons with one node name are refused.
NODE_LOCK_SEED = 0x42554447_00000002

_DIMS = ", ".join(f"{d} TEXT NOT NULL" for d in ROLLUP_DIMS)
_SUMS = ", ".join(f"{s} BIGINT NOT NULL" for s in SUMS)
_KEY = ", ".join(ROLLUP_DIMS)


def _local(unit: str) -> str:
    return f"""
CREATE TABLE rollup_{unit} (
    zone TEXT NOT NULL,
    {unit} BIGINT NOT NULL,
    {_DIMS},
    {_SUMS},
    PRIMARY KEY (zone, {unit}, {_KEY})
);
"""


#: The function that admits a batch's reserves (see `actors.ledger.postgres.fleet`); made by v2, and made again
#: by v3 with `new_keys` and its plans kept (every database at v3 has this one).
_ADMIT = """
-- Admit a batch's reserves (groups of holds, one group per reserve) against the hard limits of the whole
-- fleet, inside the statement that writes the batch, and take the holds it closes off the counters. Each
-- counter the batch touches is locked (in one order on every node) until the batch commits and the holds it
-- closes leave the sums; then each group is admitted whole if every bounded charge fits its counter's spend
-- in the window (with what the batch's own records add, u_added_*) and holds (its charges are added, but
-- for holds the batch also closes) or refused. Expired holds count until a group would be refused: then
-- those on the batch's counters leave the sums, and the groups are judged again. Returns the refused
-- groups' numbers (negated: told to wait). `new_keys`: the idempotency keys the batch was planned with as
-- new, without looking them up (a known one is a unique_violation, and nothing is done).
--
-- Few statements, each for every counter at once: in PL/pgSQL a statement costs more to start than these
-- take to run.
CREATE OR REPLACE FUNCTION budgetd_admit(
    now_us BIGINT, me TEXT,
    u_budget TEXT[], u_key TEXT[], u_window BIGINT[], u_added_nanos BIGINT[], u_added_tokens BIGINT[],
    g_first INT[], g_last INT[],
    c_hold TEXT[], c_counter INT[], c_bounded BOOL[], c_nanos BIGINT[], c_tokens BIGINT[], c_expires BIGINT[],
    closed TEXT[], new_keys TEXT[]
) RETURNS INT[] LANGUAGE plpgsql
-- Its statements are planned once per session: planning them at each call cost more than running them.
SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    refused INT[]; admitted INT[];
    u_nanos BIGINT[]; u_tokens BIGINT[]; l_nanos BIGINT[]; l_tokens BIGINT[]; limited BOOL[];
    t_nanos BIGINT[]; t_tokens BIGINT[];
    g INT; j INT; i INT; c INT; fits BOOLEAN; away BOOLEAN; known BOOLEAN; swept BOOLEAN := FALSE;
    closed_counters BIGINT[] := '{}';
BEGIN
    -- keys the batch was written as new with but the database holds: the batch is looked up and tried again.
    -- Planned at each call (EXECUTE): a plan kept from when the table was small scans it whole.
    IF cardinality(new_keys) > 0 THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM idempotency WHERE key = ANY($1))' INTO known USING new_keys;
        IF known THEN
            RAISE unique_violation USING MESSAGE = 'a key of this batch is known: look it up';
        END IF;
    END IF;
    -- The statements on the holds closed are planned at each call (EXECUTE), like the one on the keys.
    IF cardinality(closed) > 0 THEN
        EXECUTE 'SELECT array_agg(hashtextextended(budget || E''\\x1f'' || key, 0)) FROM fleet_held '
                'WHERE hold_id = ANY($1)' INTO closed_counters USING closed;
    END IF;
    PERFORM pg_advisory_xact_lock(h) FROM (
        SELECT DISTINCT h FROM (
            SELECT hashtextextended(b || E'\\x1f' || k, 0) AS h FROM unnest(u_budget, u_key) AS u(b, k)
            UNION ALL SELECT unnest(closed_counters)) AS touched
        ORDER BY h) AS locks;
    IF cardinality(closed) > 0 THEN
        EXECUTE 'WITH gone AS (DELETE FROM fleet_held WHERE hold_id = ANY($1) RETURNING budget, key, nanos, tokens) '
                'UPDATE fleet_held_sums s SET nanos = s.nanos - g.n, tokens = s.tokens - g.t '
                'FROM (SELECT budget, key, sum(nanos) AS n, sum(tokens) AS t FROM gone GROUP BY budget, key) AS g '
                'WHERE s.budget = g.budget AND s.key = g.key' USING closed;
    END IF;
    IF cardinality(g_first) = 0 THEN
        RETURN '{}';
    END IF;
    LOOP
        -- Each counter's spend in its window, what is held on it, and its limits as the database has them (a
        -- budget changed on another node binds here at once; none for a budget deleted, or no longer hard,
        -- meanwhile). A node replaying what it kept while the database was away holds spend nobody here
        -- counts yet: reserves that a hard limit bounds wait for it ("retry shortly": numbers negated).
        SELECT array_agg(coalesce(sp.n, 0) + coalesce(hs.nanos, 0) + u_added_nanos[ix] ORDER BY ix),
               array_agg(coalesce(sp.t, 0) + coalesce(hs.tokens, 0) + u_added_tokens[ix] ORDER BY ix),
               array_agg(l.limit_nanos ORDER BY ix), array_agg(l.limit_tokens ORDER BY ix),
               array_agg(l.budget IS NOT NULL ORDER BY ix),
               EXISTS (SELECT 1 FROM fleet_nodes WHERE node <> me AND spooled > 0)
          INTO u_nanos, u_tokens, l_nanos, l_tokens, limited, away
          FROM generate_subscripts(u_budget, 1) AS ix
          CROSS JOIN LATERAL (SELECT sum(nanos) AS n, sum(tokens) AS t FROM fleet_spent
                               WHERE budget = u_budget[ix] AND key = u_key[ix] AND window_start = u_window[ix]) AS sp
          LEFT JOIN fleet_held_sums hs ON hs.budget = u_budget[ix] AND hs.key = u_key[ix]
          LEFT JOIN fleet_limits l ON l.budget = u_budget[ix];
        IF away THEN  -- only a node that serves (holds its name's lock) replays: a dead one's spool waits for it
            away := EXISTS (SELECT 1 FROM fleet_nodes n WHERE n.node <> me AND n.spooled > 0 AND """ + SERVING + """);
        END IF;
        refused := '{}'; admitted := '{}';
        FOR g IN 1 .. array_length(g_first, 1) LOOP
            t_nanos := u_nanos; t_tokens := u_tokens; fits := TRUE;
            FOR j IN g_first[g] .. g_last[g] LOOP
                CONTINUE WHEN c_hold[j] = ANY(closed);  -- opened and closed in this batch: it holds nothing
                c := c_counter[j];
                -- a hold counts on its budget and key in every window the batch reads it in
                FOR i IN 1 .. array_length(u_budget, 1) LOOP
                    CONTINUE WHEN u_budget[i] <> u_budget[c] OR u_key[i] <> u_key[c];
                    t_nanos[i] := t_nanos[i] + c_nanos[j]; t_tokens[i] := t_tokens[i] + c_tokens[j];
                END LOOP;
                IF c_bounded[j] AND (t_nanos[c] > l_nanos[c] OR t_tokens[c] > l_tokens[c]) THEN
                    fits := FALSE;
                END IF;
                IF away AND c_bounded[j] AND limited[c] THEN
                    fits := NULL;
                END IF;
            END LOOP;
            IF fits IS NULL THEN
                refused := refused || -g;
            ELSIF fits THEN
                u_nanos := t_nanos; u_tokens := t_tokens;
                admitted := admitted || g;
            ELSE
                refused := refused || g;
            END IF;
        END LOOP;
        EXIT WHEN swept OR NOT (0 < ANY(refused));
        -- a group would be refused: the expired holds on the batch's counters leave the sums, and all are
        -- judged again
        WITH gone AS (DELETE FROM fleet_held f USING (SELECT DISTINCT b, k FROM unnest(u_budget, u_key) AS u(b, k)) AS u
                       WHERE f.budget = u.b AND f.key = u.k AND f.expires_at <= now_us
                       RETURNING f.budget, f.key, f.nanos, f.tokens)
        UPDATE fleet_held_sums s SET nanos = s.nanos - e.n, tokens = s.tokens - e.t
          FROM (SELECT budget, key, sum(nanos) AS n, sum(tokens) AS t FROM gone GROUP BY budget, key) AS e
         WHERE s.budget = e.budget AND s.key = e.key;
        swept := TRUE;
    END LOOP;
    IF cardinality(admitted) > 0 THEN
        WITH held AS (
            INSERT INTO fleet_held (hold_id, budget, key, node, nanos, tokens, expires_at)
            SELECT c_hold[x], u_budget[c_counter[x]], u_key[c_counter[x]], me, c_nanos[x], c_tokens[x], c_expires[x]
              FROM unnest(admitted) AS a(grp), generate_series(g_first[a.grp], g_last[a.grp]) AS x
             WHERE NOT (c_hold[x] = ANY(closed))
            RETURNING budget, key, nanos, tokens)
        INSERT INTO fleet_held_sums AS s (budget, key, nanos, tokens)
            SELECT budget, key, sum(nanos), sum(tokens) FROM held GROUP BY budget, key
            ON CONFLICT (budget, key) DO UPDATE SET nanos = s.nanos + excluded.nanos,
                                                    tokens = s.tokens + excluded.tokens;
    END IF;
    RETURN refused;
END
$fn$;

"""

MIGRATIONS: list[str] = [
    # v1: everything the SQLite ledger holds at its schema version 4
    f"""
CREATE TABLE usage (
    record_id             BIGINT PRIMARY KEY,
    ts                    BIGINT NOT NULL,
    recorded_at           BIGINT NOT NULL,
    component             TEXT NOT NULL,
    model                 TEXT NOT NULL,
    provider              TEXT,
    tier                  TEXT,
    context_id            TEXT,
    task_type             TEXT,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cache_write_tokens    BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    priced                INTEGER NOT NULL,
    price_version         BIGINT,
    reservation_id        TEXT,
    request_id            TEXT,
    metadata              TEXT,
    idempotency_key       TEXT,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens      BIGINT NOT NULL DEFAULT 0,
    audio_input_tokens    BIGINT NOT NULL DEFAULT 0,
    audio_output_tokens   BIGINT NOT NULL DEFAULT 0,
    service_tier          TEXT NOT NULL DEFAULT 'standard',
    web_search_requests   BIGINT NOT NULL DEFAULT 0
);
CREATE SEQUENCE usage_record_ids;
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_component_ts ON usage (component, ts);
CREATE INDEX usage_model_ts ON usage (model, ts);
CREATE INDEX usage_context_ts ON usage (context_id, ts) WHERE context_id IS NOT NULL;

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    payload_hash BYTEA NOT NULL,
    result       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE budgets (
    name       TEXT PRIMARY KEY,
    spec       BYTEA NOT NULL,
    origin     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE price_versions (
    version        BIGINT NOT NULL,
    model          TEXT NOT NULL,
    entry          BYTEA NOT NULL,
    source         TEXT NOT NULL,
    effective_from BIGINT NOT NULL,
    effective_to   BIGINT,
    PRIMARY KEY (model, version)
);
CREATE INDEX price_versions_current ON price_versions (model) WHERE effective_to IS NULL;

CREATE TABLE price_overrides (
    model      TEXT PRIMARY KEY,
    entry      BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE price_sources (
    source        TEXT PRIMARY KEY,
    models        BIGINT NOT NULL,
    last_success  BIGINT,
    last_error    TEXT,
    etag          TEXT,
    last_modified TEXT
);

CREATE TABLE alerts (
    id           BIGSERIAL PRIMARY KEY,
    ts           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    budget       TEXT,
    key          TEXT,
    window_start BIGINT,
    message      TEXT NOT NULL,
    data         BYTEA NOT NULL,
    dedupe       TEXT UNIQUE,
    acked        INTEGER NOT NULL DEFAULT 0,
    acked_by     TEXT,
    acked_at     BIGINT
);
CREATE INDEX alerts_ts ON alerts (ts);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE holds (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    component  TEXT NOT NULL,
    estimate   BYTEA NOT NULL,
    attrs      BYTEA NOT NULL,
    cost_nanos BIGINT NOT NULL,
    tokens     BIGINT NOT NULL
);

CREATE TABLE rollup_hour (
    hour BIGINT NOT NULL,
    {_DIMS},
    {_SUMS},
    PRIMARY KEY (hour, {_KEY})
);
{_local("day")}
{_local("week")}
{_local("month")}
CREATE TABLE rollup_zones (zone TEXT PRIMARY KEY);
""",
    # v2: the fleet. What each node recorded in all, and per budget counter (with a correction per counter,
    # node '', that keeps the sums equal to the records; see `actors.ledger.postgres.fleet`), what each open
    # hold holds on each hard budget, the nodes, and the function that admits holds exactly across nodes.
    f"CREATE TABLE fleet_totals (node TEXT PRIMARY KEY, {_SUMS});\n" + """
CREATE TABLE fleet_limits (
    budget       TEXT PRIMARY KEY,
    limit_nanos  BIGINT,
    limit_tokens BIGINT
);

CREATE TABLE fleet_spent (
    budget       TEXT NOT NULL,
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    node         TEXT NOT NULL,
    nanos        BIGINT NOT NULL,
    tokens       BIGINT NOT NULL,
    PRIMARY KEY (budget, key, window_start, node)
);
CREATE INDEX fleet_spent_window ON fleet_spent (window_start);

CREATE TABLE fleet_held (
    hold_id    TEXT NOT NULL,
    budget     TEXT NOT NULL,
    key        TEXT NOT NULL,
    node       TEXT NOT NULL,
    nanos      BIGINT NOT NULL,
    tokens     BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (hold_id, budget)
);
CREATE INDEX fleet_held_counter ON fleet_held (budget, key, expires_at);
CREATE INDEX fleet_held_expiry ON fleet_held (expires_at);
-- What fleet_held holds per counter, kept by the functions below only, under the counter's lock.
CREATE TABLE fleet_held_sums (
    budget TEXT NOT NULL,
    key    TEXT NOT NULL,
    nanos  BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (budget, key)
);

CREATE TABLE fleet_nodes (
    node         TEXT PRIMARY KEY,
    application  TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    spooled      BIGINT NOT NULL DEFAULT 0,
    budgets_version BIGINT NOT NULL DEFAULT 0
);

INSERT INTO meta (key, value) VALUES ('budgets_version', '0') ON CONFLICT (key) DO NOTHING;
ALTER TABLE holds ADD COLUMN node TEXT NOT NULL DEFAULT '';

""" + _ADMIT + """
-- Every expired hold off its counter's sums (a counter nobody reserves on again keeps its expired holds
-- until this runs: at each node's start).
CREATE FUNCTION budgetd_expire(now_us BIGINT) RETURNS VOID LANGUAGE plpgsql AS $fn$
DECLARE
    c RECORD;
BEGIN
    FOR c IN SELECT DISTINCT budget, key, hashtextextended(budget || E'\\x1f' || key, 0) AS h FROM fleet_held
             WHERE expires_at <= now_us ORDER BY h LOOP
        PERFORM pg_advisory_xact_lock(c.h);
        WITH gone AS (DELETE FROM fleet_held WHERE budget = c.budget AND key = c.key AND expires_at <= now_us
                      RETURNING nanos, tokens)
        UPDATE fleet_held_sums s SET nanos = s.nanos - g.n, tokens = s.tokens - g.t
          FROM (SELECT sum(nanos) AS n, sum(tokens) AS t FROM gone HAVING count(*) > 0) AS g
         WHERE s.budget = c.budget AND s.key = c.key;
    END LOOP;
END
$fn$;
""",
    # v3: the events the nodes relay to each other, the topics each node's subscribers follow, and
    # budgetd_admit told the keys a batch takes for new
    """
CREATE TABLE fleet_events (
    seq BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    ts BIGINT NOT NULL,
    event TEXT NOT NULL,
    data BYTEA NOT NULL
);
ALTER TABLE fleet_nodes ADD COLUMN topics TEXT[] NOT NULL DEFAULT '{}';
-- every node asks for the newest price version at every sync interval
CREATE INDEX price_versions_version ON price_versions (version);
-- budgetd_admit with `new_keys`: the one of v2 goes
DROP FUNCTION IF EXISTS budgetd_admit(BIGINT, TEXT, INT[], INT[], TEXT[], TEXT[], TEXT[], BIGINT[], BOOL[], BIGINT[],
                                      BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], TEXT[]);
""" + _ADMIT + """
""",
    # v4: budgetd_admit told each batch's counters once, with a few statements for all of them (the one of
    # v3 goes), and the holds released on another node than their own, for it to forget
    """
CREATE TABLE fleet_released (
    hold_id TEXT PRIMARY KEY,
    node TEXT NOT NULL
);
CREATE INDEX fleet_released_node ON fleet_released (node);
DROP FUNCTION IF EXISTS budgetd_admit(BIGINT, TEXT, INT[], INT[], TEXT[], TEXT[], TEXT[], BIGINT[], BOOL[], BIGINT[],
                                      BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[]);
""" + _ADMIT + """
""",
]
SCHEMA_VERSION = len(MIGRATIONS)


class FleetDatabaseError(Exception):
    """The fleet database cannot be used; the message says what to do."""


async def migrate(conn: object, where: str) -> int:
    """Bring the database to SCHEMA_VERSION, in one transaction under an advisory lock (nodes starting together
    migrate once, and a failed migration leaves nothing); the version it had. Refuses a database not ours."""
    async with conn.transaction():  # type: ignore[attr-defined]
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)  # type: ignore[attr-defined]
        await conn.execute(  # type: ignore[attr-defined]
            "CREATE TABLE IF NOT EXISTS budgetd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = await conn.fetchrow(  # type: ignore[attr-defined]
            "SELECT value FROM budgetd_meta WHERE key = 'schema_version'")
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise FleetDatabaseError(f"the fleet database {where} is of schema version {version}, newer than "
                                     f"this budgetd understands ({SCHEMA_VERSION}): upgrade budgetd on this node")
        if version == 0:
            others = await conn.fetchval(  # type: ignore[attr-defined]
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'budgetd_meta'")
            if others:
                raise FleetDatabaseError(
                    f"the fleet database {where} holds {others} tables that budgetd did not make: give budgetd "
                    "a database (or a schema, with search_path) of its own")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[target - 1])  # type: ignore[attr-defined]
            await conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO budgetd_meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", str(target))
            log.info("fleet database %s migrated to schema version %d", where, target)
    return version
