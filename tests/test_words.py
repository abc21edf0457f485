"""One meaning per word on every door: a time bound, a model filter and a route's needs mean the same thing
to the socket, the HTTP API, the client library and the CLI."""

import datetime as dt
import json

import httpx
import pytest

from budgetd.client import SyncBudgetClient
from budgetd.protocol import OpError
from conftest import RawConn, run_cli

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.timezone.utc)
#: Calls this long before the daemon's now; "7d" keeps the last two, "2026-06-15" (midnight UTC) the last.
AGES = {"ten-days": dt.timedelta(days=10), "three-days": dt.timedelta(days=3), "one-hour": dt.timedelta(hours=1)}


@pytest.fixture
def aged(make_daemon):
    d = make_daemon(http=True, clock=NOW)
    with SyncBudgetClient(d.socket) as c:
        for component, age in AGES.items():
            c.record(component=component, model="gpt-4o", input_tokens=100, cost_usd=1.0, ts=d.now() - age)
    return d


def _components(records) -> set[str]:
    return {r["component"] if isinstance(r, dict) else r.component for r in records}


def test_a_time_bound_means_the_same_on_every_door(aged):
    d = aged
    with SyncBudgetClient(d.socket) as c:
        assert c.report(since="7d").totals.requests == 2
        assert c.report(since="2026-06-15").totals.requests == 1
        assert c.report(since=NOW - dt.timedelta(days=7)).totals.requests == 2  # a datetime still works
        assert c.report(since=dt.date(2026, 6, 15)).totals.requests == 1
        assert _components(c.usage_list(since="7d", until="2d").records) == {"three-days"}
        # The daemon reads a duration by its own clock, not the caller's (this test's wall clock is months on).
        assert c.report(since="7d", until="1m").totals.requests == 2
    report = httpx.get(f"{d.url}/api/v1/report", params={"since": "7d"})
    assert report.status_code == 200, report.text
    assert report.json()["totals"]["requests"] == 2
    usage = httpx.get(f"{d.url}/api/v1/usage", params={"since": "2026-06-15"}).json()
    assert _components(usage["records"]) == {"one-hour"}
    # A date is midnight in the report's zone: in Tokyo 15 June began at 15:00 UTC on the 14th.
    tokyo = httpx.get(f"{d.url}/api/v1/report", params={"since": "2026-06-15", "timezone": "Asia/Tokyo"}).json()
    assert tokyo["totals"]["requests"] == 1
    kolkata_day = httpx.get(f"{d.url}/api/v1/report",
                            params={"since": "2026-06-12", "until": "2026-06-13", "timezone": "Asia/Kolkata"}).json()
    assert kolkata_day["totals"]["requests"] == 1  # 12:00 UTC on the 12th is inside that day in Kolkata
    cli = run_cli("report", "--since", "7d", "--json", socket=d.socket)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["totals"]["requests"] == 2
    cli = run_cli("usage", "--since", "7d", "--until", "2d", "--format", "csv", socket=d.socket)
    assert cli.returncode == 0 and "three-days" in cli.stdout and "one-hour" not in cli.stdout, cli


def test_a_bad_time_bound_is_one_clear_error_on_every_door(aged):
    d = aged
    with RawConn(d.socket) as conn:
        for since, field in (("last tuesday", "$.since"), ("99999d", "$.since"), ("1969-12-31", "$.since")):
            answer = conn.call({"op": "report", "id": 1, "since": since})
            assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == field, answer
        answer = conn.call({"op": "usage.list", "id": 2, "since": "1d", "until": "2d"})
        assert "error" not in answer and answer["result"]["records"] == []  # empty, not an error
        answer = conn.call({"op": "report", "id": 3, "since": "1d", "until": "2d"})
        assert answer["error"]["field"] == "$.until" and "later than since" in answer["error"]["message"]
    http = httpx.get(f"{d.url}/api/v1/report", params={"since": "last tuesday"})
    assert http.status_code == 400
    body = http.json()["error"]
    assert body["field"] == "$.since" and "RFC 3339" in body["message"] and "7d" in body["message"], body
    with SyncBudgetClient(d.socket) as c, pytest.raises(OpError) as err:
        c.alerts_list(since="soon")
    assert err.value.code == "invalid" and err.value.field == "$.since"
    cli = run_cli("report", "--since", "last tuesday", socket=d.socket)
    assert cli.returncode == 2 and "RFC 3339" in cli.stderr and "Traceback" not in cli.stderr, cli
    with SyncBudgetClient(d.socket) as c:
        assert c.ping()  # still serving


def test_a_model_filter_resolves_names_as_budgets_do(make_daemon):
    d = make_daemon(http=True)
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="gpt", period="total", limit_usd=100.0, policy="warn", scope={"model": "openai/gpt-4o"})
        for model in ("openai/gpt-4o", "gpt-4o", "anthropic/claude-sonnet-4-5"):
            c.record(component="a", model=model, input_tokens=1000)
        counted = c.budget_get("gpt").states[0].spent_usd
        by_name = c.report(filters={"model": "openai/gpt-4o"}).totals
        assert by_name.requests == 2 and by_name.cost_usd == pytest.approx(counted)
        assert c.report(filters={"model": "gpt-4o"}).totals.requests == 2
        assert len(c.usage_list(filters={"model": "anthropic/claude-sonnet-4-5"}).records) == 1
        assert len(c.usage_list(filters={"model": "house-model"}).records) == 0  # unknown: its own name
    cli = run_cli("usage", "--model", "anthropic/claude-sonnet-4-5", "--format", "csv", socket=d.socket)
    assert cli.returncode == 0 and cli.stdout.count("claude-sonnet-4-5") == 1, cli
    cli = run_cli("report", "--model", "openai/gpt-4o", "--json", socket=d.socket)
    assert json.loads(cli.stdout)["totals"]["requests"] == 2
    http = httpx.get(f"{d.url}/api/v1/report", params={"model": "openai/gpt-4o"}).json()
    assert http["totals"]["requests"] == 2


def test_a_route_need_is_an_object_or_just_its_capabilities(make_daemon):
    d = make_daemon(http=True)
    estimate = {"component": "a", "model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 100}
    as_list = httpx.post(f"{d.url}/api/v1/route", json={"estimate": estimate, "need": ["vision"]})
    as_object = httpx.post(f"{d.url}/api/v1/route", json={"estimate": estimate, "need": {"capabilities": ["vision"]}})
    assert as_list.status_code == as_object.status_code == 200, (as_list.text, as_object.text)
    assert as_list.json() == as_object.json()
    with SyncBudgetClient(d.socket) as c:
        assert c.route(need=["vision"], **estimate).choice == as_list.json()["choice"] is not None
    wrong = httpx.post(f"{d.url}/api/v1/route", json={"estimate": estimate, "need": "vision"})
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "$.need", wrong.text
