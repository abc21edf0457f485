"""What a provider billed, through every door: the new Usage fields are accepted, stored, listed, reported
and exported, parts never exceed their wholes, and token limits count each token once."""

import csv
import io
import json

import httpx

from budgetd.client import SyncBudgetClient
from conftest import RawConn, run_cli

BILLED = {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 300, "cache_write_tokens": 200,
          "cache_write_1h_tokens": 100, "reasoning_tokens": 120, "audio_input_tokens": 40,
          "audio_output_tokens": 30, "service_tier": "priority", "web_search_requests": 2}


def test_every_billed_kind_is_stored_listed_reported_and_exported(make_daemon):
    d = make_daemon(http=True)
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="tokens", period="daily", limit_tokens=10**9, policy="warn")
        socket_record = c.record(component="a", model="gpt-4o", **BILLED)
    http = httpx.post(f"{d.url}/api/v1/usage", json={"component": "b", "model": "gpt-4o", **BILLED}).json()
    cli = run_cli("record", "--component", "c", "--model", "gpt-4o", "--input", "1000", "--output", "500",
                  "--cache-read", "300", "--cache-write", "200", "--cache-write-1h", "100", "--reasoning", "120",
                  "--audio-in", "40", "--audio-out", "30", "--service-tier", "priority", "--web-searches", "2",
                  "--json", socket=d.socket)
    assert cli.returncode == 0, cli.stderr
    assert socket_record.cost_usd == http["cost_usd"] == json.loads(cli.stdout)["cost_usd"]
    with SyncBudgetClient(d.socket) as c:
        records = c.usage_list().records
        assert len(records) == 3
        for r in records:
            assert {k: getattr(r, k) for k in BILLED} == BILLED, r
        totals = c.report(["component"]).totals
        assert totals.cache_write_1h_tokens == 300 and totals.reasoning_tokens == 360
        assert totals.audio_input_tokens == 120 and totals.audio_output_tokens == 90
        assert totals.web_search_requests == 6
        assert totals.tokens == 3 * (1000 + 500 + 300 + 200 + 100)  # parts are inside their wholes
        assert c.budget_get("tokens").states[0].spent_tokens == totals.tokens
    out = run_cli("usage", "--format", "csv", socket=d.socket)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["cache_write_1h_tokens"] for r in rows] == ["100"] * 3 and rows[0]["service_tier"] == "priority"
    d.stop()
    d.start()  # counters rebuilt from the ledger count the 1-hour writes too
    with SyncBudgetClient(d.socket) as c:
        assert c.budget_get("tokens").states[0].spent_tokens == totals.tokens


def test_parts_never_exceed_their_wholes(make_daemon):
    d = make_daemon()
    with RawConn(d.socket) as conn:
        for usage, field in (({"output_tokens": 10, "reasoning_tokens": 11}, "$.usage.reasoning_tokens"),
                             ({"output_tokens": 10, "reasoning_tokens": 6, "audio_output_tokens": 5},
                              "$.usage.audio_output_tokens"),
                             ({"input_tokens": 3, "audio_input_tokens": 4}, "$.usage.audio_input_tokens")):
            answer = conn.call({"op": "record", "id": 1, "usage": {"component": "a", "model": "gpt-4o", **usage}})
            assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == field, answer
        answer = conn.call({"op": "record", "id": 2, "usage": {"component": "a", "model": "gpt-4o",
                                                               "service_tier": "turbo"}})
        assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == "$.usage.service_tier"
        assert conn.call({"op": "ping", "id": 3})["ok"]
