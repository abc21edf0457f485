"""Leases: one `reserve` of many calls, admitted by the client itself, exact on hard limits.

Through the real doors: the client library over the socket and over HTTP, raw frames, a SIGKILL of the
daemon with a lease out."""

import datetime as dt
import json
import random
import threading
import time

import anyio
import httpx
import pytest

from budgetd.client import BudgetClient, Estimate, SyncBudgetClient
from conftest import RawConn

pytestmark = pytest.mark.anyio

SHAPE = dict(component="agent", model="gpt-4o", input_tokens=1000, max_output_tokens=500)


def per_call(client: SyncBudgetClient) -> float:
    return client.check(**SHAPE).estimated_cost_usd


def hard_budget(client: SyncBudgetClient, calls: int) -> float:
    """A total hard budget with room for exactly `calls` calls of SHAPE; the price of one."""
    cost = per_call(client)
    client.budget_set(name="cap", scope={"component": "agent"}, period="total", limit_usd=round(cost * calls, 9),
                      policy="hard")
    return cost


def state(client: SyncBudgetClient):
    (s,) = client.budget_get("cap").states
    return s


def test_a_lease_holds_only_what_fits_and_its_calls_are_admitted_without_the_daemon(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 100)
        lease = c.lease(**SHAPE, calls=1000)
        assert lease.decision.action == "allow"
        ids = lease.decision.reservation_ids
        assert len(ids) == 100 == len(set(ids)) and lease.decision.reservation_id == ids[0]
        assert state(c).reserved_usd == pytest.approx(100 * cost)
        daemon.stop()  # admitting needs no daemon
        admitted = [lease.admit() for _ in range(150)]
        assert admitted[:100] == ids and admitted[100:] == [None] * 50
        assert lease.remaining == 0


def test_admitted_calls_commit_like_reservations_and_unused_holds_go_back(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 10)
        lease = c.lease(**SHAPE, calls=10)
        first, second = lease.admit(), lease.admit()
        recorded = c.commit(first, input_tokens=800, output_tokens=200)  # labels come from the lease
        assert recorded.cost_usd < cost
        assert c.lease_return(lease) == 8 and lease.admit() is None
        s = state(c)
        assert s.spent_usd == pytest.approx(recorded.cost_usd)
        assert s.reserved_usd == pytest.approx(cost)  # the admitted, uncommitted call is still held
        assert c.release(second) is True
        assert state(c).reserved_usd == 0
        assert c.lease_return(lease) == 0  # nothing left to give back: no request at all


def test_a_lease_admits_only_calls_its_holds_cover(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        lease = c.lease(**SHAPE, calls=5)
        assert lease.admit(input_tokens=1001) is None
        assert lease.admit(max_output_tokens=501) is None
        assert lease.admit(model="gpt-4o-mini") is None
        assert lease.admit(component="other") is None
        assert lease.admit(cache_read_tokens=500) is None  # cached input is priced otherwise: not covered
        assert lease.admit(Estimate(**{**SHAPE, "input_tokens": 10, "max_output_tokens": 1})) is not None
        assert lease.remaining == 4


def test_a_denied_lease_admits_nothing_and_says_why(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        hard_budget(c, 1)
        c.record(**{k: v for k, v in SHAPE.items() if k != "max_output_tokens"}, output_tokens=500)
        lease = c.lease(**SHAPE, calls=10)
        assert lease.decision.action == "deny" and not lease.decision.allowed
        assert lease.decision.reasons and lease.decision.reservation_ids == []
        assert lease.admit() is None and c.lease_return(lease) == 0


async def test_many_leases_at_once_never_admit_more_than_the_hard_limit(daemon):
    """1,000 calls wanted through 50 leases on 5 connections at once, on a budget with room for 100: exactly
    100 admitted, and spent plus held never above the limit while it runs."""
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 100)
        limit = state(c).limit_usd
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        with SyncBudgetClient(daemon.socket) as c:
            while not stop.is_set():
                s = state(c)
                samples.append(s.spent_usd + s.reserved_usd)

    sampler = threading.Thread(target=sample)
    sampler.start()
    admitted: list[str] = []

    async def worker(n: int) -> None:
        async with BudgetClient(daemon.socket) as client:
            for _ in range(10):
                lease = await client.lease(**SHAPE, calls=20, idempotency_key=f"lease-{n}-{random.random()}")
                mine = []
                while (rid := lease.admit()) is not None:
                    mine.append(rid)
                admitted.extend(mine)
                for rid in mine:
                    await client.commit(rid, input_tokens=1000, output_tokens=500)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(worker, n)
    finally:
        stop.set()
        sampler.join()
    assert len(admitted) == 100 == len(set(admitted))
    with SyncBudgetClient(daemon.socket) as c:
        s = state(c)
        assert s.spent_usd == pytest.approx(100 * cost) and s.reserved_usd == 0
    assert samples and max(samples) <= limit + 1e-9


def test_a_lease_survives_a_sigkill_of_the_daemon(daemon):
    """Its holds are durable: after a SIGKILL and a restart they still count, and still commit."""
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 30)
        lease = c.lease(**SHAPE, calls=20)
        first = lease.admit()
    daemon.kill()
    daemon.start()
    with SyncBudgetClient(daemon.socket) as c:
        assert state(c).reserved_usd == pytest.approx(20 * cost)
        assert len(c.lease(**SHAPE, calls=20).decision.reservation_ids) == 10  # only the rest was free
        c.commit(first, input_tokens=1000, output_tokens=500)
        assert c.lease_return(lease) == 19
        s = state(c)
        assert s.spent_usd == pytest.approx(cost) and s.reserved_usd == pytest.approx(10 * cost)


def test_the_same_lease_again_answers_the_first_holds(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 100)
        one = c.lease(**SHAPE, calls=7, idempotency_key="lease-once")
        again = c.lease(**SHAPE, calls=7, idempotency_key="lease-once")
        assert again.decision.duplicate and again.decision.reservation_ids == one.decision.reservation_ids
        assert state(c).reserved_usd == pytest.approx(7 * cost)
        with pytest.raises(Exception, match="different request"):
            c.lease(**SHAPE, calls=8, idempotency_key="lease-once")


def test_leases_over_http_and_bad_input_on_both_doors(make_daemon):
    d = make_daemon(http=True)
    estimate = {"component": "agent", "model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500}
    with httpx.Client(base_url=d.url) as http:
        r = http.post("/api/v1/reservations", json={"estimate": estimate, "calls": 3})
        assert r.status_code == 200, r.text
        ids = r.json()["reservation_ids"]
        assert len(ids) == 3
        r = http.post("/api/v1/reservations/release", json={"reservation_ids": ids[1:]})
        assert r.status_code == 200 and r.json() == {"released": True, "count": 2}
        for body, field in [({"estimate": estimate, "calls": 0}, "$.calls"),
                            ({"estimate": estimate, "calls": 1001}, "$.calls")]:
            r = http.post("/api/v1/reservations", json=body)
            assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text
        r = http.post("/api/v1/reservations/release", json={})
        assert r.status_code == 400 and "reservation_id" in r.json()["error"]["message"]
        r = http.post("/api/v1/reservations/release", json={"reservation_ids": ids, "reservation_id": ids[0]})
        assert r.status_code == 400
        r = http.post("/api/v1/reservations/release", json={"reservation_ids": ["x"] * 1001})
        assert r.status_code == 400 and r.json()["error"]["field"] == "$.reservation_ids"
    with RawConn(d.socket) as raw:
        answer = raw.call({"op": "release", "id": 1})
        assert answer["error"]["code"] == "invalid" and "reservation_ids" in answer["error"]["message"]
        answer = raw.call({"op": "reserve", "id": 2, "estimate": estimate, "calls": -1})
        assert answer["error"]["field"] == "$.calls"
        answer = raw.call({"op": "release", "id": 3, "reservation_ids": [ids[0], "r-unknown"]})
        assert answer["result"] == {"released": True, "count": 1}
        assert raw.call({"op": "ping", "id": 4})["ok"]


def test_a_reserve_repeated_with_its_key_answers_its_first_holds_even_when_they_took_all_the_room(daemon):
    """The room is gone because of the first reserve itself (its answer was lost): the repeat must not be
    denied, nor orphan the first holds; for one call as for many."""
    with SyncBudgetClient(daemon.socket) as c:
        cost = hard_budget(c, 10)
    with RawConn(daemon.socket) as raw:
        for calls, key in ((10, "lease-K"), (1, "single-K")):
            frame = {"op": "reserve", "id": 1, "estimate": SHAPE, "calls": calls, "ttl_s": 300,
                     "idempotency_key": key}
            first = raw.call(frame)["result"]
            again = raw.call(frame)["result"]
            assert first["allowed"] and again["allowed"] and again["duplicate"], (first, again)
            assert again["reservation_id"] == first["reservation_id"]
            assert again["reservation_ids"] == first["reservation_ids"]
            if calls == 10:  # room for the single reserve
                raw.call({"op": "release", "id": 2, "reservation_ids": first["reservation_ids"][:1]})
    with SyncBudgetClient(daemon.socket) as c:
        assert state(c).reserved_usd == pytest.approx(10 * cost)  # nine of the lease and the single one
        # A client whose first answer was lost gets nothing to admit from the repeat, and gives the holds back.
        retry = c.lease(**SHAPE, calls=10, idempotency_key="lease-K")
        assert retry.decision.duplicate and retry.admit() is None
        assert c.lease_return(retry) == 9
        assert state(c).reserved_usd == pytest.approx(cost)


def test_a_lease_repeated_in_one_client_admits_nothing_and_takes_nothing_from_the_first(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        hard_budget(c, 10)
        first = c.lease(**SHAPE, calls=5, ttl_s=6, idempotency_key="lease-A")
        again = c.lease(**SHAPE, calls=5, ttl_s=6, idempotency_key="lease-A")
        assert again.decision.duplicate and again.remaining == 0 and again.admit() is None
        assert c.lease_return(again) == 0 and first.remaining == 5
        time.sleep(5.5)
        assert first.admit() is None  # past the time it may admit in (the last tenth of its ttl)
        with pytest.raises(TypeError, match="ttl_s"):
            c.lease(**SHAPE, calls=5, ttl_s=None)  # refused before anything is held


def test_open_holds_follow_their_budget_into_the_next_window(make_daemon):
    """A lease taken in the last seconds of an hour still holds in the next hour's window of an hourly
    budget: the next hour's first lease gets only what is left."""
    d = make_daemon(clock="2026-12-01T10:59:50Z")
    with SyncBudgetClient(d.socket) as c:
        cost = per_call(c)
        c.budget_set(name="cap", scope={"component": "agent"}, period="hourly", limit_usd=round(cost * 5, 9),
                     policy="hard")
        lease = c.lease(**SHAPE, calls=5, ttl_s=120)
        assert len(lease.decision.reservation_ids) == 5
        assert lease.decision.budgets[0].window_start.hour == 10  # taken in the hour before
        while d.now() < dt.datetime(2026, 12, 1, 11, 0, 1, tzinfo=dt.timezone.utc):
            time.sleep(0.2)
        s = state(c)
        assert s.window_start.hour == 11 and s.reserved_usd == pytest.approx(5 * cost)
        assert c.lease(**SHAPE, calls=5).decision.action == "deny"
        for rid in [lease.admit() for _ in range(5)]:
            c.commit(rid, input_tokens=1000, output_tokens=500)
        s = state(c)
        assert s.spent_usd == pytest.approx(5 * cost) and s.reserved_usd == 0


def test_a_budget_set_while_holds_are_open_counts_them(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        cost = per_call(c)
        lease = c.lease(**SHAPE, calls=20)
        hard_budget(c, 5)
        assert state(c).reserved_usd == pytest.approx(20 * cost)
        assert c.lease(**SHAPE, calls=5).decision.action == "deny"
        assert c.lease_return(lease) == 20
        assert state(c).reserved_usd == 0
        assert len(c.lease(**SHAPE, calls=5).decision.reservation_ids) == 5


def test_only_an_allow_leases_more_than_one_call(daemon):
    """A critical call past a hard limit, or one a soft budget would downgrade, holds one call as a reserve
    does, however many were asked for."""
    with SyncBudgetClient(daemon.socket) as c:
        hard_budget(c, 1)
        c.budget_set(name="cap", scope={"component": "agent"}, period="total",
                     limit_usd=c.budget_get("cap").budget.limit_usd, policy="hard", critical_bypass=True)
        c.record(component="agent", model="gpt-4o", input_tokens=1000, output_tokens=500)
        critical = c.lease(**SHAPE, priority=10, calls=50)
        assert critical.decision.action == "warn" and len(critical.decision.reservation_ids) == 1


def test_a_commit_after_its_lease_expired_is_still_recorded(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        short = c.lease(**SHAPE, calls=2, ttl_s=3.0)
        rid = short.admit()
        assert rid is not None
        time.sleep(3.5)
        recorded = c.commit(rid, input_tokens=10, output_tokens=10)  # no hold now: recorded as plain usage
        assert recorded.record_id and recorded.model == "gpt-4o"


def test_a_lease_is_remembered_once_for_all_its_holds():
    from budgetd.client._ops import Reservations
    from budgetd.model import Decision, UsagePatch

    memory = Reservations()
    ids = [f"r-abc.{n}" for n in range(1000)]
    memory.remember(Decision(allowed=True, action="allow", estimated_cost_usd=0.1, estimated_tokens=1,
                             reservation_id=ids[0], reservation_ids=ids), Estimate(**SHAPE))
    assert len(memory._estimates) == 1
    assert memory.complete(ids[999], UsagePatch(input_tokens=1, output_tokens=1)).component == "agent"


def test_a_keyed_denial_repeated_before_it_settled_answers_the_same_denial(daemon):
    """Pipelined: a keyed reserve is denied, room frees up, the same key comes again at once: the answer is
    the first denial (not a new hold stored under the key)."""
    with SyncBudgetClient(daemon.socket) as c:
        hard_budget(c, 1)
        taken = c.reserve(**SHAPE).reservation_id
    frame = {"op": "reserve", "id": 1, "estimate": SHAPE, "idempotency_key": "deny-K"}
    lines = [dict(frame, id=1), {"op": "release", "id": 2, "reservation_id": taken}, dict(frame, id=3)]
    with RawConn(daemon.socket) as raw:
        raw.send(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        answers = {a["id"]: a for a in (raw.recv() for _ in lines)}
        assert answers[1]["result"]["action"] == "deny" and not answers[1]["result"]["duplicate"]
        assert answers[3]["result"]["action"] == "deny" and answers[3]["result"]["duplicate"], answers[3]
        assert raw.call(dict(frame, id=4))["result"]["duplicate"]
        conflict = raw.call(dict(frame, id=5, estimate=dict(SHAPE, input_tokens=7)))
        assert conflict["error"]["code"] == "idempotency_conflict"
    with SyncBudgetClient(daemon.socket) as c:
        assert state(c).reserved_usd == 0


def test_a_keyed_reserve_repeated_when_the_hold_caps_are_full_answers_its_first_holds(make_daemon):
    d = make_daemon("[admission]\nmax_holds_per_component = 3\n")
    frame = {"op": "reserve", "id": 1, "estimate": SHAPE, "calls": 3, "ttl_s": 60, "idempotency_key": "cap-K"}
    with RawConn(d.socket) as raw:
        first = raw.call(frame)["result"]
        assert len(first["reservation_ids"]) == 3
        again = raw.call(frame)
        assert again["result"]["duplicate"] and again["result"]["reservation_ids"] == first["reservation_ids"]
        other = raw.call(dict(frame, idempotency_key="cap-L"))
        assert other["error"]["code"] == "busy"
        assert raw.call(dict(frame, estimate=dict(SHAPE, input_tokens=7)))["error"]["code"] == \
            "idempotency_conflict"


def test_the_allocator_reads_one_instant_per_message():
    from budgetd.clock import Clock, HeldClock

    clock = HeldClock(Clock())
    clock.held = 1_000_000
    assert clock.now_us() == 1_000_000 and clock.now().year == 1970
    clock.held = None
    assert clock.now_us() > 1_000_000
