"""Apollo and Rhetor moving onto budgetd: their managers' own method names against a real daemon, and the
importers against files built here in the exact shapes of their stores."""

import datetime as dt
import json
import sqlite3

import anyio
import pytest

from budgetd.client import SyncBudgetClient
from budgetd.integrations.apollo import (
    BudgetPeriod,
    BudgetPolicy,
    BudgetPolicyType,
    BudgetTier,
    TaskPriority,
    TokenBudgetManager,
)
from budgetd.integrations.rhetor import BudgetManager
from budgetd.integrations.rhetor import BudgetPeriod as RhetorPeriod
from tests.conftest import run_cli

UTC = dt.timezone.utc


# -- Apollo ------------------------------------------------------------------------------------------


def test_apollo_manager_allocates_records_and_enforces(daemon):
    apollo = TokenBudgetManager(str(daemon.socket))
    exceeded = []
    apollo.register_callback("on_budget_exceeded", exceeded.append)
    # A tier-wide hard policy (no component): Apollo's never fired; here it covers every component.
    policy = BudgetPolicy(type=BudgetPolicyType.HARD_LIMIT, period=BudgetPeriod.DAILY,
                          tier=BudgetTier.REMOTE_HEAVYWEIGHT, limit=10_000, policy_id="p-heavy")
    assert apollo.add_policy(policy) == "p-heavy"
    assert apollo.get_policy("p-heavy").limit == 10_000

    async def run() -> None:
        a = await apollo.allocate_budget("ctx-1", "athena", task_type="chat", model="claude-opus-4-5",
                                         token_count=6_000)
        assert a is not None and a.tier == BudgetTier.REMOTE_HEAVYWEIGHT and a.allocation_id
        # Usage over the allocation is recorded in full (Apollo kept only what was left of it).
        assert apollo.record_usage("ctx-1", 7_000) == 7_000
        assert apollo.get_allocation("ctx-1").tokens_used == 7_000
        # Another component, same tier: the tier-wide policy counts it too; 7,000 + 4,000 crosses 10,000.
        refused = await apollo.allocate_budget("ctx-2", "sophia", model="claude-opus-4-5", token_count=4_000)
        assert refused is None  # Apollo admitted the crossing request
        critical = await apollo.allocate_budget("ctx-3", "sophia", model="claude-opus-4-5", token_count=4_000,
                                                priority=TaskPriority.CRITICAL)
        assert critical is not None  # CRITICAL still bypasses a hard limit, as in Apollo
        apollo.update_allocation("ctx-3", is_active=False)  # unused: the hold is given back

    anyio.run(run)
    summary = apollo.get_budget_summary(tier=BudgetTier.REMOTE_HEAVYWEIGHT, period=BudgetPeriod.DAILY)
    assert len(summary) == 1 and summary[0].total_used == 7_000 and summary[0].limit == 10_000
    assert summary[0].usage_percentage == 0.7 and not summary[0].is_exceeded
    with SyncBudgetClient(daemon.socket) as c:
        records = c.usage_list().records
        assert [(r.component, r.input_tokens, r.context_id, r.task_type) for r in records] == [
            ("athena", 7_000, "ctx-1", "chat")]
        assert all(s.reserved_tokens == 0 for s in c.status().budgets)
    assert apollo.update_policy("p-heavy", limit=20_000).limit == 20_000
    assert apollo.get_policy("p-heavy").limit == 20_000
    assert apollo.delete_policy("p-heavy") and apollo.get_policy("p-heavy") is None
    assert exceeded == []  # nothing went over: the crossing request was refused instead


def test_apollo_per_session_policies_limit_each_context(daemon):
    apollo = TokenBudgetManager(str(daemon.socket))
    apollo.add_policy(BudgetPolicy(type=BudgetPolicyType.HARD_LIMIT, period=BudgetPeriod.PER_SESSION,
                                   tier=BudgetTier.LOCAL_LIGHTWEIGHT, limit=1_000, policy_id="per-session"))
    apollo.set_component_tier("coder", BudgetTier.LOCAL_LIGHTWEIGHT)

    async def run() -> None:
        for ctx in ("s1", "s2"):  # each session has its own 1,000 tokens
            assert await apollo.allocate_budget(ctx, "coder", model="llama3", token_count=800) is not None
            apollo.record_usage(ctx, 800)
        assert await apollo.allocate_budget("s1", "coder", model="llama3", token_count=300) is None

    anyio.run(run)


# -- Rhetor ------------------------------------------------------------------------------------------


def test_rhetor_manager_prices_records_and_enforces(daemon):
    rhetor = BudgetManager(str(daemon.socket))
    cost = rhetor.calculate_cost("openai", "gpt-4o", input_tokens=1000, output_tokens=500)
    with SyncBudgetClient(daemon.socket) as c:
        price = c.prices_get("gpt-4o").price
    assert cost["total_cost"] == pytest.approx(1000 * price.input_per_mtok / 1e6 + 500 * price.output_per_mtok / 1e6)
    assert rhetor.estimate_cost("openai", "gpt-4o", "hello " * 100)["input_tokens"] > 0

    done = rhetor.record_completion("openai", "gpt-4o", component="rhetor", task_type="chat",
                                    input_tokens=1000, output_tokens=500)  # the provider's counts, as given
    assert done["input_tokens"] == 1000 and done["total_cost"] == pytest.approx(cost["total_cost"])
    usage = rhetor.get_usage(RhetorPeriod.DAILY)
    assert [(u["model"], u["input_tokens"], u["output_tokens"]) for u in usage] == [("gpt-4o", 1000, 500)]
    assert rhetor.get_current_usage_total("daily") == pytest.approx(cost["total_cost"])
    summary = rhetor.get_usage_summary("daily", group_by="model")
    assert summary["count"] == 1 and summary["groups"]["gpt-4o"]["input_tokens"] == 1000

    assert rhetor.set_budget_limit("daily", 0.02, enforcement="enforce")
    assert rhetor.get_budget_limit("daily") == 0.02 and rhetor.get_enforcement_policy("daily") == "enforce"
    assert rhetor.get_budget_settings()["daily"][0]["limit_amount"] == 0.02
    allowed, info = rhetor.check_budget("openai", "gpt-4o", component="rhetor", input_tokens=4000,
                                        max_output_tokens=500)
    assert not allowed and "rhetor-daily-all" in info["reason"]  # $0.0075 spent + ~$0.015 > $0.02
    provider, model, warnings = rhetor.route_with_budget_awareness("", "chat", "openai", "gpt-4o",
                                                                   component="rhetor", input_tokens=4000)
    assert model != "gpt-4o" and warnings and "Downgraded" in warnings[0]
    assert rhetor.find_cheaper_alternative("openai", "gpt-4o", input_tokens=4000)[1] != "gpt-4o"
    assert rhetor.set_enforcement_policy("daily", "warn") and rhetor.get_enforcement_policy("daily") == "warn"
    assert rhetor.check_budget("openai", "gpt-4o", input_tokens=4000, max_output_tokens=500)[0]


# -- importers ----------------------------------------------------------------------------------------

RHETOR_SCHEMA = """
CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, provider TEXT, model TEXT,
    component TEXT, task_type TEXT, input_tokens INTEGER, output_tokens INTEGER, cost REAL, metadata TEXT);
CREATE TABLE budget_settings (id INTEGER PRIMARY KEY AUTOINCREMENT, period TEXT, provider TEXT,
    limit_amount REAL, enforcement TEXT, start_date TEXT, active INTEGER);
"""


def rhetor_db(path) -> list[tuple]:
    db = sqlite3.connect(path)
    db.executescript(RHETOR_SCHEMA)
    now = dt.datetime.now()
    rows = [
        ((now - dt.timedelta(hours=h)).isoformat(), "anthropic", "claude-3-haiku-20240307", "rhetor", "chat",
         100 * h, 10 * h, 0.0001 * h, json.dumps({"session": f"s{h}"}))
        for h in range(1, 21)
    ]
    rows += [
        ("not a time", "openai", "gpt-4o", "rhetor", "chat", 1, 1, 0.1, "{}"),
        (now.isoformat(), "openai", "gpt-4o", "rhetor", "chat", -5, 1, 0.1, "{}"),
    ]
    db.executemany("INSERT INTO usage (timestamp, provider, model, component, task_type, input_tokens, "
                   "output_tokens, cost, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO budget_settings (period, provider, limit_amount, enforcement, start_date, active) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [
                       ("daily", "all", 5.0, "warn", now.isoformat(), 0),
                       ("daily", "all", 10.0, "enforce", now.isoformat(), 1),
                       ("monthly", "anthropic", 100.0, "warn", now.isoformat(), 1),
                       ("weekly", "all", 0.0, "warn", now.isoformat(), 1),
                   ])
    db.commit()
    db.close()
    return rows[:20]


def test_rhetor_import_is_idempotent_with_a_dry_run_and_reasons(daemon, tmp_path):
    path = tmp_path / "rhetor.db"
    good = rhetor_db(path)
    dry = run_cli("import", "rhetor", str(path), "--dry-run", "--tz", "UTC", socket=daemon.socket)
    assert dry.returncode == 0, dry.stderr
    assert "20 records would be imported" in dry.stdout and "rhetor-daily-all" in dry.stdout
    with SyncBudgetClient(daemon.socket) as c:
        assert c.usage_list().records == [] and c.budget_list() == []

    first = run_cli("import", "rhetor", str(path), socket=daemon.socket)
    assert first.returncode == 0, first.stderr
    assert "20 imported, 0 already there" in first.stdout
    assert "usage row 21: timestamp 'not a time' is not an ISO time" in first.stdout
    assert "usage row 22: input_tokens -5 is not a count" in first.stdout
    assert "inactive" in first.stdout and "a limit of 0 means no limit" in first.stdout

    again = run_cli("import", "rhetor", str(path), socket=daemon.socket)
    assert "0 imported, 20 already there" in again.stdout and "budgets unchanged" in again.stdout
    with SyncBudgetClient(daemon.socket) as c:
        records = c.usage_list(limit=100).records
        assert len(records) == 20
        assert sum(r.cost_usd for r in records) == pytest.approx(sum(row[7] for row in good))
        assert sum(r.input_tokens for r in records) == sum(row[5] for row in good)
        assert {r.metadata["imported_from"] for r in records} == {"rhetor"}
        daily = c.budget_get("rhetor-daily-all").budget
        assert (daily.limit_usd, daily.policy, daily.period) == (10.0, "hard", "daily")
        assert c.budget_get("rhetor-monthly-anthropic").budget.scope.provider == "anthropic"


#: Apollo's policy file as Apollo writes it: a policy, one per session, one that has ended (README's example too).
APOLLO_POLICIES = [
    {"policy_id": "a1", "type": "hard_limit", "period": "daily", "tier": "remote_heavyweight", "limit": 1000000,
     "component": None, "task_type": None, "warning_threshold": 0.8, "action_threshold": 0.95,
     "start_date": "2026-01-01T00:00:00", "end_date": None, "enabled": True, "metadata": {}},
    {"policy_id": "a2", "type": "warn", "period": "per_session", "tier": "local_midweight", "limit": 16000,
     "component": "apollo", "start_date": "2026-01-01T00:00:00"},
    {"policy_id": "old", "type": "warn", "period": "hourly", "tier": "local_lightweight", "limit": 5,
     "end_date": "2020-01-01T00:00:00"},
]


def test_apollo_import_is_idempotent_with_a_dry_run_and_reasons(daemon, tmp_path):
    path = tmp_path / "budget_policies.json"
    policies = [
        *APOLLO_POLICIES,
        {"policy_id": "bad", "type": "sometimes", "period": "daily", "tier": "local_lightweight", "limit": 5},
        {"policy_id": "nolimit", "type": "warn", "period": "daily", "tier": "local_lightweight"},
    ]
    path.write_text(json.dumps(policies))
    dry = run_cli("import", "apollo", str(path), "--dry-run", socket=daemon.socket)
    assert dry.returncode == 0, dry.stderr
    assert "apollo-a1" in dry.stdout and "would" in dry.stdout
    first = run_cli("import", "apollo", str(path), socket=daemon.socket)
    assert "budgets created: apollo-a1, apollo-a2" in first.stdout
    assert "policy 2 (old): expired on 2020-01-01" in first.stdout
    assert "policy 3 (bad): 'sometimes' is not a valid BudgetPolicyType" in first.stdout
    assert "policy 4 (nolimit): missing limit" in first.stdout
    again = run_cli("import", "apollo", str(path), socket=daemon.socket)
    assert "budgets unchanged: apollo-a1, apollo-a2" in again.stdout and "created" not in again.stdout
    with SyncBudgetClient(daemon.socket) as c:
        a1 = c.budget_get("apollo-a1").budget
        assert (a1.scope.tier, a1.period, a1.limit_tokens, a1.policy, a1.critical_bypass) == (
            "heavyweight", "daily", 1000000, "hard", True)
        a2 = c.budget_get("apollo-a2").budget
        assert (a2.scope.context_id, a2.scope.component, a2.period) == ("*", "apollo", "total")


def test_importers_refuse_wrong_files_clearly(daemon, tmp_path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello")
    out = run_cli("import", "rhetor", str(not_db), socket=daemon.socket)
    assert out.returncode == 1 and "not an SQLite database" in out.stderr and "Traceback" not in out.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    out = run_cli("import", "rhetor", str(other), socket=daemon.socket)
    assert out.returncode == 1 and "no usage, budget_settings table" in out.stderr
    out = run_cli("import", "apollo", str(tmp_path / "missing.json"), socket=daemon.socket)
    assert out.returncode == 1 and "does not exist" in out.stderr
    not_list = tmp_path / "p.json"
    not_list.write_text('{"a": 1}')
    out = run_cli("import", "apollo", str(not_list), socket=daemon.socket)
    assert out.returncode == 1 and "expected a list" in out.stderr
