"""The HTTP door: the same ops as the socket, REST faces, error envelopes with matching statuses."""

import json

import httpx
import pytest

from conftest import RawConn, free_port


@pytest.fixture
def web(make_daemon):
    d = make_daemon(http=True)
    with httpx.Client(base_url=d.url + "/api/v1", timeout=30) as client:
        yield d, client


def test_rpc_answers_like_the_socket(web):
    d, http = web
    frames = [
        {"op": "ping", "id": 1},
        {"op": "record", "id": 2, "idempotency_key": "k1",
         "usage": {"component": "h", "model": "gpt-4o", "input_tokens": 1000}},
        {"op": "record", "id": 3, "idempotency_key": "k1",
         "usage": {"component": "h", "model": "gpt-4o", "input_tokens": 1000}},
        {"op": "budget.set", "id": 4, "budget": {"name": "b", "period": "daily", "limit_usd": 1, "policy": "hard"}},
        {"op": "check", "id": 5, "estimate": {"component": "h", "model": "gpt-4o", "input_tokens": 10}},
        {"op": "prices.get", "id": 6, "model": "openai/gpt-4o"},
        {"op": "budget.get", "id": 7, "name": "missing"},
        {"op": "record", "id": 8, "usage": {"component": "h", "model": "gpt-4o", "input_tokens": -1}},
        {"op": "explode", "id": 9},
    ]
    over_http = [http.post("/rpc", json=f) for f in frames]
    assert [r.status_code for r in over_http] == [200, 200, 200, 200, 200, 200, 404, 400, 404]
    http_answers = [r.json() for r in over_http]
    assert http_answers[2]["result"]["duplicate"] is True
    with RawConn(d.socket) as sock:
        for frame, via_http in zip(frames, http_answers):
            via_socket = sock.call(frame)
            if frame["op"] in ("ping", "prices.get", "budget.get") or not via_socket["ok"]:
                assert via_socket == via_http, frame["op"]
    assert sock and http.post("/rpc", content=b"not json").json()["error"]["code"] == "bad_frame"
    assert http.post("/rpc", json={"op": "subscribe", "id": 1, "topics": ["usage"]}).status_code == 400


def test_rest_faces(web):
    _, http = web
    r = http.post("/usage", json={"component": "rest", "model": "gpt-4o", "input_tokens": 1000},
                  headers={"Idempotency-Key": "once"})
    assert r.status_code == 200 and r.json()["cost_usd"] == 0.0025
    again = http.post("/usage", json={"component": "rest", "model": "gpt-4o", "input_tokens": 1000},
                      headers={"Idempotency-Key": "once"})
    assert again.json()["duplicate"] is True
    listed = http.get("/usage", params={"component": "rest", "limit": "5"}).json()
    assert len(listed["records"]) == 1
    put = http.put("/budgets/team", json={"period": "daily", "limit_usd": 0.01, "policy": "hard",
                                          "scope": {"component": "*"}})
    assert put.status_code == 200 and put.json()["budget"]["name"] == "team"
    assert http.get("/budgets").json()["budgets"][0]["name"] == "team"
    state = http.get("/budgets/team").json()["states"][0]
    assert state["key"] == {"component": "rest"} and state["spent_usd"] == 0.0025
    check = http.post("/check", json={"component": "rest", "model": "gpt-4o", "input_tokens": 10_000}).json()
    assert check["allowed"] is False and check["action"] == "deny"
    hold = http.post("/reservations", json={"estimate": {"component": "rest", "model": "gpt-4o-mini",
                                                         "input_tokens": 100}}).json()
    assert hold["allowed"] and hold["reservation_id"]
    done = http.post(f"/reservations/{hold['reservation_id']}/commit", json={"input_tokens": 90}).json()
    assert done["record_id"] and not done["duplicate"]
    assert http.delete(f"/reservations/{hold['reservation_id']}").json() == {"released": False, "count": 0}
    route = http.post("/route", json={"estimate": {"component": "x", "model": "gpt-4o", "input_tokens": 10,
                                                    "max_output_tokens": 10}})
    assert route.json()["choice"] == "gpt-4o"
    assert http.get("/prices", params={"search": "claude", "limit": "2"}).json()["total"] >= 3
    assert http.get("/prices/claude-sonnet-4-5").json()["price"]["input_per_mtok"] == 3.0
    assert http.get("/status").json()["totals"]["requests"] == 2
    assert http.get("/alerts", params={"unacked": "true"}).status_code == 200
    assert http.delete("/budgets/team").json() == {"deleted": True}
    assert http.get("/budgets/team").status_code == 404


def test_bad_requests_get_clear_errors(web):
    d, http = web
    cases = [
        (http.post("/usage", content=b"{not json"), 400, "bad_frame"),
        (http.post("/usage", json=[1, 2]), 400, "bad_frame"),
        (http.post("/usage", json={"component": "x"}), 400, "invalid"),
        (http.post("/usage", content=b"x" * (2 << 20)), 413, "frame_too_large"),
        (http.get("/usage", params={"limit": "lots"}), 400, "invalid"),
        (http.get("/nowhere"), 404, "not_found"),
        (http.delete("/status"), 405, "invalid"),
        (http.put("/budgets/a", json={"name": "b", "period": "daily", "policy": "ignore"}), 400, "invalid"),
        (http.get("/prices/no-such-model"), 404, "not_found"),
        (http.post("/usage", content=b"<usage/>", headers={"Content-Type": "application/xml"}), 415, "invalid"),
        (http.post("/rpc", content=b"op=ping", headers={"Content-Type": "multipart/form-data"}), 415, "invalid"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["ok"] is False and response.json()["error"]["code"] == code
    assert httpx.get(d.url + "/health").json() == {"ok": True}
    assert httpx.get(d.url + "/ready").json()["ready"] is True
    assert http.get("/status").status_code == 200  # still serving


def test_without_tokens_http_stays_on_loopback(make_daemon):
    d = make_daemon(f'[http]\nlisten = "0.0.0.0:{free_port()}"\n', start=False, http="config")
    d.start(wait=False)
    assert d.proc.wait(30) == 1
    log = d.log.read_text()
    assert "loopback only" in log and "Traceback" not in log


TOKENS = """
[[http.tokens]]
token = "tok-read"
role = "read"
[[http.tokens]]
token = "tok-write"
role = "write"
[[http.tokens]]
token = "tok-rhetor"
role = "write"
components = ["rhetor"]
[[http.tokens]]
token_env = "TEST_BUDGET_ADMIN_TOKEN"
role = "admin"
"""


def test_tokens_roles_and_components(make_daemon, monkeypatch):
    monkeypatch.setenv("TEST_BUDGET_ADMIN_TOKEN", "tok-admin")
    d = make_daemon(TOKENS, http=True)
    usage = {"component": "rhetor", "model": "gpt-4o", "input_tokens": 10}
    calls = {
        "read": ("GET", "/status", None),
        "write": ("POST", "/usage", usage),
        "admin": ("PUT", "/budgets/x", {"period": "daily", "limit_usd": 1, "policy": "warn"}),
    }
    expected = {  # token -> the needs it may reach
        None: set(), "wrong": set(), "tok-read": {"read"}, "tok-write": {"read", "write"},
        "tok-rhetor": {"read", "write"}, "tok-admin": {"read", "write", "admin"},
    }
    with httpx.Client(base_url=d.url + "/api/v1", timeout=30) as http:
        for token, allowed in expected.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for need, (method, path, body) in calls.items():
                r = http.request(method, path, json=body, headers=headers)
                if need in allowed:
                    assert r.status_code == 200, (token, need, r.text)
                else:
                    want = 401 if token in (None, "wrong") else 403
                    assert r.status_code == want, (token, need, r.text)
                    assert r.json()["error"]["code"] == ("unauthorized" if want == 401 else "forbidden")
        other = http.post("/usage", json={**usage, "component": "apollo"}, headers={"Authorization": "Bearer tok-rhetor"})
        assert other.status_code == 403 and "apollo" in other.json()["error"]["message"]
        rpc = http.post("/rpc", json={"op": "record", "id": 1, "usage": {**usage, "component": "apollo"}},
                        headers={"Authorization": "Bearer tok-rhetor"})
        assert rpc.status_code == 403 and rpc.json()["id"] == 1
        assert httpx.get(d.url + "/health").status_code == 200  # health needs no token


def test_server_sent_events_stream_and_resume(web):
    d, http = web

    def read_events(response, n):
        events, current = [], {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                    current = {}
                    if len(events) == n:
                        return events
                continue
            field, _, value = line.partition(": ")
            current[field] = value
        return events

    with httpx.Client(base_url=d.url + "/api/v1", timeout=30) as stream_client:
        with stream_client.stream("GET", "/events", params={"topics": "usage"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for i in range(3):
                http.post("/usage", json={"component": "sse", "model": "gpt-4o", "input_tokens": 10 + i})
            events = read_events(response, 3)
    assert [e["event"] for e in events] == ["usage.recorded"] * 3
    assert [json.loads(e["data"])["input_tokens"] for e in events] == [10, 11, 12]
    first = int(events[0]["id"])
    with httpx.Client(base_url=d.url + "/api/v1", timeout=30) as stream_client:
        with stream_client.stream("GET", "/events", params={"topics": "usage"},
                                  headers={"Last-Event-ID": str(first)}) as response:
            resumed = read_events(response, 2)
    assert [int(e["id"]) for e in resumed] == [int(events[1]["id"]), int(events[2]["id"])]
    assert http.get("/events", params={"topics": "gossip"}).status_code == 400
    for bad in ("abc", "1e3", "-1", "9" * 40):  # blamed on the header, not on `after`
        refused = http.get("/events", params={"topics": "usage"}, headers={"Last-Event-ID": bad})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["field"] == "Last-Event-ID" and "Last-Event-ID header" in error["message"]


def test_metrics_count_both_doors(web):
    d, http = web
    http.post("/usage", json={"component": "m", "model": "gpt-4o", "input_tokens": 1000})
    http.post("/usage", json={"component": "m"})
    with RawConn(d.socket) as sock:
        sock.call({"op": "ping", "id": 1})
        sock.call({"op": "reserve", "id": 2, "estimate": {"component": "m", "model": "gpt-4o", "input_tokens": 5}})
    http.put("/budgets/mb", json={"period": "daily", "limit_usd": 1, "policy": "warn"})
    http.post("/usage", json={"component": "m", "model": "gpt-4o", "input_tokens": 1000})
    text = httpx.get(d.url + "/metrics").text
    lines = set(text.splitlines())
    assert 'budgetd_requests_total{op="record",outcome="ok"} 2' in lines
    assert 'budgetd_requests_total{op="record",outcome="invalid"} 1' in lines
    pings = next(line for line in lines if line.startswith('budgetd_requests_total{op="ping",outcome="ok"}'))
    assert int(pings.split()[-1]) >= 1  # the harness pings too, while it waits for the daemon
    assert 'budgetd_requests_total{op="reserve",outcome="ok"} 1' in lines
    assert 'budgetd_request_seconds_count{op="record"} 3' in lines
    assert "budgetd_records_total 2" in lines and "budgetd_reservations_open 1" in lines
    assert 'budgetd_budget_spent_usd{budget="mb",key=""} 0.005000000' in lines  # counted from the ledger, then charged
    assert any(line.startswith('budgetd_mailbox_depth{actor="ledger"}') for line in lines)
    assert any(line.startswith('budgetd_price_age_seconds{source="litellm_bundled"}') for line in lines)


def test_openapi_document_covers_every_route(web):
    d, http = web
    doc = httpx.get(d.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for method, path, kind, _, body in __import__("budgetd.server.http", fromlist=["REST"]).REST:
        entry = doc["paths"][path.replace(":path", "").replace(":int", "")][method.lower()]
        assert "200" in entry["responses"] and "default" in entry["responses"]
        if body is not None:
            ref = entry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in doc["components"]["schemas"]
    usage = doc["components"]["schemas"]["Usage"]
    assert set(usage["required"]) == {"component", "model"}
    assert usage["properties"]["input_tokens"]["minimum"] == 0


def test_fuzzing_every_route_never_gets_a_5xx(web):
    import random

    from budgetd.server.http import REST

    d, _ = web
    http = httpx.Client(base_url=d.url, timeout=30)  # REST paths are absolute
    rng = random.Random(7)
    junk = [None, True, -1, 0, 1e308, "", "x" * 300, [], {}, {"component": None}, [1, {"a": []}],
            {"component": "c", "model": "m", "input_tokens": 2**70}, {"estimate": "no"},
            {"period": "never", "policy": "hard"}, "\u0000\ud800"]

    def body() -> bytes | None:
        pick = rng.random()
        if pick < 0.2:
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        if pick < 0.3:
            return None
        value = rng.choice(junk)
        if isinstance(value, dict) and rng.random() < 0.5:
            value = {**value, rng.choice(["input_tokens", "ttl_s", "limit_usd", "usage", "name"]):
                     rng.choice(junk)}
        return json.dumps(value).encode(errors="surrogatepass") if value is not None else b"null"

    statuses = []
    for _ in range(6):
        for method, path, *_ in REST:
            concrete = (path.replace("{reservation_id}", rng.choice(["r-1", "%00", "x" * 200]))
                        .replace("{name}", rng.choice(["ok-name", "Bad Name", "-"]))
                        .replace("{model:path}", rng.choice(["gpt-4o", "a/b/c", "%ff"]))
                        .replace("{alert_id:int}", str(rng.choice([1, 0, 99999]))))
            params = {rng.choice(["limit", "since", "component", "after", "unacked", "search"]):
                      rng.choice(["-1", "abc", "2026-13-45", "10", "true", "\u00e9"])} if rng.random() < 0.5 else {}
            r = http.request(method, concrete, content=body(), params=params)
            statuses.append(r.status_code)
            assert r.status_code < 500, (method, concrete, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["ok"] is False
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert http.get("/api/v1/status").status_code == 200  # still serving
    http.close()


@pytest.mark.anyio
async def test_the_client_library_over_http(make_daemon):
    from budgetd.client import BudgetClient, BudgetError, SyncBudgetClient

    d = make_daemon(TOKENS.replace("token_env = \"TEST_BUDGET_ADMIN_TOKEN\"", 'token = "tok-admin"'), http=True)
    with SyncBudgetClient(d.url, token="tok-rhetor") as c:
        r = c.record(component="rhetor", model="gpt-4o", input_tokens=1000)
        assert r.cost_usd == 0.0025
        with pytest.raises(BudgetError) as info:
            c.record(component="apollo", model="gpt-4o", input_tokens=1)
        assert info.value.code == "forbidden"
        with c.guard(component="rhetor", model="gpt-4o-mini", input_tokens=100) as g:
            g.used(input_tokens=80)
        assert g.recorded.record_id
    async with BudgetClient(d.url, token="tok-admin") as c:
        await c.budget_set(name="over-http", period="daily", limit_usd=1, policy="hard")
        assert (await c.status()).totals.requests == 2
        assert [b.name for b in await c.budget_list()] == ["over-http"]
    with SyncBudgetClient(d.url) as anonymous:
        with pytest.raises(BudgetError) as info:
            anonymous.status()
        assert info.value.code == "unauthorized"


def test_every_op_is_reachable_on_both_doors_with_the_same_answer(web):
    """Both doors dispatch through one table: the same request gets the same answer (ids aside)."""
    from budgetd.protocol import OPS

    d, http = web
    http.put("/budgets/parity", json={"period": "daily", "limit_usd": 5, "policy": "hard"})
    estimate = {"component": "p", "model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 10}
    requests = {
        "hello": {}, "ping": {}, "status": {}, "check": {"estimate": estimate},
        "reserve": {"estimate": estimate}, "release": {"reservation_id": "r-none"},
        "commit": {"reservation_id": "r-none", "usage": {"component": "p", "model": "gpt-4o", "input_tokens": 1}},
        "record": {"usage": {"component": "p", "model": "gpt-4o", "input_tokens": 1}},
        "budget.set": {"budget": {"name": "b2", "period": "weekly", "limit_tokens": 10, "policy": "warn"}},
        "budget.get": {"name": "parity"}, "budget.list": {}, "budget.delete": {"name": "nope"},
        "report": {"group_by": ["component"]}, "usage.list": {"limit": 1}, "prices.get": {"model": "gpt-4o"},
        "prices.list": {"search": "claude"}, "prices.refresh": {}, "prices.history": {"model": "gpt-4o"},
        "prices.set": {"price": {"model": "house-model", "input_per_mtok": 1, "output_per_mtok": 2}},
        "prices.unset": {"model": "never-set"}, "route": {"estimate": estimate},
        "alerts.list": {}, "alerts.ack": {"alert_id": 123456}, "subscribe": {"topics": ["usage"]},
        "ask": {"question": "why?"}, "backup": {"path": "relative.db"}, "fleet.status": {},
    }
    assert set(requests) == set(OPS), "a new op needs a line here"
    volatile = {"record_id", "reservation_id", "expires_at", "ts", "uptime_s", "updated_at", "effective_from",
                "window_start", "window_end", "recorded_at", "spent_usd", "spent_tokens", "reserved_usd",
                "reserved_tokens", "used_fraction", "status", "budgets", "totals", "actors", "version",
                "last_success", "versions", "records", "next", "decision", "price", "duplicate", "daemon",
                "forecasts", "since", "until",
                # projections at the instant of each call: they move between the two calls
                "budgets_at_risk", "recommendations", "answer"}

    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return value

    with RawConn(d.socket) as sock:
        for op, fields in requests.items():
            frame = {"op": op, "id": 1, **fields}
            via_socket = sock.call(frame)
            if op == "subscribe":  # streams on the socket; HTTP has GET /events for it
                assert via_socket["ok"]
                sock.close()
                sock = RawConn(d.socket)
                assert http.post("/rpc", json=frame).json()["error"]["code"] == "invalid"
                continue
            via_http = http.post("/rpc", json=frame).json()
            assert via_socket["ok"] == via_http["ok"], (op, via_socket, via_http)
            if via_socket["ok"]:
                assert shape(via_socket["result"]) == shape(via_http["result"]), op
                if op == "ask":  # the same advice, though its projected figures moved on
                    kinds = [[r["kind"] for r in v["result"]["facts"]["recommendations"]] for v in (via_socket,
                                                                                                     via_http)]
                    assert kinds[0] == kinds[1]
            else:
                assert via_socket["error"]["code"] == via_http["error"]["code"], op
