"""Alerts through real doors, delivered to a real webhook receiver on 127.0.0.1."""

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli

from budgetd.client import SyncBudgetClient

SECRET = "s3cret-for-tests"


class Receiver:
    """Records every POST; fails the first `fail_first` ones (500s, then a hang past the timeout)."""

    def __init__(self, fail_first: int = 0, hang: float = 0.0) -> None:
        self.received: list[tuple[dict, bytes, dict]] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.hang = hang
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    if receiver.hang and receiver.attempts == receiver.fail_first:
                        time.sleep(receiver.hang)
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append((json.loads(body), body, dict(self.headers)))
                self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait(self, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


MORNING = dt.datetime(2026, 6, 16, 8, 0, tzinfo=dt.timezone.utc)


def config_with(url: str, kinds: str = "") -> str:
    return (f'[[alerts.webhooks]]\nurl = "{url}"\nsecret = "{SECRET}"\nattempts = 4\ntimeout = "1s"\n'
            + (f"kinds = {kinds}\n" if kinds else ""))


def wait_alerts(client, n: int, timeout: float = 10.0, **kw) -> list:
    deadline = time.monotonic() + timeout
    while True:
        alerts = client.alerts_list(**kw)
        if len(alerts) >= n or time.monotonic() > deadline:
            return alerts
        time.sleep(0.05)


def test_one_record_crossing_several_thresholds_fires_each_once_and_signs_the_webhook(make_daemon):
    receiver = Receiver(fail_first=2, hang=1.5)  # a 500, then a hang past the 1 s timeout, then success
    try:
        # Morning, by the daemon's clock: late in the evening, the last hour's rate no longer reaches the limit
        # before the day ends, and no projection fires.
        d = make_daemon(config_with(receiver.url, '["threshold", "limit_exceeded"]'), clock=MORNING)
        with SyncBudgetClient(d.socket) as c:
            c.budget_set(name="team", period="daily", limit_usd=1.0, policy="warn", scope={"component": "*"})
            c.record(component="a", model="gpt-4o", input_tokens=200_000)            # $0.50: the 50% threshold
            c.record(component="a", model="gpt-4o", input_tokens=240_000)            # $1.10: 80%, 100%, over
            alerts = wait_alerts(c, 5)
            kinds = sorted((a.kind, a.data.get("threshold")) for a in alerts)
            # $0.50 in a moment also projects the limit long before the day ends
            assert kinds == [("limit_exceeded", None), ("projected_exhaustion", None), ("threshold", 0.5),
                             ("threshold", 0.8), ("threshold", 1.0)]
            assert all(a.budget == "team" and a.key == {"component": "a"} for a in alerts)
            assert all(a.window_start is not None for a in alerts)
            c.record(component="a", model="gpt-4o", input_tokens=1000)               # nothing new crossed
            time.sleep(0.3)
            assert len(c.alerts_list(limit=100)) == 5
        got = receiver.wait(4)
        assert sorted(body["kind"] for body, _, _ in got) == ["limit_exceeded", "threshold", "threshold", "threshold"]
        assert len({body["id"] for body, _, _ in got}) == 4  # each alert arrived once
        for body, raw, headers in got:
            stamp = headers["X-Budgetd-Timestamp"]
            expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
            assert headers["X-Budgetd-Signature"] == expected
        assert receiver.attempts == 6  # two failures, then one delivery each
    finally:
        receiver.close()


def test_no_repeated_alerts_after_a_restart(make_daemon):
    d = make_daemon(clock=MORNING)  # (the projection needs most of the day ahead, as above)
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="g", period="daily", limit_tokens=1000, policy="hard")
        c.record(component="a", model="gpt-4o", input_tokens=600)
        assert sorted(a.kind for a in wait_alerts(c, 2)) == ["projected_exhaustion", "threshold"]
    d.stop()
    d.start()
    with SyncBudgetClient(d.socket) as c:
        c.record(component="a", model="gpt-4o", input_tokens=10)   # still between 50% and 80%
        c.record(component="a", model="gpt-4o", input_tokens=250)  # 86%: the 80% threshold, once
        wait_alerts(c, 3)
        time.sleep(0.3)
        alerts = c.alerts_list()
        assert sorted(a.data["threshold"] for a in alerts if a.kind == "threshold") == [0.5, 0.8]
        assert len(alerts) == 3  # and one projection for the window, from before the restart


def test_denials_are_rate_limited_and_alerts_can_be_acknowledged(make_daemon):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="cap", period="daily", limit_usd=0.001, policy="hard", critical_bypass=True)
        for _ in range(5):
            assert not c.check(component="x", model="gpt-4o", input_tokens=100_000).allowed
        bypass = c.reserve(component="x", model="gpt-4o", input_tokens=100_000, priority=10)
        assert bypass.allowed
        alerts = wait_alerts(c, 2)
        time.sleep(0.3)
        kinds = sorted(a.kind for a in c.alerts_list())
        assert kinds == ["critical_bypass", "denied"]
        denied = next(a for a in alerts if a.kind == "denied")
        assert "cap" in denied.message and denied.severity == "warning"
        assert c.alerts_ack(denied.id, by="ops") is True
        assert c.alerts_ack(denied.id, by="ops") is False
        assert [a.kind for a in c.alerts_list(unacked=True)] == ["critical_bypass"]
        acked = next(a for a in c.alerts_list() if a.id == denied.id)
        assert acked.acked and acked.acked_by == "ops" and acked.acked_at is not None
    r = run_cli("alerts", socket=d.socket)
    assert r.returncode == 0 and "critical_bypass" in r.stdout and "denied" not in r.stdout
    r = run_cli("alerts", "--all", socket=d.socket)
    assert "denied" in r.stdout and "ops" in r.stdout
    r = run_cli("alerts", "ack", "999", socket=d.socket)
    assert r.returncode == 1 and r.stderr == "budget: no alert 999; see `budget alerts --all` for their ids\n", r
    r = run_cli("alerts", "ack", str(denied.id), socket=d.socket)  # again: done already, not a failure
    assert r.returncode == 0 and r.stdout == f"alert {denied.id} was acknowledged before\n", r


def test_a_dead_webhook_does_not_slow_recording(make_daemon):
    d = make_daemon(config_with("http://127.0.0.1:9/never"))  # nothing listens
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="tiny", period="hourly", limit_tokens=10, policy="warn", scope={"component": "*"})
        start = time.perf_counter()
        for i in range(200):
            c.record(component=f"c{i}", model="gpt-4o-mini", input_tokens=20)  # each crosses all thresholds
        elapsed = time.perf_counter() - start
        alerts = wait_alerts(c, 800, timeout=120, limit=2000)  # the alerter may lag on a loaded machine
        assert len(alerts) == 800  # 3 thresholds + over, for each of 200 components (over at once: no projection)
    # recording never waited for the webhook: far below one delivery timeout per record
    assert elapsed < 20, elapsed


@pytest.mark.parametrize("kinds,expected", [('["price_held"]', 0), ('["threshold"]', 1)])
def test_webhook_kinds_filter(make_daemon, kinds, expected):
    receiver = Receiver()
    try:
        d = make_daemon(config_with(receiver.url, kinds))
        with SyncBudgetClient(d.socket) as c:
            c.budget_set(name="b", period="daily", limit_tokens=100, policy="warn", thresholds=[0.5])
            c.record(component="a", model="gpt-4o", input_tokens=60)
            wait_alerts(c, 1)
        time.sleep(1.0)
        assert len(receiver.received) == expected
    finally:
        receiver.close()


def test_unpriced_models_and_follow(make_daemon):
    import subprocess
    import sys

    d = make_daemon()
    follow = subprocess.Popen([sys.executable, "-m", "budgetd", "alerts", "--follow", "--socket", str(d.socket)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        with SyncBudgetClient(d.socket) as c:
            c.record(component="a", model="mystery-llm-1", input_tokens=10)
            c.record(component="a", model="mystery-llm-1", input_tokens=10)  # once a day per model
            wait_alerts(c, 1)
            time.sleep(0.3)
            assert [a.kind for a in c.alerts_list()] == ["unpriced_model"]
        line = follow.stdout.readline()
        while line and "unpriced_model" not in line:
            line = follow.stdout.readline()
        assert "mystery-llm-1" in line
    finally:
        follow.terminate()
        follow.wait(10)


def test_projected_exhaustion_and_anomaly_judge_only_the_current_window(make_daemon):
    midnight = dt.datetime(2026, 6, 16, tzinfo=dt.timezone.utc)
    d = make_daemon(clock=midnight + dt.timedelta(minutes=58))
    now = d.now()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="burn", period="daily", limit_usd=1.0, policy="warn", scope={"component": "fast"},
                     thresholds=[1.0])
        c.budget_set(name="steady", period="monthly", limit_usd=1000.0, policy="warn", scope={"component": "slow"})
        c.budget_set(name="past", period="daily", limit_usd=1.0, policy="warn", scope={"component": "import"},
                     thresholds=[1.0])
        # An import of yesterday's rows: $0.50 within one hour of a closed window says nothing of today's.
        for minutes in (10, 20, 30, 40, 50):
            c.record(component="import", model="gpt-4o", input_tokens=40_000,
                     ts=midnight - dt.timedelta(hours=3, minutes=minutes))
        # "fast" burns $0.11 in the last hour: at that rate it reaches $1 long before midnight
        c.record(component="fast", model="gpt-4o", input_tokens=40_000, ts=now - dt.timedelta(minutes=8))
        c.record(component="fast", model="gpt-4o", input_tokens=4_000, ts=now - dt.timedelta(minutes=3))
        # "slow" spent $0.01 an hour for the day before the last hour, then $0.10 within it
        for h in range(24):
            c.record(component="slow", model="gpt-4o", input_tokens=4_000,
                     ts=now - dt.timedelta(hours=24 - h, minutes=50))
        c.record(component="slow", model="gpt-4o", input_tokens=40_000, ts=now - dt.timedelta(minutes=28))
        alerts = wait_alerts(c, 2)
        time.sleep(0.3)
        alerts = c.alerts_list()
        forecasts = {f.budget: f for f in c.status().forecasts}
    by_kind = {a.kind: a for a in alerts}
    assert sorted(by_kind) == ["anomaly", "projected_exhaustion"], [a.message for a in alerts]
    projected = by_kind["projected_exhaustion"]
    assert projected.budget == "burn" and projected.window_start == midnight
    projected_at = dt.datetime.fromisoformat(projected.data["projected_at"])
    assert now < projected_at < midnight + dt.timedelta(days=1)
    assert "at the last hour's burn rate" in projected.message
    anomaly = by_kind["anomaly"]
    assert anomaly.budget == "steady" and anomaly.data["last_hour"] == 0.1
    assert abs(anomaly.data["hourly_average"] - 0.01) < 1e-9
    # The imported budget's forecast is of today's window, which has no spend yet.
    assert forecasts["past"].window_end == midnight + dt.timedelta(days=1) and forecasts["past"].spent_usd == 0
    assert forecasts["past"].exhausted_at is None
