"""The MCP bridge through the SDK's own client: in-process and as a real stdio subprocess."""

import json
import os
import sys

import anyio
import msgspec
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from budgetd.client import BudgetClient
from budgetd.mcp_bridge import build_server
from tests.conftest import ROOT

pytestmark = pytest.mark.anyio

TOOLS = {"budget_check", "budget_reserve", "budget_commit", "budget_release", "budget_record", "budget_status",
         "budget_report", "price_lookup", "price_search", "route_model", "alerts_list", "alerts_ack", "budget_ask"}
MUTATING = {"budget_reserve", "budget_commit", "budget_release", "budget_record", "alerts_ack"}


def plain(value):
    return json.loads(msgspec.json.encode(value))


@pytest.fixture
async def daemon_with_budget(make_daemon):
    d = make_daemon()
    async with BudgetClient(d.socket) as c:
        await c.budget_set(name="team", period="daily", limit_usd=0.05, policy="hard")
        await c.record(component="rhetor", model="gpt-4o", input_tokens=1000, output_tokens=200, cost_usd=0.045)
    return d


async def test_every_tool_answers_what_the_daemon_answers(daemon_with_budget):
    d = daemon_with_budget
    async with BudgetClient(d.socket) as c, Client(build_server(str(d.socket)), cache=None) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 30, tool.name
            for name, prop in tool.input_schema.get("properties", {}).items():
                assert prop.get("description"), (tool.name, name)

        args = {"component": "rhetor", "model": "gpt-4o", "input_tokens": 2000, "max_output_tokens": 500}
        r = await mcp.call_tool("budget_check", args)
        want = await c.check(**args)
        assert not r.is_error and r.structured_content["allowed"] == want.allowed is False
        assert r.structured_content["estimated_cost_usd"] == want.estimated_cost_usd
        assert r.content[0].text.startswith("DENIED")

        small = {"component": "rhetor", "model": "gpt-4o-mini", "input_tokens": 100, "max_output_tokens": 10}
        held = (await mcp.call_tool("budget_reserve", small)).structured_content
        assert held["allowed"] and held["reservation_id"]
        committed = await mcp.call_tool("budget_commit", {"reservation_id": held["reservation_id"],
                                                          "input_tokens": 90, "output_tokens": 8})
        record_id = committed.structured_content["record_id"]
        newest = (await c.usage_list(limit=1)).records[0]
        assert newest.record_id == record_id and newest.reservation_id == held["reservation_id"]
        assert newest.input_tokens == 90 and committed.structured_content["cost_usd"] == newest.cost_usd
        other = (await mcp.call_tool("budget_reserve", small)).structured_content
        released = await mcp.call_tool("budget_release", {"reservation_id": other["reservation_id"]})
        assert released.structured_content == {"released": True}
        assert all(s.reserved_usd == 0 for s in (await c.status()).budgets)

        recorded = await mcp.call_tool("budget_record", {"component": "agent", "model": "gpt-4o-mini",
                                                         "input_tokens": 10, "output_tokens": 5})
        assert (await c.usage_list(limit=1)).records[0].record_id == recorded.structured_content["record_id"]

        status = (await mcp.call_tool("budget_status", {})).structured_content
        daemon = await c.status()
        assert status["budgets"] == plain(daemon.budgets) and status["totals"] == plain(daemon.totals)

        report_args = {"group_by": ["component"], "since": "1d", "limit": 1}
        report = (await mcp.call_tool("budget_report", report_args)).structured_content
        want_report = await c.report(["component"], limit=1)
        assert report["rows"] == plain(want_report.rows) and report["totals"] == plain(want_report.totals)

        price = await mcp.call_tool("price_lookup", {"model": "gpt-4o"})
        assert price.structured_content == plain(await c.prices_get("gpt-4o"))
        assert "$2.5/M in" in price.content[0].text
        found = (await mcp.call_tool("price_search", {"search": "haiku", "limit": 5})).structured_content
        assert found["prices"] == plain((await c.prices_list(search="haiku", limit=5)).prices)

        route_args = {"component": "rhetor", "model": "gpt-4o", "input_tokens": 2000, "max_output_tokens": 500}
        routed = (await mcp.call_tool("route_model", route_args)).structured_content
        want_route = await c.route(component="rhetor", model="gpt-4o", input_tokens=2000, max_output_tokens=500)
        assert routed["choice"] == want_route.choice
        assert [a["model"] for a in routed["alternatives"]] == [a.model for a in want_route.alternatives]

        alerts = (await mcp.call_tool("alerts_list", {"unacked_only": True})).structured_content["alerts"]
        assert alerts == plain(await c.alerts_list(unacked=True, limit=20)) and alerts
        asked = await mcp.call_tool("budget_ask", {"question": "who spent the most today?"})
        assert not asked.is_error and asked.structured_content["facts"]["by_component"][0]["name"] == "rhetor"
        assert asked.structured_content["offline"] and "Top spender: rhetor" in asked.content[0].text

        acked = await mcp.call_tool("alerts_ack", {"alert_id": alerts[0]["id"]})
        assert acked.structured_content == {"acked": True}
        assert [a for a in await c.alerts_list(limit=50) if a.id == alerts[0]["id"]][0].acked_by == "mcp"


async def test_resources_and_prompts(daemon_with_budget):
    d = daemon_with_budget
    async with BudgetClient(d.socket) as c, Client(build_server(str(d.socket)), cache=None) as mcp:
        assert {str(r.uri) for r in (await mcp.list_resources()).resources} == {"budget://budgets",
                                                                                 "budget://alerts"}
        assert {t.uri_template for t in (await mcp.list_resource_templates()).resource_templates} == {
            "budget://budgets/{name}", "budget://prices/{model}"}
        budgets = json.loads((await mcp.read_resource("budget://budgets")).contents[0].text)
        assert budgets["budgets"] == plain((await c.status()).budgets)
        one = json.loads((await mcp.read_resource("budget://budgets/team")).contents[0].text)
        assert one == plain(await c.budget_get("team"))
        price = json.loads((await mcp.read_resource("budget://prices/gpt-4o")).contents[0].text)
        assert price == plain(await c.prices_get("gpt-4o"))
        alerts = json.loads((await mcp.read_resource("budget://alerts")).contents[0].text)
        assert alerts["alerts"] == plain(await c.alerts_list(unacked=True))

        assert {p.name for p in (await mcp.list_prompts()).prompts} == {"plan-within-budget", "explain-spend"}
        plan = await mcp.get_prompt("plan-within-budget", {"task": "summarise 40 documents", "component": "rhetor"})
        text = plan.messages[0].content.text
        assert "summarise 40 documents" in text and "team" in text and "$0.045 spent of $0.05" in text
        explain = (await mcp.get_prompt("explain-spend", {"since": "1d"})).messages[0].content.text
        assert "$0.045" in explain and "rhetor" in explain


async def test_errors_become_tool_errors(daemon_with_budget, tmp_path):
    d = daemon_with_budget
    async with Client(build_server(str(d.socket)), cache=None) as mcp:
        bad = await mcp.call_tool("budget_check", {"component": "x", "model": "gpt-4o", "input_tokens": -1})
        assert bad.is_error and "input_tokens" in bad.content[0].text
        missing = await mcp.call_tool("price_lookup", {"model": "no-such-model-anywhere"})
        assert missing.is_error and "not_found" in missing.content[0].text
        when = await mcp.call_tool("budget_report", {"since": "last tuesday"})
        assert when.is_error and "since" in when.content[0].text and "7d" in when.content[0].text
        unknown = await mcp.call_tool("budget_commit", {"reservation_id": "r-nope", "input_tokens": 1})
        assert unknown.is_error and "unknown_reservation" in unknown.content[0].text
        assert not (await mcp.call_tool("budget_status", {})).is_error  # still serving

    async with Client(build_server(str(tmp_path / "nobody.sock")), cache=None) as mcp:
        down = await mcp.call_tool("budget_status", {})
        assert down.is_error and "budget daemon" in down.content[0].text

    async with Client(build_server(str(d.socket), read_only=True), cache=None) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert names == TOOLS - MUTATING
        refused = await mcp.call_tool("budget_record", {"component": "x", "model": "gpt-4o"})
        assert refused.is_error


async def test_resource_updates_follow_the_daemons_events(daemon_with_budget):
    d = daemon_with_budget
    async with BudgetClient(d.socket) as c, Client(build_server(str(d.socket)), cache=None) as mcp:
        async with mcp.listen(resource_subscriptions=["budget://alerts", "budget://budgets"]) as sub:
            updates = sub.__aiter__()

            async def next_uri() -> str:
                try:
                    return (await updates.__anext__()).uri
                except StopAsyncIteration:
                    raise AssertionError("the stream of resource updates ended early") from None

            with anyio.fail_after(20):
                # Small records until the budgets resource moves: then the bridge's own subscription is up.
                while True:
                    await c.record(component="probe", model="gpt-4o-mini", input_tokens=1)
                    with anyio.move_on_after(1.5):
                        if await next_uri() == "budget://budgets":
                            break
                await c.record(component="rhetor", model="gpt-4o", input_tokens=10, cost_usd=0.02)  # over the limit
                while await next_uri() != "budget://alerts":
                    pass


async def test_stdio_subprocess(daemon_with_budget):
    d = daemon_with_budget
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    env["PYTHONPATH"] = str(ROOT)
    params = StdioServerParameters(command=sys.executable, args=["-m", "budgetd", "mcp", "--socket", str(d.socket),
                                                                 "--read-only"], env=env)
    async with Client(params, cache=None) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS - MUTATING
        status = await mcp.call_tool("budget_status", {})
        assert not status.is_error and "team: $0.045 of $0.05" in status.content[0].text
