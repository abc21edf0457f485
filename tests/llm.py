"""A real OpenAI-compatible chat server on 127.0.0.1 for tests: canned answers with a usage block."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    """POST /v1/chat/completions: a canned answer with a usage block; remembers every request.

    `usage` replaces the usage block built from the token counts (for the details OpenAI reports),
    `service_tier` is the tier the response says it was served at."""

    def __init__(self, answer: str = "Rhetor spent the most: $1.20 of $1.45 (the facts say so).",
                 prompt_tokens: int = 1500, completion_tokens: int = 120, cached_tokens: int = 200,
                 usage: dict | None = None, service_tier: str | None = None) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.answer = answer
        usage = usage or {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens,
                          "prompt_tokens_details": {"cached_tokens": cached_tokens}}
        tier = {"service_tier": service_tier} if service_tier else {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if fake.status != 200:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "overloaded", "type": "server_error"}}')
                    return
                if body.get("stream"):
                    self._stream(body)
                    return
                reply = json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1764300000, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": fake.answer}}],
                    "usage": usage, **tier,
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _stream(self, body: dict) -> None:
                """Server-sent chunks; the usage in a last chunk when stream_options.include_usage asks."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1764300000,
                        "model": body["model"], **tier}
                words = fake.answer.split(" ")
                for i, word in enumerate(words):
                    delta = {"content": word + (" " if i < len(words) - 1 else "")}
                    if i == 0:
                        delta["role"] = "assistant"
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(b"data: " + json.dumps(last).encode() + b"\n\n")
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage_chunk = {**base, "choices": [], "usage": usage}
                    self.wfile.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
