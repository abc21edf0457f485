"""The ledger in a PostgreSQL database (`fleet.dsn`), driven through real daemons and a real server: one
node on the storage seam, then several nodes sharing one database (README, "A fleet").
"""

import concurrent.futures
import json
import signal
import socket
import threading
import time

import pytest

from budgetd.client import BudgetError, SyncBudgetClient
from conftest import run_cli

pytestmark = pytest.mark.slow


def fleet_config(dsn: str, node: str = "", sync: str = "0.2s") -> str:
    return f'[fleet]\ndsn = "{dsn}"\n' + (f'node = "{node}"\nsync_interval = "{sync}"\n' if node else "")


def nodes(make_daemon, dsn: str, names: str = "abc") -> list:
    return [make_daemon(fleet_config(dsn, f"node-{n}")) for n in names]


GPT = dict(model="gpt-4o", input_tokens=1000, max_output_tokens=500)  # $0.0075 reserved per call


def record(c: SyncBudgetClient, key: str, component: str = "web", tokens: int = 1000):
    return c.record(component=component, model="gpt-4o", input_tokens=tokens, output_tokens=tokens // 2,
                    idempotency_key=key)


def test_a_daemon_on_postgres_keeps_records_holds_budgets_and_keys_across_a_restart(make_daemon, fleet_dsn, postgres):
    d = make_daemon(fleet_config(fleet_dsn))
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="web", period="monthly", limit_usd=1.0, policy="hard", scope={"component": "web"})
        first = [record(c, f"k{i}") for i in range(5)]
        again = record(c, "k2")
        assert again.duplicate and again.record_id == first[2].record_id
        hold = c.reserve(component="web", model="gpt-4o", input_tokens=1000, max_output_tokens=500, ttl_s=600)
        open_hold = c.reserve(component="web", model="gpt-4o", input_tokens=1000, max_output_tokens=500, ttl_s=600)
        c.commit(hold.reservation_id, component="web", model="gpt-4o", input_tokens=1000, output_tokens=100)
        before = c.status()
    assert len({r.record_id for r in first}) == 5
    spent = before.budgets[0].spent_usd
    assert spent == pytest.approx(5 * 0.0075 + 0.0035)
    assert before.budgets[0].reserved_usd == pytest.approx(0.0075)  # the hold left open
    assert before.daemon.fleet_database == fleet_dsn

    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as c:
        after = c.status()
        assert after.budgets[0].spent_usd == pytest.approx(spent)  # counters rebuilt from the database
        assert after.budgets[0].reserved_usd == pytest.approx(0.0075)  # the open hold is durable
        assert after.totals.requests == 6 and after.totals.cost_usd == pytest.approx(spent)
        repeat = record(c, "k4")  # a retry after the restart is still recognised
        assert repeat.duplicate and repeat.record_id == first[4].record_id
        c.release(open_hold.reservation_id)
        page = c.usage_list(limit=3)
        assert [r.record_id for r in page.records] == sorted((r.record_id for r in page.records), reverse=True)
    report = json.loads(run_cli("report", "--by", "component,model", "--json", socket=d.socket).stdout)
    assert report["totals"]["requests"] == 6
    assert report["rows"][0]["group"] == {"component": "web", "model": "gpt-4o"}
    refused = run_cli("backup", str(d.dir / "copy.db"), socket=d.socket)
    assert refused.returncode != 0 and "pg_dump" in refused.stderr
    assert postgres.psql("SELECT count(*) FROM usage", fleet_dsn.rsplit("/", 1)[1]).strip() == "6"
    assert postgres.psql("SELECT count(*) FROM holds", fleet_dsn.rsplit("/", 1)[1]).strip() == "0"


def test_a_database_of_an_older_schema_is_migrated_and_its_admitting_function_replaced(make_daemon, fleet_dsn,
                                                                                         postgres):
    from actors.ledger.postgres.schema import MIGRATIONS, SCHEMA_VERSION

    database = fleet_dsn.rsplit("/", 1)[1]
    # a database as schema v3 left it: v3's tables, and its budgetd_admit (one argument more: a body of its own)
    postgres.psql("CREATE TABLE budgetd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); "
                  "INSERT INTO budgetd_meta VALUES ('schema_version', '3'); " + "".join(MIGRATIONS[:3]), database)
    postgres.psql("DROP FUNCTION budgetd_admit; CREATE FUNCTION budgetd_admit(BIGINT, TEXT, INT[], INT[], TEXT[], "
                  "TEXT[], TEXT[], BIGINT[], BOOL[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[], "
                  "BIGINT[], BIGINT[], TEXT[], TEXT[]) RETURNS INT[] LANGUAGE sql AS $$ SELECT '{}'::int[] $$",
                  database)
    d = make_daemon(fleet_config(fleet_dsn))
    assert f"migrated to schema version {SCHEMA_VERSION}" in d.log.read_text()
    assert postgres.psql("SELECT value FROM budgetd_meta WHERE key = 'schema_version'", database).strip() == str(
        SCHEMA_VERSION)
    assert postgres.psql("SELECT pronargs FROM pg_proc WHERE proname = 'budgetd_admit'", database).split() == ["17"]
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="cap", period="daily", limit_usd=0.015, policy="hard", scope={"component": "burst"})
        assert [c.reserve(component="burst", ttl_s=600, **GPT).allowed for _ in range(3)] == [True, True, False]


def test_the_admitting_function_counts_no_hold_its_batch_closes_and_admits_to_the_nano(make_daemon, fleet_dsn,
                                                                                       postgres):
    d = make_daemon(fleet_config(fleet_dsn, "node-a"))
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="cap", period="total", limit_usd=0.0075, policy="hard", scope={"component": "burst"})
    d.stop()
    database = fleet_dsn.rsplit("/", 1)[1]
    now = int(time.time() * 1e6)

    def admit(holds: list[str], nanos: list[int], closed: list[str]) -> str:
        n = len(holds)  # one group per hold, all on the budget's one counter
        return postgres.psql(
            f"SELECT budgetd_admit({now}, 'node-z', ARRAY['cap'], ARRAY['[]'], ARRAY[{-2**63}]::bigint[], "
            f"ARRAY[0]::bigint[], ARRAY[0]::bigint[], ARRAY{list(range(1, n + 1))}, ARRAY{list(range(1, n + 1))}, "
            f"ARRAY{holds}::text[], ARRAY{[1] * n}, ARRAY{['t'] * n}::bool[], ARRAY{nanos}::bigint[], "
            f"ARRAY{[0] * n}::bigint[], ARRAY{[now + 10**9] * n}::bigint[], ARRAY{closed}::text[], '{{}}'::text[])",
            database).strip()

    # h1 is opened and closed in the batch: it holds nothing, and h2 has the whole room
    assert admit(["h1", "h2"], [7_500_000, 7_500_000], ["h1"]) == "{}"
    assert postgres.psql("SELECT hold_id FROM fleet_held", database).split() == ["h2"]
    postgres.psql("DELETE FROM fleet_held; UPDATE fleet_held_sums SET nanos = 0, tokens = 0", database)
    assert admit(["h3", "h4"], [7_499_999, 2], []) == "{2}"  # the last nano-dollar, and not one more
    assert postgres.psql("SELECT nanos FROM fleet_held_sums", database).split() == ["7499999"]


def test_a_node_whose_clock_is_off_from_the_databases_says_so(make_daemon, fleet_dsn):
    import datetime as dt

    ahead = make_daemon(fleet_config(fleet_dsn, "node-a"),
                        clock=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    right = make_daemon(fleet_config(fleet_dsn, "node-b"))
    deadline = time.monotonic() + 5
    while "clock is" not in ahead.log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    said = next(line for line in ahead.log.read_text().splitlines() if "clock is" in line)
    seconds = float(said.split("clock is ")[1].split(" s ")[0])
    assert 3590 < seconds < 3610 and "ahead of the fleet database's" in said and "NTP" in said
    assert "clock is" not in right.log.read_text()


def test_a_hard_budget_on_postgres_is_exact_under_concurrent_reserves(make_daemon, fleet_dsn):
    d = make_daemon(fleet_config(fleet_dsn))
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="cap", period="daily", limit_usd=0.075, policy="hard", scope={"component": "burst"})

    def one(i: int):
        with SyncBudgetClient(d.socket) as c:
            return c.reserve(component="burst", model="gpt-4o", input_tokens=1000, max_output_tokens=500,
                             idempotency_key=f"r{i}", ttl_s=600)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(200)))
    admitted = {i: a.reservation_id for i, a in enumerate(answers) if a.allowed}
    assert len(admitted) == 10  # $0.0075 each on $0.075
    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as c:  # the holds came back: still no room
        assert not c.check(component="burst", model="gpt-4o", input_tokens=1000, max_output_tokens=500).allowed
    # a retry of an admitted reserve, on the full budget, is its first answer again (not a denial)
    again = [one(i) for i in range(200)]
    assert {i: a.reservation_id for i, a in enumerate(again) if a.allowed} == admitted
    assert all(again[i].duplicate for i in admitted)


def test_a_second_daemon_with_the_same_node_name_is_refused_and_the_first_serves_on(make_daemon, fleet_dsn):
    first = make_daemon(fleet_config(fleet_dsn, "twin"))
    second = make_daemon(fleet_config(fleet_dsn, "twin"), start=False)
    second.start(wait=False)
    assert second.proc.wait(60) != 0
    out = second.log.read_text()
    assert "another budgetd node named 'twin' already serves" in out and "fleet.node" in out
    assert "Traceback" not in out
    with SyncBudgetClient(first.socket) as c:
        assert not record(c, "after").duplicate


def test_an_unreachable_or_foreign_database_stops_the_start_and_says_what_to_do(make_daemon, postgres, fleet_dsn):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    nowhere = make_daemon(fleet_config(f"postgresql://budgetd@127.0.0.1:{closed}/none"), start=False)
    nowhere.start(wait=False)
    assert nowhere.proc.wait(60) != 0
    out = nowhere.log.read_text()
    assert "cannot reach the fleet database" in out and "fleet.dsn" in out and "Traceback" not in out

    missing = make_daemon(fleet_config(fleet_dsn + "_missing"), start=False)
    missing.start(wait=False)
    assert missing.proc.wait(60) != 0
    out = missing.log.read_text()
    assert "does not exist" in out and "createdb" in out and "Traceback" not in out

    postgres.psql("CREATE TABLE orders (id int)", fleet_dsn.rsplit("/", 1)[1])
    foreign = make_daemon(fleet_config(fleet_dsn), start=False)
    foreign.start(wait=False)
    assert foreign.proc.wait(60) != 0
    out = foreign.log.read_text()
    assert "tables that budgetd did not make" in out and "Traceback" not in out


def test_a_password_never_shows_and_a_wrong_scheme_is_a_config_error(make_daemon, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[fleet]\ndsn = "mysql://root@db/budgetd"\n')
    done = run_cli("daemon", "--config", str(bad), "--socket", str(tmp_path / "s.sock"), "--data-dir",
                   str(tmp_path / "data"), "--no-http")
    assert done.returncode != 0 and "fleet.dsn must be a PostgreSQL URL" in done.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    named = run_cli("daemon", "--config", str(bad), "--socket", str(tmp_path / "s.sock"), "--data-dir",
                    str(tmp_path / "data"), "--no-http", env={"BUDGETD_FLEET_DSN": "postgresql://db/x",
                                                               "BUDGETD_FLEET_NODE": "two words"})
    assert named.returncode != 0 and "fleet.node must be 1 to 63 ASCII letters" in named.stderr
    assert "environment variable BUDGETD_FLEET_NODE" in named.stderr  # where it was set, not the file
    d = make_daemon(fleet_config(f"postgresql://budgetd:hunter2@127.0.0.1:{closed}/none"), start=False)
    d.start(wait=False)
    assert d.proc.wait(60) != 0
    out = d.log.read_text()
    assert "hunter2" not in out and "budgetd:***@127.0.0.1" in out


def test_while_the_database_is_away_records_are_spooled_reserves_refused_and_all_replayed(make_daemon):
    from postgres import PostgresServer

    server = PostgresServer().start()
    try:
        dsn = server.create_database("away")
        d = make_daemon(fleet_config(dsn))
        acknowledged = []
        with SyncBudgetClient(d.socket, retries=0) as c:
            for i in range(20):
                acknowledged.append(record(c, f"before-{i}").record_id)
            server.stop()
            deadline = time.monotonic() + 10
            while True:  # the first write after the server went may still find its connection half open
                try:
                    acknowledged.append(record(c, "while-away").record_id)
                    break
                except BudgetError as exc:
                    assert exc.code == "unavailable" and time.monotonic() < deadline, exc
            again = record(c, "while-away")  # a retry is recognised in the spool
            assert again.duplicate and again.record_id == acknowledged[-1]
            with pytest.raises(BudgetError) as info:
                c.reserve(component="web", model="gpt-4o", input_tokens=10, max_output_tokens=10)
            assert info.value.code == "unavailable" and "must be admitted by the fleet database" in info.value.message
            # checks are decided from memory
            assert c.check(component="web", model="gpt-4o", input_tokens=10, max_output_tokens=10).allowed
            assert list(d.dir.rglob("spool.db"))  # the records wait in the node's spool
        d.stop()  # and a node stopped while the database is away cannot start, but says its spool is kept
        d.start(wait=False)
        assert d.proc.wait(60) != 0
        out = d.log.read_text()
        assert "cannot reach the fleet database" in out and "spool.db keeps 1 batches acknowledged" in out, out[-1500:]
        server.start()
        d.start()
        with SyncBudgetClient(d.socket, retries=0) as c:
            deadline = time.monotonic() + 30
            while True:  # replayed by the node itself, without waiting for its next write
                try:
                    listed = {r.record_id for r in c.usage_list(limit=100).records}
                except BudgetError:
                    listed = set()
                if len(listed) == 21 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert record(c, "after").record_id not in listed
        assert set(acknowledged) == listed and len(listed) == 21
        assert d.query("SELECT count(*) FROM usage WHERE idempotency_key = 'while-away'") == [(1,)]
        assert "records are kept in the spool" in d.log.read_text()
    finally:
        server.remove()


def test_a_single_hosts_ledger_moves_into_an_empty_fleet_database_whole(make_daemon, fleet_dsn):
    single = make_daemon('[reports]\ntimezones = ["Europe/Berlin"]\n')
    with SyncBudgetClient(single.socket) as c:
        c.budget_set(name="web", period="daily", limit_usd=1.0, policy="hard", scope={"component": "web"},
                     thresholds=[0.01])
        c.prices_set(model="house-model", input_per_mtok=1.0, output_per_mtok=2.0)
        for i in range(30):
            record(c, f"m{i}", component="web" if i % 3 else "batch")
        hold = c.reserve(component="web", model="gpt-4o", input_tokens=1000, max_output_tokens=500, ttl_s=3600)
        before = c.status()
        alerts = c.alerts_list()
    report_before = json.loads(run_cli("report", "--by", "component", "--bucket", "day", "--tz",
                                       "Europe/Berlin", "--json", socket=single.socket).stdout)
    single.stop()

    done = run_cli("fleet", "import", str(single.ledger), "--dsn", fleet_dsn)
    assert done.returncode == 0, done.stderr
    assert "imported 30 records, 1 budgets" in done.stdout and "1 open holds" in done.stdout
    again = run_cli("fleet", "import", str(single.ledger), "--dsn", fleet_dsn)
    assert again.returncode == 1 and "already holds a ledger" in again.stderr

    node = make_daemon(fleet_config(fleet_dsn) + '[reports]\ntimezones = ["Europe/Berlin"]\n')
    report_after = json.loads(run_cli("report", "--by", "component", "--bucket", "day", "--tz",
                                      "Europe/Berlin", "--json", socket=node.socket).stdout)
    assert report_after["rows"] == report_before["rows"] and report_after["totals"] == report_before["totals"]
    with SyncBudgetClient(node.socket) as c:
        after = c.status()
        assert [(b.budget, b.spent_usd, b.reserved_usd) for b in after.budgets] == \
            [(b.budget, b.spent_usd, b.reserved_usd) for b in before.budgets]
        assert after.totals == before.totals
        assert [(a.id, a.kind) for a in c.alerts_list()] == [(a.id, a.kind) for a in alerts] and alerts
        assert c.prices_get("house-model").price.input_per_mtok == 1.0
        assert record(c, "m7").duplicate  # its keys came along
        fresh = record(c, "new")
        assert fresh.record_id > max(r.record_id for r in c.usage_list(limit=100).records
                                     if r.record_id != fresh.record_id)
        assert c.release(hold.reservation_id)  # so did the open hold


@pytest.mark.both_ledgers
def test_control_characters_are_refused_on_every_door_and_the_ledger_serves_on(make_daemon):
    """A NUL (which a PostgreSQL text column cannot hold) or a terminal escape (which the CLI's tables
    would print) in a name, a label or a key is refused, on either ledger."""
    from conftest import RawConn

    d = make_daemon(http=True)
    with RawConn(d.socket) as conn:
        for usage, key, field in ((
                {"component": "a\u0000b", "model": "gpt-4o", "input_tokens": 1}, None, "$.usage.component"),
                ({"component": "a\u001b[2Jb", "model": "gpt-4o", "input_tokens": 1}, None, "$.usage.component"),
                ({"component": "ab", "model": "gpt-4o", "input_tokens": 1, "context_id": "\n"}, None,
                 "$.usage.context_id"),
                ({"component": "ab", "model": "gpt-4o", "input_tokens": 1}, "k\u0000", "$.idempotency_key")):
            frame = {"op": "record", "id": 1, "usage": usage, **({"idempotency_key": key} if key else {})}
            answer = conn.call(frame)
            assert answer["ok"] is False and answer["error"]["field"] == field, answer
            assert "without control characters" in answer["error"]["message"]
    import httpx

    refused = httpx.post(f"{d.url}/api/v1/usage", json={"component": "x\u0000", "model": "gpt-4o",
                                                        "input_tokens": 1})
    assert refused.status_code == 400 and "without control characters" in refused.text
    with SyncBudgetClient(d.socket) as c:
        assert record(c, "after").record_id >= 1
        assert c.status().totals.requests == 1


def test_a_node_cut_off_while_another_wrote_follows_what_it_wrote_once_back(make_daemon):
    from postgres import PostgresServer

    server = PostgresServer().start()
    try:
        dsn = server.create_database("cutoff")
        a, b = nodes(make_daemon, dsn, "ab")
        with SyncBudgetClient(a.socket) as c:
            c.budget_set(name="cap", period="daily", limit_usd=0.02, policy="hard", scope={"component": "web"})
            record(c, "a-1")
        server.stop()  # both are cut off; b is back first and spends the rest
        server.start()
        with SyncBudgetClient(b.socket) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    record(c, "b-1")
                    break
                except BudgetError as exc:
                    assert exc.code == "unavailable" and time.monotonic() < deadline, exc
                    time.sleep(0.2)
        with SyncBudgetClient(a.socket) as c:  # a goes on serving, and sees b's spend
            deadline = time.monotonic() + 30
            while c.check(component="web", **GPT).allowed:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert c.status().budgets[0].spent_usd == pytest.approx(2 * 0.0075)
            assert not c.reserve(component="web", **GPT).allowed
        assert a.proc.poll() is None and b.query("SELECT count(*) FROM usage") == [(2,)]
    finally:
        server.remove()


def test_an_import_while_the_single_hosts_daemon_runs_is_refused(make_daemon, fleet_dsn):
    single = make_daemon()
    with SyncBudgetClient(single.socket) as c:
        record(c, "s-1")
    done = run_cli("fleet", "import", str(single.ledger), "--dsn", fleet_dsn)
    assert done.returncode == 1 and "a budgetd daemon is using" in done.stderr
    single.stop()
    assert run_cli("fleet", "import", str(single.ledger), "--dsn", fleet_dsn).returncode == 0


def test_an_alert_raised_while_the_database_is_away_is_stored_once_it_is_back(make_daemon):
    from postgres import PostgresServer

    server = PostgresServer().start()
    try:
        d = make_daemon(fleet_config(server.create_database("alerts")))
        with SyncBudgetClient(d.socket) as c:
            c.budget_set(name="closed", period="daily", limit_usd=0.0, policy="hard", scope={"component": "shut"})
            server.stop()
            # checks are decided from memory while the database is away: this one is denied, which is an alert
            assert not c.check(component="shut", model="gpt-4o", input_tokens=10, max_output_tokens=10).allowed
            time.sleep(1.0)
            server.start()
            deadline = time.monotonic() + 30
            while True:
                try:
                    stored = [a for a in c.alerts_list() if a.kind == "denied" and a.budget == "closed"]
                except BudgetError:
                    stored = []  # the reader reconnects at its next call
                if stored or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        assert len(stored) == 1, d.log.read_text()[-2000:]
        assert "alert not stored yet" in d.log.read_text()
    finally:
        server.remove()


def test_three_nodes_admit_exactly_the_hard_limit_under_1000_concurrent_reserves(make_daemon, fleet_dsn):
    fleet = nodes(make_daemon, fleet_dsn)
    with SyncBudgetClient(fleet[0].socket) as c:  # 100 calls of $0.0075
        c.budget_set(name="cap", period="monthly", limit_usd=0.75, policy="hard", scope={"component": "burst"})
    time.sleep(0.5)  # every node has the budget
    sampled: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # spent + held of the whole fleet, as its database has them, all along
        while not stop.is_set():
            spent, held = fleet[0].query(
                "SELECT (SELECT coalesce(sum(nanos), 0) FROM fleet_spent WHERE budget = 'cap'), "
                "(SELECT coalesce(sum(nanos), 0) FROM fleet_held WHERE budget = 'cap')")[0]
            sampled.append(spent + held)
            time.sleep(0.02)

    def one(i: int):
        with SyncBudgetClient(fleet[i % 3].socket) as c:
            d = c.reserve(component="burst", idempotency_key=f"r{i}", ttl_s=600, **GPT)
            if d.allowed and i % 2:  # half are spent (at their estimate) at once, the others stay held
                c.commit(d.reservation_id, component="burst", model="gpt-4o", input_tokens=1000, output_tokens=500)
            return i % 3 if d.allowed else None

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            admitted = [n for n in pool.map(one, range(1000)) if n is not None]
    finally:
        stop.set()
        watcher.join()
    assert len(admitted) == 100  # exactly: no node took more, and none was kept from the last dollar
    assert len(set(admitted)) == 3  # every node admitted some
    assert sampled and max(sampled) <= 750_000_000
    # the per-counter sums admission reads are what the holds add up to
    assert fleet[0].query("SELECT nanos FROM fleet_held_sums WHERE budget = 'cap'") == fleet[0].query(
        "SELECT sum(nanos) FROM fleet_held WHERE budget = 'cap'")
    time.sleep(0.5)
    for d in fleet:  # each node sees the whole fleet's use of it
        with SyncBudgetClient(d.socket) as c:
            state = c.status().budgets[0]
            assert state.spent_usd + state.reserved_usd == pytest.approx(0.75)
            assert not c.check(component="burst", **GPT).allowed


def test_a_reserve_the_fleets_database_refused_keeps_its_key_as_a_denial(make_daemon, fleet_dsn):
    a = make_daemon(fleet_config(fleet_dsn, "node-a"))
    b = make_daemon(fleet_config(fleet_dsn, "node-b", sync="2s"))  # b sees a's holds late: the database judges
    with SyncBudgetClient(a.socket) as ca, SyncBudgetClient(b.socket) as cb:
        ca.budget_set(name="cap", period="daily", limit_usd=0.0075, policy="hard", scope={"component": "burst"})
        for attempt in range(5):  # until b asks before it saw a's hold (b's sync may fall in between)
            held = ca.reserve(component="burst", ttl_s=600, **GPT)
            assert held.allowed
            first = cb.reserve(component="burst", idempotency_key=f"k{attempt}", **GPT)
            assert not first.allowed
            if any("across the fleet" in r for r in first.reasons):
                break
            ca.release(held.reservation_id)
            time.sleep(2.5)  # b sees the room again
        else:
            pytest.fail("node b never asked the database before it saw node a's hold")
        key = f"k{attempt}"
        again = cb.reserve(component="burst", idempotency_key=key, **GPT)
        assert again.duplicate and not again.allowed and again.reasons == first.reasons
        with pytest.raises(BudgetError) as info:  # another request under the key
            cb.reserve(component="burst", idempotency_key=key, model="gpt-4o", input_tokens=10, max_output_tokens=5)
        assert info.value.code == "idempotency_conflict"
        assert ca.release(held.reservation_id)
        time.sleep(2.5)  # b sees the room again, and its key still answers the first denial
        assert cb.reserve(component="burst", idempotency_key="fresh", **GPT).allowed is True
        repeat = cb.reserve(component="burst", idempotency_key=key, **GPT)
        assert repeat.duplicate and not repeat.allowed
        assert cb.status().budgets[0].reserved_usd == pytest.approx(0.0075)  # the fresh one only


def test_a_node_killed_with_holds_out_gives_their_room_back_once_they_expire(make_daemon, fleet_dsn):
    a, b = nodes(make_daemon, fleet_dsn, "ab")
    with SyncBudgetClient(a.socket) as c:
        c.budget_set(name="cap", period="daily", limit_usd=0.075, policy="hard", scope={"component": "burst"})
        held = c.lease(component="burst", calls=10, ttl_s=3, **GPT)  # all of it, as a lease of ten calls
        assert len(held.decision.reservation_ids) == 10
    with SyncBudgetClient(b.socket) as c:
        while not c.budget_list():  # b binds by the budget once it follows it (fleet.sync_interval)
            time.sleep(0.05)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    killed = time.monotonic()
    with SyncBudgetClient(b.socket) as c:
        refused = c.reserve(component="burst", **GPT)
        assert not refused.allowed and time.monotonic() - killed < 3
        deadline = time.monotonic() + 15
        while not (d := c.reserve(component="burst", **GPT)).allowed:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert time.monotonic() - killed >= 2.5  # not before the dead node's holds expired
    status = run_cli("fleet", "status", "--json", socket=b.socket)
    assert status.returncode == 0, status.stderr
    nodes_seen = {n["node"]: n for n in json.loads(status.stdout)["nodes"]}
    assert not nodes_seen["node-a"]["serving"] and nodes_seen["node-b"]["serving"] and nodes_seen["node-b"]["this"]
    assert nodes_seen["node-b"]["open_holds"] == 1 and d.reservation_id


def test_a_reservation_released_or_committed_on_another_node_returns_its_room_to_the_fleet_at_once(make_daemon, fleet_dsn):
    import httpx

    a = make_daemon(fleet_config(fleet_dsn, "node-a"))
    b = make_daemon(fleet_config(fleet_dsn, "node-b") + '[[http.tokens]]\ntoken = "tok-web"\nrole = "write"\n'
                    'components = ["web"]\n', http=True)
    with SyncBudgetClient(a.socket) as ca, SyncBudgetClient(b.socket) as cb:
        ca.budget_set(name="cap", period="daily", limit_usd=0.0075, policy="hard", scope={"component": "burst"})
        held = ca.reserve(component="burst", ttl_s=600, **GPT)  # all the room there is
        time.sleep(0.5)  # b sees it
        assert not cb.reserve(component="burst", ttl_s=600, **GPT).allowed
        web = httpx.Client(base_url=b.url + "/api/v1", headers={"Authorization": "Bearer tok-web"})
        forbidden = web.delete(f"/reservations/{held.reservation_id}")  # not a reservation of its component
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        # its commit there is its own usage: b cannot tell the hold is not its component's, so it stays
        own = web.post(f"/reservations/{held.reservation_id}/commit",
                       json={"component": "web", "model": "gpt-4o", "input_tokens": 100})
        assert own.status_code == 200, own.text
        assert b.query("SELECT count(*) FROM fleet_held WHERE budget = 'cap'") == [(1,)]
        assert cb.release(held.reservation_id) is True  # on b: the database lets a's hold go
        assert cb.release(held.reservation_id) is False  # once
        assert cb.release("r-nobody") is False
        assert b.query("SELECT count(*) FROM fleet_held WHERE budget = 'cap'") == [(0,)]
        deadline = time.monotonic() + 2
        while ca.status().budgets[0].reserved_usd:  # a forgets it within a sync interval
            assert time.monotonic() < deadline
            time.sleep(0.05)
        taken = ca.reserve(component="burst", ttl_s=600, **GPT)
        assert taken.allowed  # the room is back, for a too
        time.sleep(0.5)
        assert not cb.reserve(component="burst", ttl_s=600, **GPT).allowed  # and taken once
        # committed on b: its spend counts once, and a forgets the hold
        spent = cb.commit(taken.reservation_id, component="burst", model="gpt-4o", input_tokens=1000,
                          output_tokens=100)
        assert spent.cost_usd == pytest.approx(0.0035)
        deadline = time.monotonic() + 2
        while (state := ca.status().budgets[0]).reserved_usd:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state.spent_usd == pytest.approx(0.0035)
        assert b.query("SELECT count(*) FROM fleet_held") == [(0,)]
        assert b.query("SELECT count(*) FROM fleet_released") == [(0,)]  # each told, and taken
    late = run_cli("release", held.reservation_id, socket=a.socket)
    assert late.returncode == 0 and "was not held" in late.stdout


def test_a_record_or_budget_on_one_node_shows_on_the_others_within_a_second(make_daemon, fleet_dsn):
    a, b = nodes(make_daemon, fleet_dsn, "ab")
    with SyncBudgetClient(a.socket) as ca, SyncBudgetClient(b.socket) as cb:
        ca.budget_set(name="web", period="daily", limit_usd=1.0, policy="hard", scope={"component": "web"})
        done = time.monotonic()
        while not cb.budget_list():
            assert time.monotonic() - done < 1.0
            time.sleep(0.05)
        record(ca, "on-a")
        done = time.monotonic()
        while (seen := cb.status()).budgets[0].spent_usd == 0 or seen.totals.requests == 0:
            assert time.monotonic() - done < 1.0
            time.sleep(0.05)
        assert seen.budgets[0].spent_usd == pytest.approx(0.0075) and seen.totals.requests == 1
        assert seen.totals.cost_usd == pytest.approx(0.0075)
        report = json.loads(run_cli("report", "--by", "component", "--json", socket=b.socket).stdout)
        assert report["totals"]["requests"] == 1  # reports read the shared database
        # a budget tightened on b binds on a within a second
        cb.budget_set(name="web", period="daily", limit_usd=0.001, policy="hard", scope={"component": "web"})
        done = time.monotonic()
        while ca.check(component="web", **GPT).allowed:
            assert time.monotonic() - done < 1.0
            time.sleep(0.05)
        cb.budget_delete("web")
        done = time.monotonic()
        while ca.budget_list():
            assert time.monotonic() - done < 1.0
            time.sleep(0.05)


def test_the_database_stopped_under_load_loses_no_acknowledged_record_and_counts_none_twice(make_daemon):
    from postgres import PostgresServer

    server = PostgresServer().start()
    try:
        dsn = server.create_database("outage")
        fleet = nodes(make_daemon, dsn, "ab")
        with SyncBudgetClient(fleet[0].socket) as c:
            c.budget_set(name="web", period="monthly", limit_usd=1000.0, policy="hard", scope={"component": "web"})
        acknowledged: dict[str, int] = {}
        refused: list[str] = []
        stop = threading.Event()

        def load(n: int, worker: int) -> None:
            with SyncBudgetClient(fleet[n].socket, retries=0) as c:
                i = 0
                while not stop.is_set():
                    key = f"n{n}-w{worker}-{i}"
                    i += 1
                    try:
                        acknowledged[key] = record(c, key).record_id
                    except BudgetError as exc:
                        assert exc.code == "unavailable", exc
                        refused.append(key)

        workers = [threading.Thread(target=load, args=(n, w)) for n in (0, 1) for w in range(4)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)
            server.stop("immediate")  # as a crash: sessions cut, the server's own recovery at start
            time.sleep(1.5)
            while_away = len(acknowledged)
            time.sleep(0.5)
            assert len(acknowledged) > while_away  # the nodes went on acknowledging, into their spools
            server.start()
            time.sleep(2.0)
        finally:
            stop.set()
            for w in workers:
                w.join()
        deadline = time.monotonic() + 30
        slowest = 0.0
        while True:  # the spools drain into the database, a part at a time: the nodes answer meanwhile
            for d in fleet:
                with SyncBudgetClient(d.socket, retries=0) as c:
                    asked = time.monotonic()
                    c.status()
                    slowest = max(slowest, time.monotonic() - asked)
            status = json.loads(run_cli("fleet", "status", "--json", socket=fleet[0].socket).stdout or "{}")
            if status and all(n["spooled"] == 0 for n in status["nodes"]):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert slowest < 2.0
        rows = fleet[0].query("SELECT idempotency_key, record_id FROM usage WHERE component = 'web'")
        stored = dict(rows)
        assert len(stored) == len(rows)  # no key twice
        assert {k: stored.get(k) for k in acknowledged} == acknowledged  # every acknowledged record, its own id
        assert set(stored) - set(acknowledged) <= set(refused)  # only what was told "may have been recorded"
        cost = fleet[0].query("SELECT sum(cost_nanos) FROM usage")[0][0]
        counted = fleet[0].query("SELECT sum(nanos) FROM fleet_spent WHERE budget = 'web'")[0][0]
        assert counted == cost  # the fleet's counters count each record once too
        for d in fleet:  # every node follows the other's replay, and recounts what was lost in a commit, in a second
            with SyncBudgetClient(d.socket) as c:
                deadline = time.monotonic() + 1.0
                while ((seen := c.status()).totals.requests != len(rows)
                       or seen.budgets[0].spent_usd * 1e9 != pytest.approx(cost)) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert seen.totals.requests == len(rows) and seen.budgets[0].spent_usd * 1e9 == pytest.approx(cost)
    finally:
        server.remove()


def test_one_node_refreshes_the_fleets_prices_and_an_override_on_any_node_applies_everywhere(make_daemon, fleet_dsn):
    from feeds import FeedServer

    with FeedServer() as feeds:
        a, b = [make_daemon(feeds.config() + fleet_config(fleet_dsn, f"node-{n}")) for n in "ab"]
        deadline = time.monotonic() + 10
        while not feeds.hits.get("/litellm.json"):  # the node elected refreshes at once
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        assert feeds.hits["/litellm.json"] == 1  # by one node only, not once per node
        with SyncBudgetClient(a.socket) as ca, SyncBudgetClient(b.socket) as cb:
            version = ca.status().prices.version
            deadline = time.monotonic() + 1.0
            while cb.status().prices.version != version:  # b follows the refresh
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ca.prices_set(model="house-model", input_per_mtok=1.0, output_per_mtok=2.0)
            done = time.monotonic()
            while True:
                try:
                    price = cb.prices_get("house-model").price
                    break
                except BudgetError as exc:
                    assert exc.code == "not_found" and time.monotonic() - done < 1.0
                    time.sleep(0.05)
            assert (price.input_per_mtok, price.source) == (1.0, "override")
            assert cb.check(component="x", model="house-model", input_tokens=1_000_000,
                            max_output_tokens=0).estimated_cost_usd == pytest.approx(1.0)
            # b changes it on the version a made: no conflict, and a follows
            cb.prices_set(model="house-model", input_per_mtok=3.0, output_per_mtok=2.0)
            done = time.monotonic()
            while ca.prices_get("house-model").price.input_per_mtok != 3.0:
                assert time.monotonic() - done < 1.0
                time.sleep(0.05)
            assert cb.prices_unset("house-model")
            done = time.monotonic()
            while True:
                try:
                    ca.prices_get("house-model")
                except BudgetError as exc:
                    assert exc.code == "not_found"
                    break
                assert time.monotonic() - done < 1.0
                time.sleep(0.05)
        versions = a.query("SELECT count(DISTINCT version), count(*) FROM price_versions WHERE model = 'house-model'")
        assert versions == [(2, 2)]  # two overrides, each its own version, none lost to a collision


def test_overrides_set_at_once_on_two_nodes_all_apply_each_on_its_own_version(make_daemon, fleet_dsn):
    a, b = nodes(make_daemon, fleet_dsn, "ab")

    def set_one(i: int) -> None:
        with SyncBudgetClient((a, b)[i % 2].socket) as c:
            c.prices_set(model=f"house-{i}", input_per_mtok=1.0 + i, output_per_mtok=2.0)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(set_one, range(20)))  # raises if one was refused
    assert a.query("SELECT count(DISTINCT version) FROM price_versions WHERE model LIKE 'house-%'") == [(20,)]
    time.sleep(0.5)
    for d in (a, b):
        with SyncBudgetClient(d.socket) as c:
            assert [c.prices_get(f"house-{i}").price.input_per_mtok for i in range(20)] == [1.0 + i for i in range(20)]


def test_a_budget_set_or_lowered_on_one_node_binds_every_node_once_the_set_is_answered(make_daemon, fleet_dsn):
    a, b, c = nodes(make_daemon, fleet_dsn)
    with SyncBudgetClient(a.socket) as ca, SyncBudgetClient(b.socket) as cb, SyncBudgetClient(c.socket) as cc:
        ca.budget_set(name="new", period="daily", limit_usd=0.05, policy="hard", scope={"component": "new"})
        # no waiting: once a answered, b and c bind by it
        admitted = [cl.reserve(component="new", ttl_s=120, **GPT).allowed for _ in range(5) for cl in (cb, cc)]
        assert sum(admitted) == 6  # $0.045 of $0.05
        cb.budget_set(name="new", period="daily", limit_usd=1.0, policy="hard", scope={"component": "new"})
        assert cc.reserve(component="new", ttl_s=120, **GPT).allowed
        ca.budget_set(name="new", period="daily", limit_usd=0.055, policy="hard", scope={"component": "new"})
        assert not cb.reserve(component="new", ttl_s=120, **GPT).allowed  # $0.0525 held: no room for $0.0075
        assert not cc.reserve(component="new", ttl_s=120, **GPT).allowed
        cc.budget_delete("new")
        assert ca.reserve(component="new", ttl_s=120, **GPT).allowed and cb.budget_list() == []


def test_reserves_on_hard_budgets_wait_while_another_node_replays_its_spool(make_daemon, fleet_dsn, postgres):
    a, b = nodes(make_daemon, fleet_dsn, "ab")
    database = fleet_dsn.rsplit("/", 1)[1]
    with SyncBudgetClient(a.socket, retries=0) as c:
        c.budget_set(name="cap", period="daily", limit_usd=1.0, policy="hard", scope={"component": "burst"})
        c.budget_set(name="loose", period="daily", limit_usd=1.0, policy="soft", scope={"component": "easy"})
        # as b says while it puts into the database what it kept while the database was away (b held still,
        # so its heartbeat does not say otherwise meanwhile)
        b.proc.send_signal(signal.SIGSTOP)
        postgres.psql("UPDATE fleet_nodes SET spooled = 3 WHERE node = 'node-b'", database)
        with pytest.raises(BudgetError) as info:
            c.reserve(component="burst", **GPT)
        assert info.value.code == "unavailable" and "replaying records" in info.value.message
        assert c.reserve(component="easy", **GPT).allowed  # no hard limit: nothing to wait for
        assert record(c, "meanwhile").record_id  # records are never held back
        postgres.psql("UPDATE fleet_nodes SET spooled = 0 WHERE node = 'node-b'", database)
        b.proc.send_signal(signal.SIGCONT)
        assert c.reserve(component="burst", **GPT).allowed
        assert c.status().budgets[0].reserved_usd == pytest.approx(0.0075)  # the refused one held nothing
        # b dies while it says it holds a spool: its spool waits for it, the others admit on
        b.proc.send_signal(signal.SIGSTOP)
        postgres.psql("UPDATE fleet_nodes SET spooled = 3 WHERE node = 'node-b'", database)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(30)
        deadline = time.monotonic() + 10
        while True:  # until the server has ended b's session (and its lock with it)
            try:
                assert c.reserve(component="burst", **GPT).allowed
                break
            except BudgetError as error:
                assert error.code == "unavailable" and time.monotonic() < deadline
                time.sleep(0.1)
        # a node of that name serving another fleet on the same server is not this fleet's b
        make_daemon(fleet_config(postgres.create_database("another_fleet"), "node-b"))
        assert c.reserve(component="burst", **GPT).allowed


def test_each_nodes_event_stream_carries_the_fleets_events_and_an_alert_is_raised_once(make_daemon, fleet_dsn):
    from conftest import RawConn

    a, b = nodes(make_daemon, fleet_dsn, "ab")
    with RawConn(b.socket) as sub_b, RawConn(a.socket) as sub_a, SyncBudgetClient(a.socket) as ca:
        sub_b.sock.settimeout(1.0)
        sub_a.sock.settimeout(5.0)
        assert sub_b.call({"op": "subscribe", "id": 1, "topics": ["usage", "alert"]})["ok"]
        assert sub_a.call({"op": "subscribe", "id": 1, "topics": ["alert"]})["ok"]
        # b's subscription reaches the others within a sync interval or two: a record made after it shows
        deadline, n = time.monotonic() + 10, 0
        while True:
            n += 1
            record(ca, f"ev-{n}")
            try:
                event = sub_b.recv()
                break
            except TimeoutError:
                assert time.monotonic() < deadline, a.log.read_text()[-2000:]
        assert event["event"] == "usage.recorded" and event["node"] == "node-a"
        # (the tries before it were made while no other node followed usage: a's relay let them go)
        made = record(ca, "ev-last")
        event = sub_b.recv()
        assert (event["event"], event["node"], event["data"]["record_id"]) == ("usage.recorded", "node-a",
                                                                               made.record_id)
        # an alert raised on a: on both streams once, stored once, from a's alerter alone
        ca.budget_set(name="closed", period="daily", limit_usd=0.0, policy="hard", scope={"component": "shut"})
        assert not ca.check(component="shut", model="gpt-4o", input_tokens=10, max_output_tokens=10).allowed
        on_a = sub_a.recv()
        assert (on_a["event"], on_a["node"]) == ("alert.raised", "node-a")
        sub_b.sock.settimeout(3.0)
        on_b = sub_b.recv()
        assert (on_b["event"], on_b["node"]) == ("alert.raised", "node-a")
        assert on_b["data"] == on_a["data"] and on_b["seq"] != 0
        sub_b.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            sub_b.recv()  # and nothing more: b's alerter did not raise it again
    with SyncBudgetClient(b.socket) as cb:
        assert len([al for al in cb.alerts_list() if al.budget == "closed"]) == 1


def test_a_topic_followed_later_starts_from_then_and_events_flow_again_after_the_database_restarts(make_daemon):
    from conftest import RawConn
    from postgres import PostgresServer

    server = PostgresServer().start()
    try:
        a, b, c = nodes(make_daemon, server.create_database("events"))
        with RawConn(a.socket) as on_a, RawConn(c.socket) as on_c, SyncBudgetClient(b.socket) as cb:
            on_a.sock.settimeout(1.0)
            on_c.sock.settimeout(1.0)
            assert on_a.call({"op": "subscribe", "id": 1, "topics": ["alert"]})["ok"]
            assert on_c.call({"op": "subscribe", "id": 1, "topics": ["usage"]})["ok"]
            n = 0
            while True:  # until c's subscription is known to b
                n += 1
                record(cb, f"early-{n}")
                try:
                    if on_c.recv()["node"] == "node-b":
                        break
                except TimeoutError:
                    assert n < 20, b.log.read_text()[-2000:]
            for i in range(30):
                record(cb, f"shipped-{i}")  # shipped for c, while a follows alerts only
            time.sleep(1.0)
            with RawConn(a.socket) as later:
                later.sock.settimeout(1.5)
                assert later.call({"op": "subscribe", "id": 2, "topics": ["usage"]})["ok"]
                with pytest.raises(TimeoutError):
                    later.recv()  # none of the 30 earlier ones comes as new
            # the database restarts: every node takes its name back, and events flow again
            server.stop()
            time.sleep(1.0)
            server.start()
            deadline = time.monotonic() + 30
            got = None
            while got is None:
                assert time.monotonic() < deadline, c.log.read_text()[-3000:]
                try:
                    made = record(cb, f"after-{time.monotonic()}")
                except BudgetError:
                    time.sleep(0.2)
                    continue
                try:
                    while (event := on_c.recv())["event"] != "usage.recorded" or \
                            event["data"]["record_id"] != made.record_id:
                        pass
                    got = event
                except TimeoutError:
                    pass
            assert got["node"] == "node-b"
        deadline = time.monotonic() + 2  # within a few sync intervals, writing or not
        while True:
            status = json.loads(run_cli("fleet", "status", "--json", socket=a.socket).stdout)
            if all(n["serving"] for n in status["nodes"]):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        for d in (a, b, c):
            assert "Traceback" not in d.log.read_text() and "crashed" not in d.log.read_text(), d.log.read_text()[-3000:]
    finally:
        server.remove()
