"""Exactly-once recording across retries, SIGKILL and SIGTERM, with real processes and signals."""

import signal
import socket
import sqlite3
import threading
import time

import pytest

from conftest import RawConn, run_cli

from budgetd.client import BudgetError, SyncBudgetClient


def ledger_keys(daemon) -> dict[str, int]:
    """How many records each idempotency key has in the daemon's ledger itself, on either backend."""
    return dict(daemon.query("SELECT idempotency_key, count(*) FROM usage GROUP BY idempotency_key"))


@pytest.mark.both_ledgers
def test_same_key_same_payload_is_charged_once(daemon):
    with SyncBudgetClient(daemon.socket) as client:
        first = client.record(component="idem", model="gpt-4o", input_tokens=1000, idempotency_key="k-1")
        again = client.record(component="idem", model="gpt-4o", input_tokens=1000, idempotency_key="k-1")
        assert not first.duplicate and again.duplicate
        assert again.record_id == first.record_id and again.cost_usd == first.cost_usd
        totals = client.status().totals
        assert totals.requests == 1 and totals.input_tokens == 1000
        try:
            client.record(component="idem", model="gpt-4o", input_tokens=999, idempotency_key="k-1")
        except BudgetError as exc:
            assert exc.code == "idempotency_conflict" and exc.field == "$.idempotency_key"
        else:
            raise AssertionError("a different payload under the same key must conflict")
        assert client.status().totals.requests == 1


@pytest.mark.both_ledgers
def test_a_repeat_tells_the_budgets_as_they_stand_and_charges_nothing(daemon):
    """A repeated record answers its first record id and cost, and its budgets as they are at the repeat
    (what was recorded since counts, the repeat does not), also after a SIGKILL, when the first answer
    comes back from the ledger."""
    usage = dict(component="idem", model="gpt-4o", input_tokens=1000)
    with SyncBudgetClient(daemon.socket) as client:
        client.budget_set(name="idem-tokens", period="total", limit_tokens=1_000_000, policy="hard",
                          scope={"component": "idem"})
        first = client.record(**usage, idempotency_key="k-1")
        assert [(s.budget, s.spent_tokens) for s in first.budgets] == [("idem-tokens", 1000)]
        client.record(component="idem", model="gpt-4o", input_tokens=500, idempotency_key="k-2")
        again = client.record(**usage, idempotency_key="k-1")
        assert again.duplicate and again.record_id == first.record_id and again.cost_usd == first.cost_usd
        assert [(s.budget, s.spent_tokens) for s in again.budgets] == [("idem-tokens", 1500)]
    daemon.kill()
    daemon.start()
    with SyncBudgetClient(daemon.socket) as client:
        again = client.record(**usage, idempotency_key="k-1")
        assert again.duplicate and again.record_id == first.record_id
        assert [(s.budget, s.spent_tokens) for s in again.budgets] == [("idem-tokens", 1500)]
        assert [s.spent_tokens for s in client.status().budgets if s.budget == "idem-tokens"] == [1500]


@pytest.mark.both_ledgers
def test_same_key_twice_in_one_batch(daemon):
    """Two identical keyed records pipelined together land in one group commit: one is a duplicate."""
    with RawConn(daemon.socket) as c:
        frame = b'{"op": "record", "id": %d, "idempotency_key": "same", "usage": {"component": "b", "model": "gpt-4o"}}\n'
        c.send(frame % 1 + frame % 2)
        answers = [c.recv(), c.recv()]
    assert sorted(a["result"]["duplicate"] for a in answers) == [False, True]
    assert ledger_keys(daemon) == {"same": 1}


def _recorders(sock, n_threads: int, stop: threading.Event):
    acked: list[set[str]] = [set() for _ in range(n_threads)]
    pending: list[str | None] = [None] * n_threads

    def work(t: int) -> None:
        client = SyncBudgetClient(sock, retries=0, timeout=5)
        i = 0
        while not stop.is_set():
            key = f"t{t}-{i}"
            try:
                client.record(component=f"crash{t}", model="gpt-4o", input_tokens=100 + i, idempotency_key=key)
            except (BudgetError, OSError):
                pending[t] = key
                return
            acked[t].add(key)
            i += 1
        client.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    return threads, acked, pending


@pytest.mark.both_ledgers
def test_sigkill_loses_nothing_acknowledged(make_daemon):
    d = make_daemon()
    stop = threading.Event()
    threads, acked, pending = _recorders(d.socket, 8, stop)
    time.sleep(1.0)
    d.kill()
    for th in threads:
        th.join(10)
    stop.set()
    all_acked = set().union(*acked)
    assert len(all_acked) > 50, "the load did not run"

    d.start()
    with SyncBudgetClient(d.socket) as client:
        for t, key in enumerate(pending):
            if key is not None:
                i = int(key.split("-")[1])
                client.record(component=f"crash{t}", model="gpt-4o", input_tokens=100 + i, idempotency_key=key)
        totals = client.status().totals
    keys = ledger_keys(d)
    retried = {k for k in pending if k is not None}
    assert all(keys.get(k) == 1 for k in all_acked), "an acknowledged record is missing or doubled"
    assert all(keys.get(k) == 1 for k in retried), "a retried record is missing or doubled"
    assert set(keys) == all_acked | retried
    assert totals.requests == len(keys)


@pytest.mark.both_ledgers
def test_sigterm_answers_in_flight_and_cleans_up(make_daemon):
    d = make_daemon()
    stop = threading.Event()
    threads, acked, pending = _recorders(d.socket, 4, stop)
    time.sleep(0.5)
    assert d.stop(signal.SIGTERM) == 0
    for th in threads:
        th.join(10)
    assert not d.socket.exists(), "the socket file must be removed on shutdown"
    keys = ledger_keys(d)
    assert all(keys.get(k) == 1 for k in set().union(*acked))
    assert "budgetd stopped" in d.log.read_text()


def test_stale_socket_is_replaced(make_daemon):
    d = make_daemon(start=False)
    d.socket.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(d.socket))
    dead.close()  # the file stays, nobody listens: a crashed daemon's leftover
    assert d.socket.exists()
    d.start()
    assert d.request({"op": "ping", "id": 1})["ok"]
    assert (d.socket.stat().st_mode & 0o777) == 0o600


def test_second_daemon_refuses(make_daemon):
    first = make_daemon(name="first")
    clash = make_daemon(name="clash", start=False)
    clash.socket = first.socket  # same socket, own data dir
    clash.start(wait=False)
    assert clash.proc.wait(30) == 1
    assert "already serving" in clash.log.read_text()
    same_data = make_daemon(name="same-data", start=False)
    same_data.data_dir = first.data_dir
    same_data.start(wait=False)
    assert same_data.proc.wait(30) == 1
    assert "data directory" in same_data.log.read_text()
    assert first.request({"op": "ping", "id": 1})["ok"]


def test_corrupt_or_foreign_ledger_is_refused_untouched(make_daemon):
    for name, content in (("garbage", b"this is not a database at all" * 100), ("foreign", None)):
        d = make_daemon(name=name, start=False)
        d.data_dir.mkdir(parents=True)
        if content is None:
            db = sqlite3.connect(d.ledger)
            db.execute("CREATE TABLE stuff (x)")
            db.commit()
            db.close()
        else:
            d.ledger.write_bytes(content)
        before = d.ledger.read_bytes()
        d.start(wait=False)
        assert d.proc.wait(30) == 1
        log = d.log.read_text()
        assert "Traceback" not in log
        assert "Move it aside" in log, log
        assert d.ledger.read_bytes() == before


def test_unknown_config_key_is_named(make_daemon):
    d = make_daemon("[daemon]\ndurabilty = \"full\"\n", start=False)
    d.start(wait=False)
    assert d.proc.wait(30) == 1
    assert "daemon.durabilty" in d.log.read_text()


def test_ledger_survives_restart(make_daemon):
    d = make_daemon('[daemon]\ndurability = "normal"\n', start=False)
    d.socket = d.dir / "run" / "budgetd.sock"  # a directory the daemon creates: 0700
    d.start()
    assert (d.socket.parent.stat().st_mode & 0o777) == 0o700
    with SyncBudgetClient(d.socket) as client:
        first = client.record(component="r", model="gpt-4o", input_tokens=10)
    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as client:
        second = client.record(component="r", model="gpt-4o", input_tokens=10)
        assert second.record_id == first.record_id + 1
        assert client.status().totals.requests == 2
    result = run_cli("status", socket=d.socket)
    assert "durability=normal" in result.stdout
