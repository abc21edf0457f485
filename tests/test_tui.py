"""The dashboard against a real daemon: what it shows is the daemon's numbers, and it follows events."""

import time

import pytest
from textual.widgets import DataTable, Static

from budgetd.client import BudgetClient
from budgetd.render import money
from tui.app import BudgetApp

pytestmark = pytest.mark.anyio


async def until(pilot, condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(app, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


def cells(app, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.fixture
async def seeded(make_daemon):
    d = make_daemon()
    async with BudgetClient(d.socket) as c:
        await c.budget_set(name="daily-cap", period="daily", limit_usd=1.0, policy="hard")
        await c.budget_set(name="per-comp", scope={"component": "*"}, period="monthly", limit_tokens=10_000_000,
                           policy="warn")
        for comp, model, cost in (("rhetor", "gpt-4o", 0.30), ("apollo", "gpt-4o-mini", 0.25),
                                  ("rhetor", "gpt-4o", 0.05)):
            await c.record(component=comp, model=model, input_tokens=1000, output_tokens=100, cost_usd=cost)
    return d


async def test_screens_show_the_daemons_numbers(seeded):
    d = seeded
    app = BudgetApp(socket=str(d.socket), timezone="UTC")
    async with BudgetClient(d.socket) as c, app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "daily-cap" in text_of(app, "#gauges"), what="the gauges")
        status = await c.status()
        gauges = text_of(app, "#gauges")
        daily = next(s for s in status.budgets if s.budget == "daily-cap")
        assert f"{money(daily.spent_usd)} spent" in gauges and money(1.0) in gauges
        assert "per-comp [rhetor]" in gauges and "projected" in gauges
        assert f"60%  {daily.status}\n" in gauges
        assert money(0.6) in text_of(app, "#totals")

        await pilot.press("3")
        await until(pilot, lambda: len(cells(app, "#top-components")) == 2, what="top components")
        report = await c.report(["component"])
        assert [row[0] for row in cells(app, "#top-components")] == [r.group["component"] for r in report.rows]
        assert [row[3] for row in cells(app, "#top-components")] == [money(r.cost_usd) for r in report.rows]
        assert {row[0] for row in cells(app, "#top-models")} == {"gpt-4o", "gpt-4o-mini"}

        await pilot.press("2")
        await until(pilot, lambda: "rhetor" in text_of(app, "#chart"), what="the spend chart")
        assert "Cost per hour" in text_of(app, "#chart")
        await pilot.press("b")
        await until(pilot, lambda: "Cost per day" in text_of(app, "#chart"), what="the day chart")

        await pilot.press("5")
        await pilot.press("slash")
        await pilot.press(*"gpt-4o-mini")
        await until(pilot, lambda: cells(app, "#price-table") and all(
            "gpt-4o-mini" in row[0] for row in cells(app, "#price-table")), what="the price search")
        price = (await c.prices_get("gpt-4o-mini")).price
        row = next(r for r in cells(app, "#price-table") if r[0] == "gpt-4o-mini")
        assert row[3] == f"{price.input_per_mtok:g}" and row[4] == f"{price.output_per_mtok:g}"


async def test_records_stream_in_and_alerts_are_acknowledged(seeded):
    d = seeded
    app = BudgetApp(socket=str(d.socket), timezone="UTC")
    async with BudgetClient(d.socket) as c, app.run_test(size=(140, 40)) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: len(cells(app, "#usage-table")) == 3, what="the usage table")
        recorded = await c.record(component="live", model="gpt-4o", input_tokens=5, cost_usd=0.5)
        await until(pilot, lambda: cells(app, "#usage-table")[0][0] == str(recorded.record_id),
                    what="the new record on top, without a key press")
        assert cells(app, "#usage-table")[0][2] == "live"

        # The record took the daily cap over its limit: the alert shows up by itself.
        await pilot.press("4")
        await until(pilot, lambda: any("limit_exceeded" in r for r in cells(app, "#alert-table")),
                    what="the limit alert")
        table = app.query_one("#alert-table", DataTable)
        first_id = int(cells(app, "#alert-table")[0][0])
        table.move_cursor(row=0)
        await pilot.press("a")
        await until(pilot, lambda: str(first_id) not in [r[0] for r in cells(app, "#alert-table")],
                    what="the acknowledged alert to leave the unacked list")
        acked = [a for a in await c.alerts_list(limit=50) if a.id == first_id]
        assert acked and acked[0].acked and acked[0].acked_by == "budget tui"
        await pilot.press("u")  # all alerts: the acknowledged one is back, marked
        await until(pilot, lambda: any(r[0] == str(first_id) and r[6] == "yes" for r in cells(app, "#alert-table")),
                    what="all alerts")


async def test_daemon_restarts_are_survived_and_shown(seeded):
    d = seeded
    app = BudgetApp(socket=str(d.socket), timezone="UTC")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: text_of(app, "#connection").startswith("connected"), what="connected")
        d.kill()
        await until(pilot, lambda: "disconnected" in text_of(app, "#connection"), what="disconnected")
        assert app.query_one("#connection").has_class("down")
        d.start()
        await until(pilot, lambda: text_of(app, "#connection").startswith("connected"), timeout=30,
                    what="reconnected")
        async with BudgetClient(d.socket) as c:
            await c.record(component="after-restart", model="gpt-4o", input_tokens=1, cost_usd=0.01)
        await pilot.press("6")
        await until(pilot, lambda: any(r[2] == "after-restart" for r in cells(app, "#usage-table")),
                    what="events after the restart")


async def test_no_daemon_says_so_and_help_opens(tmp_path):
    app = BudgetApp(socket=str(tmp_path / "none.sock"), timezone="UTC")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "disconnected" in text_of(app, "#connection"), what="the message")
        assert "budget daemon" in text_of(app, "#connection")
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert "acknowledge the selected alert" in str(app.screen.query_one("#help", Static).content)
        await pilot.press("escape")
        assert app.return_code is None
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.return_code == 0  # q quit the app (run_test would only exit it on leaving)


async def test_snapshots_render_every_screen(seeded, tmp_path):
    from tui.snapshots import save_all

    paths = await save_all(str(seeded.socket), tmp_path, timezone="UTC")
    assert {p.stem for p in paths} == {"tui-overview", "tui-spend", "tui-top", "tui-alerts", "tui-prices",
                                        "tui-usage"}
    overview = (tmp_path / "tui-overview.svg").read_text()
    assert overview.startswith("<svg") and "daily-cap" in overview


def test_demo_sends_realistic_traffic_that_crosses_its_budget(make_daemon):
    from budgetd.client import SyncBudgetClient
    from tests.conftest import run_cli

    d = make_daemon()
    out = run_cli("demo", "--rate", "25", "--duration", "3", "--seed", "4", socket=d.socket)
    assert out.returncode == 0, out.stderr
    assert "demo-hourly" in out.stdout and "calls" in out.stdout
    with SyncBudgetClient(d.socket) as c:
        records = c.usage_list(limit=1000).records
        report = c.report(["component", "tier"])
        alerts = c.alerts_list(limit=100)
    assert len(records) > 30
    assert {r.group["component"] for r in report.rows} >= {"rhetor", "apollo", "athena", "sophia", "ergon"}
    assert {r.group["tier"] for r in report.rows} >= {"lightweight", "midweight", "heavyweight"}
    assert any(r.cache_read_tokens for r in records) and any(r.reservation_id for r in records)
    assert all(r.priced for r in records)  # every demo model is in the price book
    crossed = {a.data.get("threshold") for a in alerts if a.kind == "threshold" and a.budget == "demo-hourly"}
    assert {0.5, 0.8} <= crossed, [a.message for a in alerts]


def test_cli_tui_and_demo_refuse_bad_input_clearly(tmp_path):
    from tests.conftest import run_cli

    out = run_cli("tui", "--tz", "Atlantis/Capital")
    assert out.returncode == 1 and "unknown time zone" in out.stderr
    out = run_cli("demo", "--duration", "1", socket=tmp_path / "none.sock")
    assert out.returncode == 1 and "budget daemon" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("demo", "--rate", "0")
    assert out.returncode == 2 and "more than 0" in out.stderr


async def test_the_ask_box_answers_from_the_daemon(seeded):
    app = BudgetApp(socket=str(seeded.socket), timezone="UTC")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "daily-cap" in text_of(app, "#gauges"), what="the gauges")
        app.query_one("#ask").focus()
        await pilot.press(*"who spent most today?")
        await pilot.press("enter")
        await until(pilot, lambda: "Top spender: rhetor" in text_of(app, "#answer"), what="the answer")
        assert "offline" in text_of(app, "#answer")
