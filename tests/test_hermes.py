"""Registration with a Hermes stand-in on 127.0.0.1: register, heartbeat, re-register, unregister."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from budgetd.client import SyncBudgetClient


class HermesStandIn:
    def __init__(self) -> None:
        self.components: dict[str, str] = {}  # component_id -> token
        self.registrations: list[dict] = []
        self.heartbeats = 0
        self.unregistered: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path == "/api/register":
                    n = len(stand_in.registrations) + 1
                    stand_in.registrations.append(body)
                    stand_in.components[f"budget-{n}"] = f"token-{n}"
                    return self.answer(200, {"component_id": f"budget-{n}", "token": f"token-{n}"})
                known = stand_in.components.get(body.get("component_id"))
                if known is None or self.headers.get("X-Authentication-Token") != known:
                    return self.answer(404, {"error": "unknown component"})
                if self.path == "/api/heartbeat":
                    stand_in.heartbeats += 1
                    return self.answer(200, {"ok": True})
                if self.path == "/api/unregister":
                    stand_in.unregistered.append(body["component_id"])
                    return self.answer(200, {"ok": True})
                return self.answer(404, {})

            def answer(self, status: int, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def forget_everyone(self) -> None:
        self.components.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_register_heartbeat_reregister_unregister(make_daemon):
    hermes = HermesStandIn()
    try:
        d = make_daemon(f'[hermes]\nurl = "{hermes.url}"\nheartbeat = "0.2s"\n', http=True)
        assert wait_for(lambda: hermes.registrations)
        registered = hermes.registrations[0]
        assert registered["component"] == "budget" and registered["endpoint"] == d.url
        assert "budget.check" in registered["capabilities"]
        assert wait_for(lambda: hermes.heartbeats >= 2)
        hermes.forget_everyone()  # Hermes restarted and lost its registry
        assert wait_for(lambda: len(hermes.registrations) >= 2)
        d.stop()
        assert hermes.unregistered == [f"budget-{len(hermes.registrations)}"]
    finally:
        hermes.close()


def test_hermes_away_never_blocks_start_up(make_daemon):
    d = make_daemon('[hermes]\nurl = "http://127.0.0.1:9"\nheartbeat = "0.2s"\n')
    with SyncBudgetClient(d.socket) as c:
        assert c.record(component="x", model="gpt-4o", input_tokens=1).record_id == 1
    assert d.stop() == 0
