"""Fetching the price feeds: every network source at once, then the bundled file; never raises. And reading the
corrections applied after them."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anyio
import msgspec

from actors.prices.rules import Fetch, Rules
from actors.sources import corrections, litellm, litellm_bundled, llm_prices, openrouter
from budgetd.model import PriceEntry
from budgetd.pricing import TierRules

log = logging.getLogger("budgetd.prices")

DEFAULT_URLS = {litellm.NAME: litellm.URL, llm_prices.NAME: llm_prices.URL, openrouter.NAME: openrouter.URL}
NETWORK_SOURCES = {litellm.NAME: litellm.parse_feed, llm_prices.NAME: llm_prices.parse,
                   openrouter.NAME: openrouter.parse}

Validator = tuple[str | None, str | None]  # a feed's ETag and Last-Modified, for a conditional request
_entry_decoder = msgspec.json.Decoder(PriceEntry)


@dataclass
class PricesSettings:
    sources: list[str]
    urls: dict[str, str]
    rules: Rules
    refresh_interval_s: float
    aliases: dict[str, str]
    overrides: list[Any]  # PriceSpec
    bundled_file: Path | None = None
    corrections_file: Path | None = None  # None: the one shipped with budgetd
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
    """One feed; whatever goes wrong with it is its own failed fetch, never the other feeds' or the refresh's."""
    from actors.sources.http import SourceError

    url = settings.urls.get(name) or DEFAULT_URLS[name]
    answered: Validator | None = None
    try:
        fetch, answered = await _fetch_feed(settings, tiers, client, name, url, validator)
    except SourceError as exc:
        fetch = Fetch(name, None, error=str(exc))
    except Exception as exc:
        log.exception("price feed %s failed", name)
        fetch = Fetch(name, None, error=f"{url}: {_reason(exc)}")
    fetches.append(fetch)
    if answered is not None:
        found[name] = answered


async def _fetch_feed(settings: PricesSettings, tiers: TierRules, client: Any, name: str, url: str,
                      validator: Validator) -> tuple[Fetch, Validator | None]:
    """The feed's fetch, and the validator to send next time: only a snapshot's (or a 304's), so a feed
    that failed is downloaded and judged again rather than answered 304 and taken for the last good one."""
    from actors.sources.http import fetch_json

    got = await fetch_json(client, url, etag=validator[0], last_modified=validator[1],
                           max_bytes=settings.max_feed_bytes, timeout=settings.fetch_timeout_s,
                           retries=settings.retries)
    if got.not_modified:
        return Fetch(name, None, not_modified=True), (got.etag, got.last_modified)
    fetch = snapshot(name, url, lambda: NETWORK_SOURCES[name](got.data, tiers))
    return fetch, None if fetch.entries is None else (got.etag, got.last_modified)


def read_bundled(settings: PricesSettings, tiers: TierRules) -> Fetch:
    """The price file inside the installed litellm (or `bundled_file`), read from disk."""
    where = str(settings.bundled_file or "the bundled price file")
    return snapshot(litellm_bundled.NAME, where, lambda: litellm_bundled.load(tiers, settings.bundled_file))


def read_corrections(settings: PricesSettings) -> tuple[dict[str, list[corrections.Correction]], str | None]:
    """The corrections of each model (none when the source is not configured), and why the file could not be
    read, if it could not: then none apply, and the source reports the error."""
    if corrections.NAME not in settings.sources:
        return {}, None
    where = settings.corrections_file or corrections.PATH
    try:
        return corrections.load(where), None
    except Exception as exc:  # a broken file is this source's failure alone
        log.exception("the price corrections could not be read")
        return {}, f"{where}: {_reason(exc)}"


def snapshot(source: str, where: str, parse: Callable[[], tuple[list[PriceEntry], list[str]]]) -> Fetch:
    """What a feed's parser makes of it, as a snapshot of the source; a failed fetch instead when the feed is
    not of its source's shape (the parser raises) or has no usable model, so it never counts as the
    source's latest snapshot (its size, its success)."""
    try:
        entries, refused = parse()
        usable, unreadable = well_formed(entries)
    except Exception as exc:  # a parser's failure is its feed's alone
        return Fetch(source, None, error=f"{where}: {_reason(exc)}")
    refused = refused + unreadable
    if not usable:
        note = f" ({len(refused)} refused, e.g. {refused[0]})" if refused else ""
        return Fetch(source, None, error=f"{where}: no usable model in the feed{note}")
    return Fetch(source, usable, refused=refused)


def well_formed(entries: list[PriceEntry]) -> tuple[list[PriceEntry], list[str]]:
    """The entries that keep the price schema's bounds (names of at most 128 characters, token limits, ...),
    and a note for each that does not: the ledger stores what is applied and reads it back by that schema,
    so one such entry applied would keep the daemon from starting again."""
    usable, refused = [], []
    for entry in entries:
        try:
            _entry_decoder.decode(msgspec.json.encode(entry))
        except msgspec.MsgspecError as exc:
            refused.append(f"{entry.model[:128]}: {exc}")
            continue
        usable.append(entry)
    return usable, refused


def _reason(exc: Exception) -> str:
    """A parser's ValueError says what is wrong with the feed; any other exception is named by its type."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
