"""Fetching a price feed over HTTP: timeouts, retries with backoff, conditional requests, a size cap.

A feed is small (a few MB at most); anything larger, slower, or not JSON is a
failed fetch with a message that says which.
"""

from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import msgspec

from budgetd.backoff import Backoff

MAX_BYTES = 20 << 20
TIMEOUT_S = 20.0
RETRIES = 2


class SourceError(Exception):
    """A feed could not be fetched or read; the message is for the operator."""


@dataclass
class Fetched:
    data: Any  # decoded JSON, which may be `null`: only `not_modified` says the server answered 304
    etag: str | None
    last_modified: str | None
    not_modified: bool = False  # the server said 304: the copy the client kept is current


async def fetch_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT_S,
    retries: int = RETRIES,
    backoff: float = 0.5,
) -> Fetched:
    headers = {"Accept": "application/json"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    error = "no attempt made"
    delays = Backoff(first=backoff, cap=60.0)
    for attempt in range(retries + 1):
        if attempt:
            await anyio.sleep(delays.next())
        try:
            with anyio.fail_after(timeout):
                return await _once(client, url, headers, max_bytes)
        except TimeoutError:
            error = f"{url}: no complete answer within {timeout:g}s"
        except httpx.HTTPError as exc:
            error = f"{url}: {type(exc).__name__}: {exc}"
        except _Retryable as exc:
            error = str(exc)
    raise SourceError(error + f" (after {retries + 1} attempts)")


class _Retryable(Exception):
    pass


async def _once(client: httpx.AsyncClient, url: str, headers: dict[str, str], max_bytes: int) -> Fetched:
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 304:
            return Fetched(None, response.headers.get("etag"), response.headers.get("last-modified"), not_modified=True)
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"{url}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise SourceError(f"{url}: HTTP {response.status_code}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise SourceError(f"{url}: body of {int(declared):,} bytes is over the {max_bytes:,}-byte cap")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise SourceError(f"{url}: body is over the {max_bytes:,}-byte cap; refused")
    try:
        data = msgspec.json.decode(bytes(body))
    except msgspec.DecodeError as exc:
        start = bytes(body[:40]).decode("utf-8", "replace").strip()
        kind = "HTML" if start.lower().startswith(("<!doctype", "<html")) else "not JSON"
        raise SourceError(f"{url}: the body is {kind} ({exc}); starts with {start!r}") from None
    except RecursionError:  # msgspec decodes nested arrays and objects by recursion
        raise SourceError(f"{url}: the body is JSON nested too deeply to read") from None
    return Fetched(data, response.headers.get("etag"), response.headers.get("last-modified"))

