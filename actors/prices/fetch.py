"""Fetching the price feeds: every network source at once, then the bundled file; never raises."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors.prices.rules import Fetch, Rules
from actors.sources import litellm, litellm_bundled, llm_prices, openrouter
from budgetd.pricing import TierRules

log = logging.getLogger("budgetd.prices")

DEFAULT_URLS = {litellm.NAME: litellm.URL, llm_prices.NAME: llm_prices.URL, openrouter.NAME: openrouter.URL}
NETWORK_SOURCES = {litellm.NAME: litellm.parse_feed, llm_prices.NAME: llm_prices.parse,
                   openrouter.NAME: openrouter.parse}

Validator = tuple[str | None, str | None]  # a feed's ETag and Last-Modified, for a conditional request


@dataclass
class PricesSettings:
    sources: list[str]
    urls: dict[str, str]
    rules: Rules
    refresh_interval_s: float
    aliases: dict[str, str]
    overrides: list[Any]  # PriceSpec
    bundled_file: Path | None = None
    fetch_timeout_s: float = 20.0
    max_feed_bytes: int = 20 << 20
    retries: int = 2

    @property
    def fetches_network(self) -> bool:
        return any(s in NETWORK_SOURCES for s in self.sources)


async def fetch_all(settings: PricesSettings, tiers: TierRules,
                    validators: dict[str, Validator]) -> tuple[list[Fetch], dict[str, Validator]]:
    """Every configured feed, fetched at once (each failing alone), then the bundled file; and the
    validators the feeds answered with."""
    import httpx  # only the daemon fetches prices; clients never load httpx

    fetches: list[Fetch] = []
    found: dict[str, Validator] = {}
    names = [s for s in settings.sources if s in NETWORK_SOURCES]
    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=settings.fetch_timeout_s) as client:
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(_fetch_one, settings, tiers, client, name, validators.get(name, (None, None)),
                                  fetches, found)
        if litellm_bundled.NAME in settings.sources:
            fetches.append(await anyio.to_thread.run_sync(read_bundled, settings, tiers))
    except Exception as exc:  # never let a feed take the actor down
        log.exception("price refresh failed")
        fetches.append(Fetch("refresh", None, error=f"{type(exc).__name__}: {exc}"))
    return fetches, found


async def _fetch_one(settings: PricesSettings, tiers: TierRules, client: Any, name: str, validator: Validator,
                     fetches: list[Fetch], found: dict[str, Validator]) -> None:
    from actors.sources.http import SourceError, fetch_json

    url = settings.urls.get(name) or DEFAULT_URLS[name]
    try:
        got = await fetch_json(client, url, etag=validator[0], last_modified=validator[1],
                               max_bytes=settings.max_feed_bytes, timeout=settings.fetch_timeout_s,
                               retries=settings.retries)
    except SourceError as exc:
        fetches.append(Fetch(name, None, error=str(exc)))
        return
    found[name] = (got.etag, got.last_modified)
    if got.data is None:
        fetches.append(Fetch(name, None, not_modified=True))
        return
    try:
        entries, refused = NETWORK_SOURCES[name](got.data, tiers)
    except ValueError as exc:
        fetches.append(Fetch(name, None, error=f"{url}: {exc}"))
        return
    fetches.append(Fetch(name, entries, refused=refused))


def read_bundled(settings: PricesSettings, tiers: TierRules) -> Fetch:
    """The price file inside the installed litellm (or `bundled_file`), read from disk."""
    try:
        entries, refused = litellm_bundled.load(tiers, settings.bundled_file)
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        return Fetch(litellm_bundled.NAME, None, error=str(exc))
    return Fetch(litellm_bundled.NAME, entries, refused=refused)
