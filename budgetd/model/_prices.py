"""Prices: what a person sets, what the book holds, what a refresh found."""

import datetime as dt
from typing import Literal

import msgspec

from budgetd.model._types import Count, Name, PerMtok, Struct, TokenLimit
from budgetd.model._vocabulary import Tier


class LongContext(Struct, kw_only=True):
    """Rates that apply to the whole request above `threshold_tokens` of input."""

    threshold_tokens: TokenLimit
    input_per_mtok: PerMtok
    output_per_mtok: PerMtok
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None


class PriceSpec(Struct, kw_only=True):
    """The part of a price a person sets (`prices.set`, `[[pricing.overrides]]`)."""

    model: Name
    provider: Name | None = None
    input_per_mtok: PerMtok
    output_per_mtok: PerMtok
    cache_read_per_mtok: PerMtok | None = None
    cache_write_per_mtok: PerMtok | None = None
    long_context: LongContext | None = None
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


class SourceReport(Struct, kw_only=True):
    source: str
    fetched: bool
    models: int = 0
    applied: int = 0
    held: int = 0
    rejected: int = 0
    error: str | None = None


class PriceDiff(Struct, kw_only=True):
    """One model's price as a refresh found it: `new`, `changed` (applied) or `held`."""

    model: str
    source: str
    status: Literal["new", "changed", "held"]
    old_input_per_mtok: float | None = None
    old_output_per_mtok: float | None = None
    new_input_per_mtok: float
    new_output_per_mtok: float


class SourceStatus(Struct, kw_only=True):
    source: str
    models: int
    last_success: dt.datetime | None = None
    last_error: str | None = None
