"""Cost arithmetic: what a call is billed for, and what it costs at a card's rates.

`cost = (input - audio_in) x input + audio_in x audio_input + cache_read x cache_read + cache_write x cache_write
+ cache_write_1h x cache_write_1h + (output - reasoning - audio_out) x output + reasoning x reasoning
+ audio_out x audio_output + searches x web_search fee + the request fee`, an exact integer sum of atto-dollars
rounded once, to the nearest nano-dollar.
"""

from typing import Any, NamedTuple

from budgetd.pricing._card import RateCard
from budgetd.pricing._units import atto_to_nanos


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


def cost_atto(card: RateCard, b: Billed, at_us: int | None = None) -> int:
    """What `b` costs at `card`'s rates, in atto-dollars (`at_us`: when the call was made, for off-peak rates)."""
    r = card.base if card.table is None else card.table.rates(b.prompt, b.service_tier, at_us)
    # An estimate's parts are not checked against their wholes (a usage's are): a part is at most its whole.
    audio_input = min(b.audio_input, b.input)
    reasoning = min(b.reasoning, b.output)
    audio_output = min(b.audio_output, b.output - reasoning)
    atto = ((b.input - audio_input) * r.input + audio_input * r.audio_input
            + b.cache_read * r.cache_read + b.cache_write * r.cache_write + b.cache_write_1h * r.cache_write_1h
            + (b.output - reasoning - audio_output) * r.output + reasoning * r.reasoning
            + audio_output * r.audio_output)
    fees = card.fees
    if fees is not None:
        searches = min(b.web_searches, 1) if fees.web_search_per_request else b.web_searches
        atto += searches * fees.web_search + fees.request
    return atto


def cost_nanos(card: RateCard, billed: Billed, at_us: int | None = None) -> int:
    """What `billed` costs at `card`'s rates (`at_us`: when the call happened, for rates that depend on
    the time of day), rounded once to the nearest nano-dollar."""
    return atto_to_nanos(cost_atto(card, billed, at_us))
