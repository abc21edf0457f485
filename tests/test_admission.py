"""Budgets and admission through the real socket: atomic holds, policies, windows, restarts."""

import contextlib
import datetime as dt
import json
import random
import time

import anyio
import pytest

from budgetd.client import BudgetClient, BudgetDenied, BudgetError, SyncBudgetClient

# gpt-4o-mini (fixture prices): 1000 input tokens, no output = 1000 x 1.5e-7 = 150,000 nano-dollars
HOLD_NANOS = 150_000
HOLD = dict(component="load", model="gpt-4o-mini", input_tokens=1000, max_output_tokens=0)


def ledger_sum(daemon, where: str = "true", args: tuple = ()) -> tuple[int, int]:
    """Dollars (nanos) and tokens of the daemon's ledger itself, on either backend."""
    return daemon.query(
        "SELECT coalesce(sum(cost_nanos), 0), coalesce(sum(input_tokens + output_tokens + cache_read_tokens"
        f" + cache_write_tokens), 0) FROM usage WHERE {where}", args)[0]


def nanos(usd: float) -> int:
    return round(usd * 1e9)


async def _hammer_reserves(daemon, total: int, connections: int, **estimate) -> list:
    """`total` concurrent reserves spread over `connections` clients, while a watcher samples status."""
    decisions: list = []
    samples: list = []
    done = anyio.Event()

    async def watch(client: BudgetClient) -> None:
        while not done.is_set():
            samples.append((await client.status()).budgets)
            await anyio.sleep(0)

    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(BudgetClient(daemon.socket))
        clients = [await stack.enter_async_context(BudgetClient(daemon.socket)) for _ in range(connections)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, watcher)

            async def one(c: BudgetClient) -> None:
                decisions.append(await c.reserve(**estimate))

            async with anyio.create_task_group() as reservers:
                for i in range(total):
                    reservers.start_soon(one, clients[i % connections])
            done.set()
    return decisions, samples


@pytest.mark.both_ledgers
@pytest.mark.anyio
async def test_concurrent_reserves_never_overspend_a_hard_dollar_limit(daemon):
    admits = 137
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="cap", period="daily", limit_usd=admits * HOLD_NANOS / 1e9, policy="hard")
    decisions, samples = await _hammer_reserves(daemon, 1000, 25, **HOLD)
    allowed = [d for d in decisions if d.allowed]
    assert len(decisions) == 1000 and len(allowed) == admits
    assert all(d.reasons for d in decisions if not d.allowed)
    assert samples, "the watcher took no samples"
    for states in samples:
        for s in states:
            assert nanos(s.spent_usd) + nanos(s.reserved_usd) <= admits * HOLD_NANOS

    # commit half (with smaller actual usage), release the rest: counters equal the ledger's sums
    async with BudgetClient(daemon.socket) as c:
        for i, d in enumerate(allowed):
            if i % 2:
                await c.commit(d.reservation_id, input_tokens=600, output_tokens=10)
            else:
                assert await c.release(d.reservation_id)
        state = (await c.budget_get("cap")).states[0]
    spent, tokens = ledger_sum(daemon)
    assert nanos(state.spent_usd) == spent and state.spent_tokens == tokens
    assert state.reserved_usd == 0 and state.reserved_tokens == 0
    assert spent == (admits // 2) * (600 * 150 + 10 * 600)  # 150 and 600 nano-dollars per token


@pytest.mark.both_ledgers
@pytest.mark.anyio
async def test_token_limit_with_overlapping_budgets_and_mixed_traffic(daemon):
    # a global token budget and a per-component dollar budget; each request needs 1000 tokens
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="tokens", period="total", limit_tokens=60_000, policy="hard")
        c.budget_set(name="per-component", period="daily", limit_usd=20 * HOLD_NANOS / 1e9, policy="hard",
                     scope={"component": "*"})
    components = [f"c{i}" for i in range(5)]
    results: list = []

    async def worker(client: BudgetClient, n: int) -> None:
        rng = random.Random(n)
        for _ in range(30):
            comp = rng.choice(components)
            kind = rng.random()
            est = dict(component=comp, model="gpt-4o-mini", input_tokens=1000, max_output_tokens=0)
            if kind < 0.5:
                d = await client.reserve(**est)
                results.append(("reserve", d.allowed))
                if d.allowed:
                    if rng.random() < 0.5:
                        await client.commit(d.reservation_id, input_tokens=rng.choice([500, 1000, 1500]))
                    else:
                        await client.release(d.reservation_id)
            elif kind < 0.8:
                d = await client.check(**est)
                results.append(("check", d.allowed))
            else:
                await client.record(component=comp, model="gpt-4o-mini", input_tokens=200)

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(BudgetClient(daemon.socket)) for _ in range(10)]
        async with anyio.create_task_group() as tg:
            for n, client in enumerate(clients):
                tg.start_soon(worker, client, n)
    async with BudgetClient(daemon.socket) as c:
        tokens_state = (await c.budget_get("tokens")).states[0]
        per = {s.key["component"]: s for s in (await c.budget_get("per-component")).states}
    spent, tokens = ledger_sum(daemon)
    assert tokens_state.spent_tokens == tokens and nanos(tokens_state.spent_usd) == spent
    assert tokens_state.reserved_tokens == 0
    for comp, state in per.items():
        comp_spent, comp_tokens = ledger_sum(daemon, "component = ?", (comp,))
        assert nanos(state.spent_usd) == comp_spent and state.spent_tokens == comp_tokens
    # holds never pushed past a limit; only commits of more than estimated and plain records may
    assert tokens <= 60_000 + 500 * 150 + 200 * 300


@pytest.mark.both_ledgers
def test_counters_are_rebuilt_from_the_ledger_after_a_restart(make_daemon):
    d = make_daemon("""
[[budgets]]
name = "daily-per-component"
period = "daily"
timezone = "Europe/Berlin"
limit_usd = 10.0
policy = "hard"
scope = { component = "*" }

[[budgets]]
name = "gpt4o-total"
period = "total"
limit_tokens = 100000000
policy = "warn"
scope = { model = "openai/gpt-4o" }
""")
    now = dt.datetime.now(dt.timezone.utc)
    with SyncBudgetClient(d.socket) as c:
        for i in range(40):
            c.record(component=f"c{i % 3}", model="gpt-4o", input_tokens=1000 + i, output_tokens=i)
        c.record(component="c0", model="gpt-4o-mini", input_tokens=5)
        c.record(component="c1", model="gpt-4o", input_tokens=7, ts=now - dt.timedelta(days=3))  # another day
        hold = c.reserve(component="c2", model="gpt-4o", input_tokens=100)
        assert hold.allowed
        before = {(s.budget, tuple(s.key.items())): s for s in c.status().budgets}
    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as c:
        after = {(s.budget, tuple(s.key.items())): s for s in c.status().budgets}
        assert set(after) == set(before)
        for k, s in after.items():
            assert (s.spent_usd, s.spent_tokens) == (before[k].spent_usd, before[k].spent_tokens), k
            assert (s.reserved_usd, s.reserved_tokens) == (before[k].reserved_usd, before[k].reserved_tokens), k
        assert after[("daily-per-component", (("component", "c2"),))].reserved_tokens > 0  # the hold is durable
        total = after[("gpt4o-total", ())]
        spent, tokens = ledger_sum(d, "model = 'gpt-4o'")
        assert total.spent_tokens == tokens and nanos(total.spent_usd) == spent
        # the hold survived the restart: its commit replaces it
        r = c.commit(hold.reservation_id, component="c2", model="gpt-4o", input_tokens=100)
        assert r.record_id and not r.duplicate
        assert all(s.reserved_usd == 0 for s in c.status().budgets)
        with pytest.raises(BudgetError) as info:
            c.commit("r-nonexistent", input_tokens=1)
        assert info.value.code == "unknown_reservation"


def test_window_edges_in_a_zone(make_daemon):
    # A minute before midnight in Berlin (CET) on a November Wednesday: today's last minute has happened,
    # and tomorrow's first record is within the clock skew a record may have.
    d = make_daemon(clock="2026-11-18T22:59:00Z")
    berlin = dt.timezone(dt.timedelta(hours=1))
    today = d.now().astimezone(berlin).replace(hour=0, minute=0, second=0, microsecond=0)
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="berlin-day", period="daily", timezone="Europe/Berlin", limit_tokens=10**9, policy="warn")
        c.budget_set(name="utc-hour", period="hourly", limit_tokens=10**9, policy="warn")
        c.record(component="w", model="gpt-4o", input_tokens=1, ts=today - dt.timedelta(microseconds=1))
        c.record(component="w", model="gpt-4o", input_tokens=10, ts=today)
        c.record(component="w", model="gpt-4o", input_tokens=100, ts=today + dt.timedelta(hours=23, minutes=59))
        c.record(component="w", model="gpt-4o", input_tokens=1000,
                 ts=today + dt.timedelta(days=1))  # tomorrow, Berlin time
        day = c.budget_get("berlin-day").states[0]
        assert day.spent_tokens == 110
        assert day.window_start == today.astimezone(dt.timezone.utc)
        assert day.window_end == (today + dt.timedelta(days=1)).astimezone(dt.timezone.utc)
    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as c:
        assert c.budget_get("berlin-day").states[0].spent_tokens == 110


def test_policies_thresholds_and_suggestions(daemon):
    est = dict(component="p", model="claude-opus-4-5", input_tokens=10_000, max_output_tokens=1000)
    # opus: 10000 x 5e-6 + 1000 x 2.5e-5 = $0.075
    with SyncBudgetClient(daemon.socket) as c:
        c.record(component="p", model="claude-opus-4-5", input_tokens=8_000)  # $0.04 spent
        outcomes = {}
        for policy in ("ignore", "warn", "soft", "hard"):
            c.budget_set(name="only", period="daily", limit_usd=0.1, policy=policy, scope={"component": "p"})
            outcomes[policy] = c.check(**est)
        assert [outcomes[p].action for p in ("ignore", "warn", "soft", "hard")] == ["allow", "warn", "downgrade",
                                                                                  "deny"]
        assert all(outcomes[p].allowed for p in ("ignore", "warn", "soft")) and not outcomes["hard"].allowed
        for p in ("warn", "soft", "hard"):
            assert "budget only" in outcomes[p].reasons[0]
        for p in ("soft", "hard"):
            s = outcomes[p].suggestion
            assert s is not None and s.estimated_cost_usd < 0.06  # fits the $0.06 left
            price = c.prices_get(s.model).price
            opus = c.prices_get("claude-opus-4-5").price
            functional = {"tools", "json", "vision", "reasoning", "audio", "pdf"}
            assert functional & set(opus.capabilities) <= set(price.capabilities)
        state = outcomes["hard"].budgets[0]
        assert state.used_fraction == 0.4 and state.status == "ok"
        c.record(component="p", model="claude-opus-4-5", input_tokens=8_001)  # $0.080005 > 0.8 of the limit
        assert c.budget_get("only").states[0].status == "warning"
        c.record(component="p", model="claude-opus-4-5", input_tokens=4_000)
        assert c.budget_get("only").states[0].status == "exceeded"

        # the most severe action wins across budgets, and every reason is listed
        c.budget_set(name="second", period="monthly", limit_tokens=1, policy="warn")
        both = c.check(**est)
        assert both.action == "deny" and len(both.reasons) == 2 and len(both.budgets) == 2


def test_critical_bypass_only_where_allowed(daemon):
    est = dict(component="crit", model="gpt-4o", input_tokens=1000, max_output_tokens=100)
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="strict", period="daily", limit_usd=0.000001, policy="hard", scope={"component": "crit"})
        assert not c.check(priority=10, **est).allowed
        c.budget_set(name="strict", period="daily", limit_usd=0.000001, policy="hard", scope={"component": "crit"},
                     critical_bypass=True)
        assert not c.check(priority=9, **est).allowed
        bypass = c.reserve(priority=10, **est)
        assert bypass.allowed and bypass.action == "warn" and "bypass" in bypass.reasons[0]
        assert c.release(bypass.reservation_id)


@pytest.mark.both_ledgers
def test_holds_expire_and_idempotent_reserve(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        # a total budget: the hold is seen in the same window even when the test runs across midnight; a ttl
        # that outlasts the steps before its check on a loaded machine
        c.budget_set(name="g", period="total", limit_usd=1.0, policy="hard")
        first = c.reserve(ttl_s=1.5, idempotency_key="res-1", **HOLD)
        again = c.reserve(ttl_s=1.5, idempotency_key="res-1", **HOLD)
        assert again.duplicate and again.reservation_id == first.reservation_id
        with pytest.raises(BudgetError) as info:
            c.reserve(ttl_s=1.5, idempotency_key="res-1", component="load", model="gpt-4o", input_tokens=1)
        assert info.value.code == "idempotency_conflict"
        assert nanos(c.budget_get("g").states[0].reserved_usd) == HOLD_NANOS
        time.sleep(2.8)
        assert c.budget_get("g").states[0].reserved_usd == 0
        assert c.release(first.reservation_id) is False


@pytest.mark.both_ledgers
def test_commit_twice_and_release_after_commit(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="g", period="daily", limit_usd=1.0, policy="hard")
        hold = c.reserve(**HOLD)
        first = c.commit(hold.reservation_id, input_tokens=900, output_tokens=20)
        second = c.commit(hold.reservation_id, input_tokens=900, output_tokens=20)
        assert second.duplicate and second.record_id == first.record_id
        with pytest.raises(BudgetError) as info:
            c.commit(hold.reservation_id, input_tokens=5)
        assert info.value.code == "idempotency_conflict"
        assert c.release(hold.reservation_id) is False
        state = c.budget_get("g").states[0]
        assert state.spent_tokens == 920 and state.reserved_tokens == 0
        # overage is recorded in full, never clamped
        hold = c.reserve(**HOLD)
        big = c.commit(hold.reservation_id, input_tokens=50_000)
        assert big.cost_usd == 50_000 * 150 / 1e9
        assert c.budget_get("g").states[0].spent_tokens == 920 + 50_000


def test_guard_commits_releases_and_refuses(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="g", period="daily", limit_usd=0.001, policy="hard")
        with c.guard(**HOLD) as g:
            assert g.decision.allowed
            g.used(input_tokens=400, output_tokens=100)
        assert g.recorded.cost_usd == (400 * 150 + 100 * 600) / 1e9  # nano-dollars per token: 150 in, 600 out
        with pytest.raises(RuntimeError):
            with c.guard(**HOLD):
                raise RuntimeError("the LLM call failed")
        assert c.budget_get("g").states[0].reserved_usd == 0
        with pytest.raises(BudgetDenied) as info:
            with c.guard(component="load", model="gpt-4o", input_tokens=1_000_000):
                pass
        assert not info.value.decision.allowed


@pytest.mark.anyio
async def test_async_guard(daemon):
    async with BudgetClient(daemon.socket) as c:
        async with c.guard(**HOLD) as g:
            pass  # no usage reported: the estimate is charged
        assert g.recorded.cost_usd == HOLD_NANOS / 1e9
        with pytest.raises(ValueError):
            async with c.guard(**HOLD):
                raise ValueError
        assert (await c.status()).totals.requests == 1


def test_routing_respects_capabilities_context_and_tiers(daemon):
    with SyncBudgetClient(daemon.socket) as c:
        r = c.route(component="r", model="gpt-4o", input_tokens=1000, max_output_tokens=100)
        assert r.choice == "gpt-4o" and r.alternatives[0].why == "the requested model"
        c.budget_set(name="tight", period="daily", limit_usd=0.001, policy="hard", scope={"component": "r"})
        r = c.route(component="r", model="gpt-4o", input_tokens=1000, max_output_tokens=100,
                    need={"capabilities": ["vision"]})
        assert r.choice is not None and r.choice != "gpt-4o" and r.decision.allowed
        chosen = c.prices_get(r.choice).price
        assert "vision" in chosen.capabilities and r.decision.estimated_cost_usd <= 0.001
        fitting = [a for a in r.alternatives if a.fits]
        same_tier = [a for a in fitting if a.tier == "midweight"]
        assert same_tier and fitting[: len(same_tier)] == same_tier  # same tier before lower tiers
        costs = [a.estimated_cost_usd for a in same_tier]
        assert costs == sorted(costs)
        none = c.route(component="r", model="gpt-4o", input_tokens=10_000_000, max_output_tokens=100)
        assert none.choice is None
        lower = c.route(component="x", model="gpt-4o", input_tokens=100, need={"max_tier": "lightweight"})
        assert c.prices_get(lower.choice).price.tier == "lightweight"
        with pytest.raises(BudgetError) as info:
            c.route(component="x", model="gpt-4o", input_tokens=1, candidates=["no-such-model"])
        assert info.value.code == "invalid"


def test_bad_budget_input(daemon):
    from conftest import RawConn

    cases = [
        ({"op": "budget.set", "id": 1, "budget": {"name": "x", "period": "daily", "policy": "hard"}},
         "invalid", "$.budget.limit_usd"),
        ({"op": "budget.set", "id": 1, "budget": {"name": "x", "period": "daily", "policy": "hard",
                                                  "limit_usd": -1}}, "invalid", "$.budget.limit_usd"),
        ({"op": "budget.set", "id": 1, "budget": {"name": "x", "period": "daily", "policy": "hard",
                                                  "limit_usd": 1, "timezone": "Nowhere/City"}},
         "invalid", "$.budget.timezone"),
        ({"op": "budget.set", "id": 1, "budget": {"name": "x", "period": "daily", "policy": "hard",
                                                  "limit_usd": 1, "scope": {"colour": "red"}}},
         "invalid", "$.budget.scope.colour"),
        ({"op": "budget.set", "id": 1, "budget": {"name": "Bad Name", "period": "daily", "policy": "warn",
                                                  "limit_usd": 1}}, "invalid", "$.budget.name"),
        ({"op": "budget.set", "id": 1, "budget": {"name": "x", "period": "yearly", "policy": "warn",
                                                  "limit_usd": 1}}, "invalid", "$.budget.period"),
        ({"op": "budget.get", "id": 1, "name": "missing"}, "not_found", "$.name"),
        ({"op": "commit", "id": 1, "reservation_id": "garbage", "usage": {"input_tokens": 1}},
         "unknown_reservation", "$.reservation_id"),
        ({"op": "reserve", "id": 1, "estimate": {"component": "c", "model": "m", "input_tokens": 1},
          "ttl_s": -5}, "invalid", "$.ttl_s"),
        ({"op": "check", "id": 1, "estimate": {"component": "c", "model": "m", "input_tokens": 1, "priority": 11}},
         "invalid", "$.estimate.priority"),
    ]
    with RawConn(daemon.socket) as conn:
        for frame, code, field in cases:
            answer = conn.call(frame)
            assert answer["ok"] is False, frame
            assert (answer["error"]["code"], answer["error"]["field"]) == (code, field), answer
        assert conn.call({"op": "release", "id": 2, "reservation_id": "garbage"})["result"] == {"released": False, "count": 0}
        assert conn.call({"op": "budget.delete", "id": 3, "name": "missing"})["result"] == {"deleted": False}
        assert conn.call({"op": "budget.list", "id": 4})["result"] == {"budgets": []}


def test_records_pipelined_in_one_frame_answer_with_their_batch_state_and_cross_a_threshold_once(daemon):
    """The allocator judges each counter once per drain of its mailbox: 200 records sent in one write are
    each answered with a state that counts at least themselves, the last with all of them, and the 50%
    threshold they cross together is announced once."""
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="pipe", scope={"component": "pipe"}, period="total", limit_usd=0.004, policy="warn",
                     thresholds=[0.5])
    frames = b"".join(
        (json.dumps({"op": "record", "id": i, "idempotency_key": f"pipe-{i}", "usage": {
            "component": "pipe", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}}) + "\n").encode()
        for i in range(200))
    from conftest import RawConn

    with RawConn(daemon.socket) as events, RawConn(daemon.socket) as conn:
        events.call({"op": "subscribe", "id": 0, "topics": ["budget"]})
        conn.send(frames)
        answers = sorted((conn.recv() for _ in range(200)), key=lambda a: a["id"])
        spent = [a["result"]["budgets"][0]["spent_tokens"] for a in answers]
        assert all(s >= 2 * (i + 1) for i, s in enumerate(spent)) and spent[-1] == 400
        seen = []
        events.sock.settimeout(1.0)
        with contextlib.suppress(OSError):
            while True:
                seen.append(events.recv()["event"])
    assert seen.count("budget.threshold") == 1, seen
