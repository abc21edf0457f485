"""The MCP bridge through the SDK's own clients: in-process, and as the real `budget mcp` process over stdio
(the newest `Client` and a classic `ClientSession`), against a real daemon."""

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
import msgspec
import pytest
from mcp import Client, ClientSession, MCPError, ResourceUpdatedNotification
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

import budgetd
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
        await c.budget_set(name="team", period="total", limit_usd=0.05, policy="hard")  # no window to cross
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


async def test_errors_of_writes_and_of_a_daemon_never_started(daemon_with_budget, tmp_path):
    """What the read-only bridge of test_every_mistake_gets_one_clear_message cannot show, in-process."""
    d = daemon_with_budget
    async with Client(build_server(str(d.socket)), cache=None) as mcp:
        unknown = await mcp.call_tool("budget_commit", {"reservation_id": "r-nope", "input_tokens": 1})
        assert unknown.is_error and unknown.content[0].text.startswith("reservation 'r-nope' is unknown")
        bad = await mcp.call_tool("budget_commit", {"reservation_id": "", "output_tokens": "many"})
        assert bad.is_error and bad.content[0].text.startswith("bad arguments to budget_commit: reservation_id: ")
        assert "output_tokens: Input should be a valid integer" in bad.content[0].text
        assert not (await mcp.call_tool("budget_status", {})).is_error  # still serving

    async with Client(build_server(str(tmp_path / "nobody.sock")), cache=None) as mcp:
        down = await mcp.call_tool("budget_status", {})
        assert down.is_error and "budget daemon" in down.content[0].text
        with pytest.raises(MCPError) as raised:
            await mcp.get_prompt("explain-spend", {})
        assert "no budgetd answers on" in raised.value.error.message


def bridge(socket: Path, *flags: str) -> StdioServerParameters:
    """`python -m budgetd mcp` on the daemon at `socket`, as an MCP client starts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    env["PYTHONPATH"] = str(ROOT)
    return StdioServerParameters(command=sys.executable, args=["-m", "budgetd", "mcp", "--socket", str(socket),
                                                               *flags], env=env)


@contextlib.asynccontextmanager
async def newest_client(socket: Path, stderr: Path, *flags: str) -> AsyncIterator[Client]:
    with stderr.open("w") as errlog:
        async with Client(stdio_client(bridge(socket, *flags), errlog=errlog), cache=None) as mcp:
            yield mcp


async def spend_until(client: BudgetClient, next_uri: Callable[[], Awaitable[str]], uri: str) -> list[str]:
    """Small records until `uri` is updated (the first ones may come before the bridge follows the daemon's
    events); the URIs updated meanwhile, in order."""
    seen: list[str] = []
    while uri not in seen:
        await client.record(component="probe", model="gpt-4o-mini", input_tokens=1)
        with anyio.move_on_after(1.5):
            while uri not in seen:
                seen.append(await next_uri())
    return seen


def assert_no_traceback(stderr: Path) -> None:
    text = stderr.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # resources/subscribe: the classic API on purpose
async def test_a_classic_session_subscribes_to_a_budget(daemon_with_budget, tmp_path):
    d = daemon_with_budget
    updated, updates = anyio.create_memory_object_stream[str](1000)

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.send_nowait(str(message.params.uri))

    with (tmp_path / "bridge.err").open("w") as errlog:
        async with stdio_client(bridge(d.socket), errlog=errlog) as (read, write), \
                ClientSession(read, write, message_handler=on_message) as session, BudgetClient(d.socket) as c:
            hello = await session.initialize()
            assert hello.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS  # no subscriptions/listen
            assert hello.server_info.version == budgetd.__version__
            assert hello.capabilities.resources.subscribe
            await session.subscribe_resource("budget://budgets/team")
            await session.subscribe_resource("budget://budgets")
            with anyio.fail_after(20):
                assert "budget://budgets" in await spend_until(c, updates.receive, "budget://budgets/team")
                await session.unsubscribe_resource("budget://budgets/team")
                # Spend within a second of an announcement is announced once that second is over, without
                # more spend; the announcements no longer name the budget left.
                after = []
                for _ in range(2):
                    await c.record(component="probe", model="gpt-4o-mini", input_tokens=1)
                    while (uri := await updates.receive()) != "budget://budgets":
                        after.append(uri)
            assert "budget://budgets/team" not in after
    assert_no_traceback(tmp_path / "bridge.err")


async def test_the_newest_client_listens_to_budgets_and_alerts(daemon_with_budget, tmp_path):
    d = daemon_with_budget
    async with newest_client(d.socket, tmp_path / "bridge.err") as mcp, BudgetClient(d.socket) as c:
        assert mcp.server_info.version == budgetd.__version__
        async with mcp.listen(resource_subscriptions=["budget://alerts", "budget://budgets/team"]) as sub:
            updates = sub.__aiter__()

            async def next_uri() -> str:
                try:
                    return (await updates.__anext__()).uri
                except StopAsyncIteration:
                    raise AssertionError("the stream of resource updates ended early") from None

            with anyio.fail_after(20):
                await spend_until(c, next_uri, "budget://budgets/team")
                await c.record(component="rhetor", model="gpt-4o", input_tokens=10, cost_usd=0.02)  # over the limit
                while await next_uri() != "budget://alerts":
                    pass
    assert_no_traceback(tmp_path / "bridge.err")


REPR = re.compile(r"[{\[]'|\b[A-Z]\w*\(\w+=")  # a dict or list repr, or a Struct's


async def test_texts_show_groups_and_keys_as_pairs(make_daemon, tmp_path):
    d = make_daemon()
    async with BudgetClient(d.socket) as c:
        await c.budget_set(name="per-agent", scope={"component": "*"}, period="total", limit_usd=1.0, policy="warn")
        await c.record(component="rhetor", model="gpt-4o", input_tokens=1000, output_tokens=200, cost_usd=0.045)
        await c.record(component="athena", model="gpt-4o-mini", input_tokens=100, output_tokens=20, cost_usd=0.001)
    async with newest_client(d.socket, tmp_path / "bridge.err", "--read-only") as mcp:
        explain = (await mcp.get_prompt("explain-spend", {"since": "1d"})).messages[0].content.text
        assert "- component=rhetor, model=gpt-4o: $0.045" in explain
        plan = await mcp.get_prompt("plan-within-budget", {"task": "summarise", "component": "rhetor"})
        assert "- per-agent [component=rhetor]: $0.045 spent of $1.00" in plan.messages[0].content.text
        status = (await mcp.call_tool("budget_status", {})).content[0].text
        assert "per-agent [component=athena]: $0.001 of $1.00" in status
        report = await mcp.call_tool("budget_report", {"group_by": ["component", "model"]})
        assert "component=rhetor, model=gpt-4o: $0.045" in report.content[0].text

        texts = {"explain-spend": explain, "plan-within-budget": plan.messages[0].content.text}
        estimate = {"component": "rhetor", "model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 10}
        for tool, args in [("budget_check", estimate), ("budget_status", {}), ("route_model", estimate),
                           ("budget_report", {"group_by": ["model"], "bucket": "day"}),
                           ("price_lookup", {"model": "gpt-4o"}), ("price_search", {"search": "gpt-4o"}),
                           ("alerts_list", {}), ("budget_ask", {"question": "who spends most?"})]:
            result = await mcp.call_tool(tool, args)
            assert not result.is_error, (tool, result.content)
            texts[tool] = result.content[0].text
        assert not {name: text for name, text in texts.items() if REPR.search(text)}
    assert_no_traceback(tmp_path / "bridge.err")


async def test_every_mistake_gets_one_clear_message(daemon_with_budget, tmp_path):
    d = daemon_with_budget
    async with newest_client(d.socket, tmp_path / "bridge.err", "--read-only") as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS - MUTATING

        async def tool_error(name: str, args: dict) -> str:
            result = await mcp.call_tool(name, args)
            assert result.is_error and len(result.content) == 1, result
            text = result.content[0].text
            assert "\n" not in text, text
            return text

        async def protocol_error(request: Awaitable[Any]) -> str:
            with pytest.raises(MCPError) as raised:
                await request
            return raised.value.error.message

        assert "--read-only" in await tool_error("budget_record", {"component": "x", "model": "gpt-4o"})
        assert "no tool named 'budget_spend'" in await tool_error("budget_spend", {})
        bad = await tool_error("budget_check", {"model": "gpt-4o", "input_tokens": -1})
        assert bad.startswith("bad arguments to budget_check: ")
        assert "component: Field required" in bad and "input_tokens: Input should be greater than or equal to 0" in bad
        when = await tool_error("budget_report", {"since": "last tuesday"})
        assert when.startswith("'last tuesday' is not a time") and "7d" in when
        assert (await tool_error("price_lookup", {"model": "no-such-model-anywhere"})).startswith(
            "no price for model 'no-such-model-anywhere'")

        nope = await protocol_error(mcp.read_resource("budget://budgets/nope"))
        assert "no budget named 'nope'" in nope
        assert "no resource budget://nothing" in await protocol_error(mcp.read_resource("budget://nothing"))
        assert "no prompt named 'nope'" in await protocol_error(mcp.get_prompt("nope", {}))
        assert "missing component" in await protocol_error(mcp.get_prompt("plan-within-budget", {"task": "t"}))
        assert "7d" in await protocol_error(mcp.get_prompt("explain-spend", {"since": "last tuesday"}))

        d.stop()
        down = await tool_error("budget_status", {})
        assert "no budgetd answers on" in down and "budget daemon" in down
        assert "no budgetd answers on" in await protocol_error(mcp.read_resource("budget://budgets"))
    assert_no_traceback(tmp_path / "bridge.err")
