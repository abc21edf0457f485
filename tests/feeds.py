"""A real HTTP server on 127.0.0.1 serving price feeds that a test can change, break or slow down."""

import copy
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


class Route:
    def __init__(self, body: bytes, status: int = 200, delay: float = 0.0, content_type: str = "application/json",
                 stream_bytes: int = 0) -> None:
        self.body = body
        self.status = status
        self.delay = delay
        self.content_type = content_type
        self.stream_bytes = stream_bytes  # serve this many bytes of padding instead of `body`
        self.etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'


class FeedServer:
    """Serves /litellm.json, /llm-prices.json and /openrouter.json from the fixtures, editable per test."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.not_modified: dict[str, int] = {}
        self.data = {
            "litellm": json.loads((FIXTURES / "litellm_prices.json").read_text()),
            "llm_prices": json.loads((FIXTURES / "llm_prices_current.json").read_text()),
            "openrouter": json.loads((FIXTURES / "openrouter_models.json").read_text()),
        }
        self.paths = {"litellm": "/litellm.json", "llm_prices": "/llm-prices.json", "openrouter": "/openrouter.json"}
        for name in self.data:
            self.publish(name)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                route = server.routes.get(self.path)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    time.sleep(route.delay)
                if route.status == 200 and not route.stream_bytes and self.headers.get("If-None-Match") == route.etag:
                    server.not_modified[self.path] = server.not_modified.get(self.path, 0) + 1
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("ETag", route.etag)
                if route.stream_bytes:
                    self.end_headers()  # no length: the client must cap what it reads
                    chunk = b" " * 65536
                    sent = 0
                    try:
                        while sent < route.stream_bytes:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FeedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return self.base + self.paths[name]

    def publish(self, name: str, data=None) -> None:
        if data is not None:
            self.data[name] = data
        self.routes[self.paths[name]] = Route(json.dumps(self.data[name]).encode())

    def edit(self, name: str):
        """A deep copy of a feed's data, to change and `publish`."""
        return copy.deepcopy(self.data[name])

    def break_(self, name: str, route: Route) -> None:
        self.routes[self.paths[name]] = route

    def config(self, **extra: str) -> str:
        lines = [
            "[pricing]",
            'sources = ["litellm_bundled", "litellm", "llm_prices", "openrouter"]',
            'primary = "litellm"',
            'refresh_interval = "1h"',
            'fetch_timeout = "2s"',
            "retries = 0",
        ]
        lines += [f"{k} = {v}" for k, v in extra.items()]
        lines += ["[pricing.urls]"] + [f'{name} = "{self.url(name)}"' for name in self.paths]
        return "\n".join(lines) + "\n"


def litellm_price(data: dict, model: str, input_per_token: float | None = None,
                  output_per_token: float | None = None) -> None:
    if input_per_token is not None:
        data[model]["input_cost_per_token"] = input_per_token
    if output_per_token is not None:
        data[model]["output_cost_per_token"] = output_per_token


def llm_prices_price(data: dict, model: str, input_per_mtok: float, output_per_mtok: float | None = None) -> None:
    for item in data["prices"]:
        if item["id"] == model:
            item["input"] = input_per_mtok
            if output_per_mtok is not None:
                item["output"] = output_per_mtok
            return
    raise KeyError(model)


def openrouter_price(data: dict, model_id: str, **per_token: float) -> None:
    """Set pricing fields (`prompt`, `completion`, `input_cache_read`, ...) of `model_id`, in USD per token."""
    for item in data["data"]:
        if item["id"] == model_id:
            item["pricing"].update({name: str(value) for name, value in per_token.items()})
            return
    raise KeyError(model_id)


def llm_prices_row(data: dict, model_id: str, vendor: str, input_per_mtok: float, output_per_mtok: float,
                   cached_per_mtok: float | None = None, name: str | None = None) -> None:
    """Add a row to an llm-prices feed."""
    data["prices"].append({"id": model_id, "vendor": vendor, "name": name or model_id, "input": input_per_mtok,
                           "output": output_per_mtok, "input_cached": cached_per_mtok})


def openrouter_model(data: dict, model_id: str, context_length: int = 128_000, **pricing: str) -> None:
    """Add a model to an OpenRouter feed; `pricing` as OpenRouter writes it (USD per token, strings; "-1" for no
    fixed price)."""
    data["data"].append({"id": model_id, "name": model_id, "context_length": context_length, "pricing": pricing,
                         "top_provider": {"context_length": context_length}, "supported_parameters": []})


def report_of(report, source):
    """A refresh report's row for `source`."""
    return next(s for s in report.sources if s.source == source)

