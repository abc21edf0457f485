"""`budget demo` against a real daemon: realistic traffic under a budget of the run's own, which crosses its
thresholds whatever the ledger held before and whenever the run starts, touches no one else's calls, and
is removed afterwards."""

import re

from budgetd.client import SyncBudgetClient
from conftest import run_cli

#: An hour's last half minute: the run crosses into the next hour.
LAST_SECONDS_OF_AN_HOUR = "2026-06-15T10:59:56Z"


def _tag(stdout: str) -> str:
    found = re.search(r"budget (demo-[0-9a-f]{6}) =", stdout)
    assert found, stdout
    return found.group(1)


def test_the_demo_crosses_its_own_budget_and_leaves_no_budget_behind(make_daemon):
    d = make_daemon(clock=LAST_SECONDS_OF_AN_HOUR)
    with SyncBudgetClient(d.socket) as c:
        # Earlier spend far above anything the demo sizes, and a soft budget of the system's own.
        c.budget_set(name="team", period="daily", limit_usd=1000.0, policy="soft")
        for _ in range(5):
            c.record(component="rhetor", model="claude-opus-4-5", input_tokens=200_000, output_tokens=20_000)
    out = run_cli("demo", "--rate", "20", "--duration", "6", "--seed", "4", socket=d.socket)
    assert out.returncode == 0, out.stderr
    tag = _tag(out.stdout)
    assert f"budget {tag} deleted" in out.stdout and f"task type {tag}" in out.stdout
    with SyncBudgetClient(d.socket) as c:
        demo = c.usage_list(filters={"task_type": tag}, limit=1000).records
        report = c.report(["component", "tier"], filters={"task_type": tag})
        alerts = c.alerts_list(limit=100)
        budgets = [b.name for b in c.budget_list()]
        after = c.reserve(component="rhetor", model="gpt-4o", input_tokens=1000, max_output_tokens=100)
        earlier = c.usage_list(filters={"component": "rhetor"}, limit=1000).records
    assert len(demo) > 30 and all(r.priced for r in demo)
    # rate x duration calls, each recorded or denied: a slow machine makes the run longer, not thinner
    denied = int(re.search(r"demo: \d+ calls \(\d+ reserved first, (\d+) denied\)", out.stdout).group(1))
    assert len(demo) + denied == 120, out.stdout
    assert {r.group["component"] for r in report.rows} >= {"rhetor", "apollo", "athena", "sophia", "ergon"}
    assert {r.group["tier"] for r in report.rows} >= {"lightweight", "midweight", "heavyweight"}
    assert any(r.cache_read_tokens for r in demo) and any(r.reservation_id for r in demo)
    crossed = {a.data.get("threshold") for a in alerts if a.kind == "threshold" and a.budget == tag}
    assert {0.5, 0.8} <= crossed, [a.message for a in alerts]
    assert budgets == ["team"]  # the run's budget is gone; the system's own is untouched
    assert after.allowed and after.action == "allow"  # real traffic is not downgraded after the demo
    assert [r.task_type for r in earlier if r.task_type != tag] == [None] * 5


def test_the_demo_keeps_its_budget_when_asked(make_daemon):
    d = make_daemon()
    out = run_cli("demo", "--rate", "10", "--duration", "1", "--seed", "1", "--keep", socket=d.socket)
    assert out.returncode == 0, out.stderr
    tag = _tag(out.stdout)
    with SyncBudgetClient(d.socket) as c:
        kept = c.budget_get(tag).budget
    assert kept.scope.task_type == tag and kept.period == "total" and "deleted" not in out.stdout


def test_the_demo_refuses_bad_input_clearly(tmp_path):
    out = run_cli("demo", "--duration", "1", socket=tmp_path / "none.sock")
    assert out.returncode == 1 and "budget daemon" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("demo", "--rate", "0")
    assert out.returncode == 2 and "more than 0" in out.stderr
