"""Promises under fire: single odd inputs and faults, each once broke a hard limit, the ledger or the
daemon. Every case goes through the real doors of a real daemon, and ends with the daemon serving."""

import json
import os
import signal
import socket
import sqlite3
import time

import httpx
import pytest

from budgetd.client import BudgetError, SyncBudgetClient
from budgetd.protocol import BudgetGet, Status
from conftest import RawConn, run_cli

DEEP = 1000


def deep_frames() -> list[bytes]:
    nest = "[" * DEEP + "]" * DEEP
    return [
        f'{{"op": "ping", "id": {nest}}}'.encode(),
        f'{{"op": "ping", "id": 1, "x": {nest}}}'.encode(),
        f'{{"op": "record", "id": 2, "usage": {{"component": "a", "model": "b", "metadata": {{"k": {nest}}}}}}}'
        .encode(),
        ("{" + '"a":{' * DEEP + "}" * DEEP + "}").encode(),
    ]


def ping_ms(d) -> float:
    with RawConn(d.socket) as conn:
        started = time.perf_counter()
        assert conn.call({"op": "ping", "id": 9})["ok"]
        return (time.perf_counter() - started) * 1e3


def test_deeply_nested_frames_are_bad_frames_on_both_doors(make_daemon):
    d = make_daemon(http=True)
    with RawConn(d.socket) as conn:
        for _ in range(250):
            for frame in deep_frames():
                conn.send(frame + b"\n")
                answer = conn.recv()
                assert answer["ok"] is False and answer["error"]["code"] == "bad_frame", answer
        assert conn.call({"op": "ping", "id": 1})["ok"]  # the same connection still serves
    http = httpx.Client(base_url=d.url + "/api/v1", timeout=30)
    for frame in deep_frames():
        for path in ("/rpc", "/usage", "/check"):
            r = http.post(path, content=frame, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", (path, r.text[:200])
    assert min(ping_ms(d) for _ in range(5)) < 10
    assert d.proc.poll() is None and d.socket.exists()


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z",
                                "2999-01-01T00:00:00Z"])
def test_an_odd_timestamp_is_refused_alone_and_every_hold_stays(make_daemon, ts):
    d = make_daemon()
    with SyncBudgetClient(d.socket, retries=0) as c:
        c.budget_set(name="full", period="daily", limit_usd=0.75, policy="hard")
        hold = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=75_000)  # $0.75
        assert hold.allowed and hold.estimated_cost_usd == 0.75
    with RawConn(d.socket) as conn:
        good = {"component": "b", "model": "gpt-4o-mini", "input_tokens": 1}
        frames = [{"op": "record", "id": i, "usage": {**good, "ts": ts}} for i in range(20)]
        frames += [{"op": "record", "id": 100 + i, "usage": good} for i in range(100)]
        conn.send(b"".join(json.dumps(f).encode() + b"\n" for f in frames))  # one batch, poison first
        answers = {a["id"]: a for a in (conn.recv() for _ in frames)}
    assert all(answers[i]["error"]["code"] == "invalid" and answers[i]["error"]["field"] == "$.usage.ts"
               for i in range(20))
    assert all(answers[100 + i]["ok"] for i in range(100))
    with SyncBudgetClient(d.socket) as c:
        assert not c.check(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000).allowed
        state = c.budget_get("full").states[0]
        assert state.reserved_usd == 0.75
        assert not any(a.restarts for a in c.status().daemon.actors)


def test_costs_and_counts_are_bounded_so_sums_never_overflow(make_daemon):
    d = make_daemon()
    with RawConn(d.socket) as conn:
        for field, value in (("cost_usd", 1e9), ("input_tokens", 10**12), ("cache_read_tokens", 2**63)):
            answer = conn.call({"op": "record", "id": 1, "usage": {"component": "rich", "model": "gpt-4o",
                                                                   field: value}})
            assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == f"$.usage.{field}"
    with SyncBudgetClient(d.socket, retries=0) as c:
        for _ in range(10):
            c.record(component="rich", model="gpt-4o", cost_usd=1e4, input_tokens=10**9, output_tokens=10**9)
        total = c.status().totals
    d.stop()
    d.start()  # the sums of a full ledger still read
    with SyncBudgetClient(d.socket) as c:
        assert c.status().totals == total and total.cost_usd == 1e5
        assert c.report(["component"]).totals.cost_usd == 1e5


def test_the_ledgers_sums_never_pass_64_bits(make_daemon):
    """The per-record bounds make an overflow take a million records; the ledger refuses the one that
    would overflow a total, alone."""
    d = make_daemon()
    d.stop()
    db = sqlite3.connect(d.ledger)  # as if 922,000 records of $10,000 had been written
    db.execute("INSERT INTO rollup_hour (hour, component, model, provider, tier, task_type, requests, input_tokens, "
               "output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos) "
               "VALUES (0, 'x', 'y', '', '', '', 1, 0, 0, 0, 0, ?)", (2**63 - 10**13 // 2,))
    db.commit()
    db.close()
    d.start()
    with SyncBudgetClient(d.socket, retries=0) as c:
        with pytest.raises(BudgetError) as info:
            c.record(component="rich", model="gpt-4o", cost_usd=1e4)
        assert info.value.code == "invalid" and "64-bit" in info.value.message
        assert c.record(component="poor", model="gpt-4o-mini", input_tokens=1).record_id


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_restart_never_doubles_a_hard_limit(make_daemon, how):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="full", period="daily", limit_usd=0.75, policy="hard", scope={"component": "a"})
        c.budget_set(name="brief", period="daily", limit_usd=1, policy="hard", scope={"component": "z"})
        hold = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=75_000, ttl_s=600)
        assert hold.allowed
        assert c.reserve(component="z", model="gpt-4o", input_tokens=0, max_output_tokens=100, ttl_s=1).allowed
        assert c.budget_get("brief").states[0].reserved_usd == 0.001
    d.stop(how)
    time.sleep(1.2)  # the brief hold's time passes while the daemon is down
    d.start()
    with SyncBudgetClient(d.socket) as c:
        again = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000)
        assert not again.allowed, "the hold was forgotten by the restart"
        assert c.budget_get("full").states[0].reserved_usd == 0.75
        assert c.budget_get("brief").states[0].reserved_usd == 0  # expired while down: not rebuilt
        assert c.release(hold.reservation_id) is True
        assert c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000).allowed
    d.stop(signal.SIGKILL)
    d.start()
    with SyncBudgetClient(d.socket) as c:  # the release was durable too, and so is the new hold
        assert c.release(hold.reservation_id) is False
        assert c.budget_get("full").states[0].reserved_usd == 0.01


def test_a_duplicate_reserve_opens_nothing_more(make_daemon):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="b", period="daily", limit_usd=1, policy="hard")
        first = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000,
                          idempotency_key="k-1")
        again = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000,
                          idempotency_key="k-1")
        assert again.duplicate and again.reservation_id == first.reservation_id
        assert c.budget_get("b").states[0].reserved_usd == 0.01
    d.stop(signal.SIGKILL)
    d.start()
    with SyncBudgetClient(d.socket) as c:
        after = c.reserve(component="a", model="gpt-4o", input_tokens=0, max_output_tokens=1000,
                          idempotency_key="k-1")
        assert after.duplicate and after.reservation_id == first.reservation_id
        assert c.budget_get("b").states[0].reserved_usd == 0.01


@pytest.mark.parametrize("content,what", [(b"", "empty (0 bytes)"), (None, "an empty SQLite file")])
def test_an_empty_ledger_file_is_refused(make_daemon, content, what):
    d = make_daemon(start=False)
    d.data_dir.mkdir(parents=True)
    if content is None:
        db = sqlite3.connect(d.ledger)  # a valid SQLite file with nothing in it
        db.executescript("CREATE TABLE t (x); DROP TABLE t;")
        db.close()
        assert d.ledger.stat().st_size > 0
    else:
        d.ledger.write_bytes(content)
    d.start(wait=False)
    assert d.proc.wait(10) == 1
    log = d.log.read_text()
    assert what in log and "budget restore" in log and "Traceback" not in log
    assert not d.socket.exists()


def test_a_new_ledger_is_made_whole_or_not_at_all(make_daemon):
    d = make_daemon(start=False)
    d.data_dir.mkdir(parents=True)
    (d.data_dir / "ledger.db.new").write_bytes(b"left over by a crash while a ledger was made")
    d.start()
    assert not (d.data_dir / "ledger.db.new").exists()
    assert d.request({"op": "ping", "id": 1})["ok"]


def test_reads_refuse_odd_cursors_times_and_ids_and_keep_serving(make_daemon):
    d = make_daemon(http=True)
    http = httpx.Client(base_url=d.url + "/api/v1", timeout=30)
    for query in ("after=" + "9" * 40, "since=0001-01-01T00:00:00%2B14:00", "until=9999-12-31T23:59:59Z"):
        r = http.get("/usage?" + query)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid", (query, r.text)
    r = http.get("/report?since=0001-01-01T00:00:00%2B14:00")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    r = http.post("/alerts/" + "9" * 30 + "/ack")
    assert r.status_code in (400, 404) and r.json()["error"]["code"] in ("invalid", "not_found"), r.text
    with RawConn(d.socket) as conn:
        answer = conn.call({"op": "alerts.ack", "id": 1, "alert_id": 2**70})
        assert answer["error"]["code"] == "invalid"
    with SyncBudgetClient(d.socket) as c:
        assert not any(a.restarts for a in c.status().daemon.actors)
        assert c.usage_list(limit=1).records == []


def test_a_backup_never_lands_in_the_data_directory_or_over_a_file(make_daemon, tmp_path):
    d = make_daemon()
    lock = d.data_dir / "budgetd.lock"
    for path in (lock, d.ledger, d.data_dir / "anything.db"):
        r = run_cli("backup", str(path), socket=d.socket)
        assert r.returncode == 1 and "data directory" in r.stderr, r.stderr
    assert lock.exists() and lock.stat().st_size == 0
    existing = tmp_path / "kept.db"
    existing.write_text("precious")
    r = run_cli("backup", str(existing), socket=d.socket)
    assert r.returncode == 1 and "exists" in r.stderr and "--force" in r.stderr
    assert existing.read_text() == "precious"
    r = run_cli("backup", "--force", str(existing), socket=d.socket)
    assert r.returncode == 0, r.stderr
    assert sqlite3.connect(existing).execute("SELECT count(*) FROM usage").fetchone()[0] == 0


def test_a_token_closes_only_its_components_reservations(make_daemon):
    d = make_daemon('[[http.tokens]]\ntoken = "tok-rhetor"\nrole = "write"\ncomponents = ["rhetor"]\n'
                    '[[http.tokens]]\ntoken = "tok-apollo"\nrole = "write"\ncomponents = ["apollo"]\n', http=True)
    apollo = httpx.Client(base_url=d.url + "/api/v1", headers={"Authorization": "Bearer tok-apollo"})
    rhetor = httpx.Client(base_url=d.url + "/api/v1", headers={"Authorization": "Bearer tok-rhetor"})
    hold = apollo.post("/reservations", json={"estimate": {"component": "apollo", "model": "gpt-4o",
                                                           "input_tokens": 100}}).json()
    rid = hold["reservation_id"]
    stolen = rhetor.post(f"/reservations/{rid}/commit", json={"input_tokens": 500_000})
    assert stolen.status_code == 403 and stolen.json()["error"]["code"] == "forbidden"
    assert rhetor.delete(f"/reservations/{rid}").status_code == 403
    done = apollo.post(f"/reservations/{rid}/commit", json={"input_tokens": 100})
    assert done.status_code == 200 and done.json()["cost_usd"] == 0.00025
    with SyncBudgetClient(d.socket) as c:
        assert [(r.component, r.input_tokens) for r in c.usage_list().records] == [("apollo", 100)]


def test_open_holds_are_bounded(make_daemon):
    d = make_daemon('[admission]\nmax_open_holds = 5\nmax_holds_per_component = 3\n')
    with SyncBudgetClient(d.socket, retries=0) as c:
        held = [c.reserve(component="a", model="gpt-4o-mini", input_tokens=1) for _ in range(3)]
        with pytest.raises(BudgetError) as info:
            c.reserve(component="a", model="gpt-4o-mini", input_tokens=1)
        assert info.value.code == "busy" and "max_holds_per_component" in info.value.message
        held += [c.reserve(component="b", model="gpt-4o-mini", input_tokens=1) for _ in range(2)]
        with pytest.raises(BudgetError) as info:
            c.reserve(component="c", model="gpt-4o-mini", input_tokens=1)
        assert info.value.code == "busy" and "max_open_holds" in info.value.message
        assert c.release(held[0].reservation_id)
        assert c.reserve(component="c", model="gpt-4o-mini", input_tokens=1).allowed


def test_ready_needs_a_token_when_tokens_are_configured(make_daemon):
    d = make_daemon('[[http.tokens]]\ntoken = "tok-read"\nrole = "read"\n', http=True)
    assert httpx.get(d.url + "/health").status_code == 200
    assert httpx.get(d.url + "/ready").status_code == 401
    assert httpx.get(d.url + "/ready", headers={"Authorization": "Bearer tok-read"}).json()["ready"] is True


def test_closing_many_connections_at_once_logs_no_storm(make_daemon):
    d = make_daemon()
    before = len(d.log.read_text().splitlines())
    socks = []
    for _ in range(2000):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.socket))
        socks.append(s)
    with RawConn(d.socket) as conn:
        assert conn.call({"op": "ping", "id": 1})["ok"]  # every connection is accepted by now
    for s in socks:
        s.close()
    time.sleep(1)  # a storm, if any, is logged at once
    assert len(d.log.read_text().splitlines()) - before < 50
    assert d.request({"op": "ping", "id": 2})["ok"]


def test_a_full_disk_refuses_price_overrides_and_keeps_serving(make_daemon, tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = os.system(f"mount -t tmpfs -o size=2m tmpfs {mount} 2>/dev/null")
    if made != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        d = make_daemon(start=False)
        d.data_dir = mount / "data"
        d.start()
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # take every free byte
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        with SyncBudgetClient(d.socket, retries=0) as c:
            refused = 0
            for i in range(20):
                try:
                    c.prices_set(model=f"house-{i}", input_per_mtok=1, output_per_mtok=2)
                except BudgetError as exc:
                    assert exc.code == "unavailable" and "full" in exc.message
                    refused += 1
            assert refused
            assert not any(a.restarts for a in c.status().daemon.actors)
            filler.unlink()
            assert c.prices_set(model="house-after", input_per_mtok=1, output_per_mtok=2).price.model
        d.stop()
    finally:
        os.system(f"umount -l {mount}")


def test_counters_per_budget_are_bounded_and_big_states_are_paged(make_daemon):
    d = make_daemon('[admission]\nmax_counters_per_budget = 50\n')
    with SyncBudgetClient(d.socket, retries=0) as c:
        c.budget_set(name="per-ctx", period="daily", limit_tokens=10**9, policy="warn", scope={"context_id": "*"})
        for i in range(50):
            c.record(component="a", model="gpt-4o-mini", input_tokens=i + 1, context_id=f"s{i:02d}")
        with pytest.raises(BudgetError) as info:
            c.record(component="a", model="gpt-4o-mini", input_tokens=1, context_id="one-too-many")
        assert info.value.code == "busy" and "max_counters_per_budget" in info.value.message
        assert c.record(component="a", model="gpt-4o-mini", input_tokens=1, context_id="s00").record_id  # known key
        status = c.status()  # the most used keys of each budget, the rest counted
        assert len([s for s in status.budgets if s.budget == "per-ctx"]) == 50 and status.states_omitted == 0
        small = c.call(Status(states_per_budget=5))
        assert [s.key["context_id"] for s in small.budgets] == ["s45", "s46", "s47", "s48", "s49"]
        assert small.states_omitted == 45 and len(small.forecasts) == 5
        pages, after = [], None
        while True:
            page = c.call(BudgetGet(name="per-ctx", limit=20, after=after))
            pages.append([s.key["context_id"] for s in page.states])
            if page.next is None:
                break
            after = page.next
        assert [len(p) for p in pages] == [20, 20, 10] and sum(pages, []) == [f"s{i:02d}" for i in range(50)]
