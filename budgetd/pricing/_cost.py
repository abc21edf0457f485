"""Cost arithmetic: a price entry as a card of integer rates, and a call's cost from it.

Rates are kept as integer atto-dollars (1e-18 USD) per token, converted from
the shortest decimal form of each published float, so a request's cost is an
exact integer sum that is rounded once, to the nearest nano-dollar.
"""

from decimal import Decimal
from typing import Any, NamedTuple

from budgetd.model import PriceEntry

ATTO_PER_NANO = 1_000_000_000
_ATTO_PER_USD_PER_MTOK = Decimal(10) ** 12  # (1e-6 USD per token) / 1e-18


def per_mtok_to_atto(rate: float) -> int:
    """USD per million tokens -> atto-dollars per token, exactly."""
    return int(Decimal(repr(float(rate))) * _ATTO_PER_USD_PER_MTOK)


def per_token_to_per_mtok(rate: float) -> float:
    """USD per token (as sources publish) -> USD per million, without float noise."""
    return float(Decimal(repr(float(rate))).scaleb(6))


class Billed(NamedTuple):
    """What a call is billed for, by kind. `reasoning` and `audio_output` are parts of `output`,
    `audio_input` of `input`: never added on top."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0  # the provider's default cache lifetime (Anthropic's 5 minutes)
    cache_write_1h: int = 0
    reasoning: int = 0
    audio_input: int = 0
    audio_output: int = 0
    web_searches: int = 0
    service_tier: str = "standard"

    @classmethod
    def of(cls, u: Any) -> "Billed":
        """From a Usage (or UsagePatch)."""
        return cls(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                   u.cache_write_1h_tokens, u.reasoning_tokens, u.audio_input_tokens, u.audio_output_tokens,
                   u.web_search_requests, u.service_tier)

    @property
    def prompt(self) -> int:
        """The prompt's size, which picks a long-context rate: every input token, cached or not."""
        return self.input + self.cache_read + self.cache_write + self.cache_write_1h

    @property
    def tokens(self) -> int:
        """What a budget's token limit counts (parts are inside their wholes)."""
        return self.prompt + self.output


class Rates(NamedTuple):
    """Atto-dollars per token; cache rates are already resolved (never None)."""

    input: int
    output: int
    cache_read: int
    cache_write: int


class RateCard(NamedTuple):
    base: Rates
    threshold: int | None
    long: Rates | None


def rate_card(entry: PriceEntry) -> RateCard:
    def rate(value: float | None, fallback: int) -> int:
        return fallback if value is None else per_mtok_to_atto(value)

    base_input = per_mtok_to_atto(entry.input_per_mtok)
    base = Rates(
        base_input,
        per_mtok_to_atto(entry.output_per_mtok),
        rate(entry.cache_read_per_mtok, base_input),
        rate(entry.cache_write_per_mtok, base_input),
    )
    lc = entry.long_context
    if lc is None:
        return RateCard(base, None, None)
    long_input = per_mtok_to_atto(lc.input_per_mtok)
    # A long-context tier without its own cache rate keeps the base cache
    # rate when there is one (litellm's rule), else the long input rate.
    long = Rates(
        long_input,
        per_mtok_to_atto(lc.output_per_mtok),
        rate(lc.cache_read_per_mtok, base.cache_read if entry.cache_read_per_mtok is not None else long_input),
        rate(lc.cache_write_per_mtok, base.cache_write if entry.cache_write_per_mtok is not None else long_input),
    )
    return RateCard(base, lc.threshold_tokens, long)


def cost_atto(card: RateCard, b: Billed, at_us: int | None = None) -> int:
    rates = card.base
    if card.threshold is not None and b.prompt > card.threshold:
        rates = card.long  # type: ignore[assignment]
    return (
        b.input * rates.input
        + b.output * rates.output
        + b.cache_read * rates.cache_read
        + (b.cache_write + b.cache_write_1h) * rates.cache_write
    )


def atto_to_nanos(atto: int) -> int:
    """Round half up to the nearest nano-dollar (costs are never negative)."""
    return (atto + ATTO_PER_NANO // 2) // ATTO_PER_NANO


def cost_nanos(card: RateCard, billed: Billed, at_us: int | None = None) -> int:
    """What `billed` costs at `card`'s rates (`at_us`: when the call happened, for rates that depend on
    the time of day), rounded once to the nearest nano-dollar."""
    return atto_to_nanos(cost_atto(card, billed, at_us))
