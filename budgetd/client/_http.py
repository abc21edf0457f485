"""The HTTP door: each request is one POST /api/v1/rpc, its answer the same envelope as on the socket."""

import os
from pathlib import Path
from typing import Any

import anyio
import msgspec

from budgetd.client._errors import Disconnected
from budgetd.protocol import OpError, Response, decode_response

RPC_PATH = "/api/v1/rpc"


def http_url(target: str | Path | None) -> str | None:
    """The daemon's URL when the client was given one instead of a socket path."""
    text = str(target) if target is not None else ""
    return text.rstrip("/") if text.startswith(("http://", "https://")) else None


def http_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    token = token or os.environ.get("BUDGETD_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _envelope(url: str, status: int, body: bytes) -> Response:
    try:
        return decode_response(body)
    except msgspec.DecodeError:
        raise OpError("unavailable", f"{url} answered HTTP {status} without an envelope") from None


class HttpTransport:
    """Blocking, on a kept-alive connection of the standard library's http.client (light to import)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self._headers = headers
        self._connection: Any = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def roundtrip(self, line: bytes, request_id: int, timeout: float) -> Response:
        import http.client  # only a client given a URL needs it
        import urllib.parse

        if self._connection is None:
            parts = urllib.parse.urlsplit(self.url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._connection = kind(parts.hostname, parts.port, timeout=timeout)
        self._connection.timeout = timeout
        try:
            self._connection.request("POST", RPC_PATH, body=line, headers=self._headers)
            answer = self._connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Disconnected(str(exc) or type(exc).__name__) from None
        return _envelope(self.url, answer.status, body)


class AsyncHttpTransport:
    """Async, with httpx (imported with the first request, so that a socket client never loads it)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self._headers = headers
        self._client: Any = None

    async def __aenter__(self) -> "AsyncHttpTransport":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        with anyio.CancelScope(shield=True):  # closing must finish even when we are being cancelled
            await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def roundtrip(self, line: bytes, request_id: int, timeout: float) -> Response:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers)
        try:
            answer = await self._client.post(RPC_PATH, content=line, timeout=timeout)
        except httpx.TimeoutException:
            raise OpError("busy", f"no answer from budgetd within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Disconnected(str(exc) or type(exc).__name__) from None
        return _envelope(self.url, answer.status_code, answer.content)
