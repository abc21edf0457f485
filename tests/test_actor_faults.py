"""An actor that crashes is restarted and what it was doing is not lost nor counted wrong: a daemon with
faults injected into its own code (tests/faults.py), driven through the socket."""

import json
import sqlite3
import time

import pytest

from budgetd.client import SyncBudgetClient
from tests.conftest import Daemon, RawConn


class FaultyDaemon(Daemon):
    def command(self) -> list[str]:
        python, _m, _budgetd, *rest = super().command()
        return [python, "-m", "tests.faults", *rest]


@pytest.fixture
def faulty(tmp_path):
    d = FaultyDaemon(tmp_path, "", name="faulty")
    d.start()
    yield d
    d.stop()


def usage(component: str, tokens: int) -> dict:
    return {"component": component, "model": "gpt-4o", "input_tokens": tokens, "output_tokens": 0}


def test_settlements_for_a_crashed_allocator_do_not_settle_the_new_ones_writes(faulty):
    """A repeat's settlement still in the mailbox when the allocator crashes must not take back the charge of
    a write the restarted allocator made: the hard budget counts every record, and refuses past its limit."""
    with SyncBudgetClient(faulty.socket) as client:
        client.budget_set(name="cap", period="monthly", limit_tokens=300, policy="hard", scope={})
        with RawConn(faulty.socket) as conn:
            assert conn.call({"op": "record", "id": 1, "idempotency_key": "first", "usage": usage("a", 100)})["ok"]
            frames = [{"op": "record", "id": 2, "idempotency_key": "first", "usage": usage("a", 100)},  # a repeat
                      {"op": "record", "id": 3, "usage": usage("crash-allocator", 1)},
                      {"op": "record", "id": 4, "idempotency_key": "y", "usage": usage("a", 100)},
                      {"op": "record", "id": 5, "idempotency_key": "z", "usage": usage("a", 100)}]
            conn.send(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
            answers = {a["id"]: a for a in (conn.recv() for _ in frames)}
        assert answers[2]["ok"] and answers[2]["result"]["duplicate"]
        assert not answers[3]["ok"] and answers[3]["error"]["code"] == "internal"
        assert answers[4]["ok"] and answers[5]["ok"]
        deadline = time.monotonic() + 5
        while [s.spent_tokens for s in client.budget_get("cap").states] != [300]:
            assert time.monotonic() < deadline, client.budget_get("cap").states
            time.sleep(0.05)
        refused = client.reserve(component="a", model="gpt-4o", input_tokens=90, max_output_tokens=0)
        assert refused.action == "deny"
    db = sqlite3.connect(f"file:{faulty.ledger}?mode=ro", uri=True)
    assert db.execute("SELECT sum(input_tokens), count(*) FROM usage").fetchone() == (300, 3)
    db.close()


def test_a_batch_the_ledger_cannot_write_is_answered_at_once_and_charges_nothing(faulty):
    """The writes of the batch that breaks the database are refused (`unavailable`) without waiting for a
    timeout, and so is anything sent behind them the ledger cannot serve (here a budget change, served or
    refused, never left hanging). Their charges are taken back, and once the ledger is reopened writing
    resumes. (tests/test_unit_store.py puts a read and a write in the very batch that breaks.)"""
    with SyncBudgetClient(faulty.socket) as client:
        client.budget_set(name="cap", period="monthly", limit_tokens=1_000, policy="hard", scope={})
        with RawConn(faulty.socket) as conn:
            frames = [{"op": "record", "id": 1, "usage": usage("a", 100)},
                      {"op": "record", "id": 2, "usage": usage("crash-ledger", 100)},
                      {"op": "budget.set", "id": 3, "budget": {"name": "other", "period": "daily",
                                                               "limit_usd": 5.0, "policy": "hard"}},
                      {"op": "record", "id": 4, "usage": usage("a", 100)}]
            started = time.monotonic()
            conn.send(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
            answers = {a["id"]: a for a in (conn.recv() for _ in frames)}
            assert time.monotonic() - started < 5  # not the doors' timeout
        for a in answers.values():
            assert a["ok"] or a["error"]["code"] == "unavailable", a
        assert not answers[2]["ok"]
        written = [i for i in (1, 4) if answers[i]["ok"]]
        deadline = time.monotonic() + 10
        while True:  # the ledger reopens: writes resume
            try:
                client.record(**usage("a", 1))
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        spent = [s.spent_tokens for s in client.budget_get("cap").states]
    db = sqlite3.connect(f"file:{faulty.ledger}?mode=ro", uri=True)
    ledger_sum = db.execute("SELECT sum(input_tokens) FROM usage").fetchone()[0]
    db.close()
    assert spent == [ledger_sum] and ledger_sum == 100 * len(written) + 1
