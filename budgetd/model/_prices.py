"""Prices: what a person sets, what the book holds, what a refresh found.

Rates are USD per million tokens, fees USD each. A rate left out (None) falls back to its documented default
(README, "How a call is priced"); an explicit 0 is a price of zero.
"""

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from budgetd.model._types import Answer, CallUsd, Name, PerMtok, Struct, TokenLimit
from budgetd.model._vocabulary import Tier

#: The most long-context thresholds one rate set has (the price verification judges each one's terms).
MAX_LONG_CONTEXTS = 5

#: How a web-search fee is counted: each query, or once for a request that searched at all (Gemini 2.x
#: grounding bills per grounded prompt).
WebSearchBilling = Literal["per_query", "per_request"]


class TokenRates(Struct, kw_only=True, omit_defaults=True):
    """One rate per kind of token. `reasoning` and `audio_output` price those parts of the output, `audio_input`
    that part of the input; `cache_write` is a write with the provider's default lifetime (Anthropic's 5 minutes),
    `cache_write_1h` one kept an hour."""

    input_per_mtok: PerMtok | None = None
    output_per_mtok: PerMtok | None = None
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None
    cache_write_1h_per_mtok: PerMtok | None = None
    reasoning_per_mtok: PerMtok | None = None
    audio_input_per_mtok: PerMtok | None = None
    audio_output_per_mtok: PerMtok | None = None


class LongContext(TokenRates, kw_only=True):
    """Rates for the whole request when its prompt (every input token, cached or written too) is above
    `threshold_tokens`. A rate left out is the one that applies just below the threshold."""

    threshold_tokens: TokenLimit


class ServiceTierRates(TokenRates, kw_only=True):
    """A service tier's rates (`priority`, `flex`, `batch`) and their long-context variants. A rate left out
    is the standard one for the same prompt size."""

    long_context: Annotated[list[LongContext], Meta(max_length=MAX_LONG_CONTEXTS)] = msgspec.field(
        default_factory=list)


class OffPeakWindow(Struct, kw_only=True, omit_defaults=True):
    """When off-peak rates apply: `hours_utc` windows "HH:MM-HH:MM" in UTC (start included, end not; a window
    may wrap past midnight, and one whose start is its end is the whole day), on `weekdays` (ISO: 1 is
    Monday, 7 Sunday; None: every day)."""

    hours_utc: list[str]
    weekdays: list[int] | None = None


class OffPeak(TokenRates, kw_only=True):
    """Rates that replace the ones that would apply (at any prompt size and service tier) while a window is
    open. A rate left out keeps the one that would apply."""

    windows: list[OffPeakWindow]
    weekday_timezone: str = "UTC"  # the calendar `weekdays` are read on (the hours are UTC whatever it is)


class PriceSpec(Struct, kw_only=True):
    """The part of a price a person sets (`prices.set`, `[[pricing.overrides]]`).

    `long_context` is the lowest long-context threshold and `longer_contexts` any above it, lowest first (a
    price file's tiered ranges are thresholds too: a range [a, b] is "above a")."""

    model: Name
    provider: Name | None = None
    input_per_mtok: PerMtok
    output_per_mtok: PerMtok
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None
    cache_write_1h_per_mtok: PerMtok | None = None
    reasoning_per_mtok: PerMtok | None = None
    audio_input_per_mtok: PerMtok | None = None
    audio_output_per_mtok: PerMtok | None = None
    long_context: LongContext | None = None
    longer_contexts: Annotated[list[LongContext], Meta(max_length=MAX_LONG_CONTEXTS - 1)] = msgspec.field(
        default_factory=list)
    priority_rates: ServiceTierRates | None = None
    flex_rates: ServiceTierRates | None = None
    batch_rates: ServiceTierRates | None = None
    off_peak: OffPeak | None = None
    web_search_usd: CallUsd | None = None  # per web search (see `web_search_billing`)
    web_search_billing: WebSearchBilling = "per_query"
    request_usd: CallUsd | None = None  # per request, whatever it used
    max_input_tokens: TokenLimit | None = None
    max_output_tokens: TokenLimit | None = None
    mode: Name = "chat"
    capabilities: list[Name] = msgspec.field(default_factory=list)
    tier: Tier | None = None


class PriceEntry(PriceSpec, kw_only=True):
    """A price as the book holds it: with where it came from and when it applied."""

    source: Name = "override"
    version: int = 0
    effective_from: dt.datetime | None = None
    effective_to: dt.datetime | None = None
    verified: bool = True
    deprecated_on: dt.date | None = None
    alias_of: Name | None = None  # this key is another's: it is priced as that entry


class SourceReport(Answer, kw_only=True):
    source: str
    fetched: bool
    models: int = 0
    applied: int = 0
    held: int = 0
    rejected: int = 0
    error: str | None = None


class PriceDiff(Answer, kw_only=True):
    """One model's price as a refresh found it: `new`, `changed` (applied) or `held`."""

    model: str
    source: str
    status: Literal["new", "changed", "held"]
    old_input_per_mtok: float | None = None
    old_output_per_mtok: float | None = None
    new_input_per_mtok: float
    new_output_per_mtok: float


class SourceStatus(Answer, kw_only=True):
    source: str
    models: int
    last_success: dt.datetime | None = None
    last_error: str | None = None
