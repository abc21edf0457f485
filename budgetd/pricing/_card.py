"""Rate cards: a price entry as integer rates (atto-dollars per token) for every prompt size, service tier and
off-peak state, with every fallback resolved once, when the card is built (README, "How a call is priced").

A rate is looked up from the most specific rate set that gives one: the off-peak rates while a window is open,
then the service tier's rates for the prompt's long-context band, the standard ones for that band, and so on
down through the bands below to the base rates. A kind no set gives is billed at the rate of the kind it is a
variety of (`_STANDS_IN`).
"""

import bisect
from typing import Iterable, NamedTuple

from budgetd.model import SERVICE_TIERS, LongContext, PriceEntry, TokenRates
from budgetd.pricing._off_peak import OffPeakSchedule
from budgetd.pricing._units import per_mtok_to_atto, usd_to_atto

KINDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning", "audio_input", "audio_output")
# A kind priced nowhere is billed as the kind it is a variety of (resolved first: the order of KINDS).
_STANDS_IN = {"cache_read": "input", "cache_write": "input", "cache_write_1h": "cache_write", "reasoning": "output",
              "audio_input": "input", "audio_output": "output"}
_TIER_RATES = {"priority": "priority_rates", "flex": "flex_rates", "batch": "batch_rates"}


class Rates(NamedTuple):
    """Atto-dollars per token of each kind, resolved (never None)."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    reasoning: int
    audio_input: int
    audio_output: int

    @classmethod
    def flat(cls, input_per_mtok: float, output_per_mtok: float) -> "Rates":
        """Every input kind at the input rate, every output kind at the output rate."""
        inp, out = per_mtok_to_atto(input_per_mtok), per_mtok_to_atto(output_per_mtok)
        return cls(inp, out, inp, inp, inp, out, inp, out)


class Fees(NamedTuple):
    """Atto-dollars per web search (or per request that searched) and per request."""

    web_search: int
    web_search_per_request: bool
    request: int


class RateTable(NamedTuple):
    thresholds: tuple[int, ...]  # ascending; band i + 1 applies to a prompt above thresholds[i]
    bands: dict[tuple[str, bool], tuple[Rates, ...]]  # (service tier, off-peak) -> the rates of each band
    off_peak: OffPeakSchedule | None

    def rates(self, prompt: int, service_tier: str, at_us: int | None) -> Rates:
        """The rates of a call: by its prompt's band, its service tier and whether it was made off-peak (a call
        without a time is priced at peak)."""
        off = self.off_peak is not None and at_us is not None and self.off_peak.open_at(at_us)
        band = bisect.bisect_left(self.thresholds, prompt)  # how many thresholds the prompt is above
        by_band = self.bands.get((service_tier, off)) or self.bands[("standard", off)]
        return by_band[band]


class RateCard(NamedTuple):
    base: Rates  # the standard rates below every threshold, at peak: what a sum of many calls is priced at
    table: RateTable | None = None  # None: `base` prices every call
    fees: Fees | None = None  # None: no fee beside the tokens


def _resolved(layers: list[TokenRates | PriceEntry]) -> Rates:
    """Each kind's rate from the first layer that gives one, else its stand-in's."""
    found: dict[str, int] = {}
    for kind in KINDS:
        given = next((rate for layer in layers if (rate := getattr(layer, f"{kind}_per_mtok")) is not None), None)
        found[kind] = found[_STANDS_IN[kind]] if given is None else per_mtok_to_atto(given)
    return Rates(**found)


def _layers(sets: dict[str, list], tier: str, band: int, off_peak: TokenRates | None) -> list:
    """The rate sets a call of `tier` in `band` is priced from, most specific first."""
    layers = [] if off_peak is None else [off_peak]
    for i in range(band, -1, -1):
        layers += [layer for name in dict.fromkeys((tier, "standard")) if (layer := sets[name][i]) is not None]
    return layers


def _by_threshold(sets: Iterable[LongContext], thresholds: tuple[int, ...]) -> list[LongContext | None]:
    given = {lc.threshold_tokens: lc for lc in sets}
    return [given.get(t) for t in thresholds]


def _fees(entry: PriceEntry) -> Fees | None:
    web_search = 0 if entry.web_search_usd is None else usd_to_atto(entry.web_search_usd)
    request = 0 if entry.request_usd is None else usd_to_atto(entry.request_usd)
    if not web_search and not request:
        return None
    return Fees(web_search, entry.web_search_billing == "per_request", request)


def rate_card(entry: PriceEntry) -> RateCard:
    """`entry`'s rates for every call: by prompt band, service tier and off-peak state."""
    standard_long = [lc for lc in (entry.long_context, *entry.longer_contexts) if lc is not None]
    tiers = {name: rates for name, field in _TIER_RATES.items() if (rates := getattr(entry, field)) is not None}
    thresholds = tuple(sorted({lc.threshold_tokens for lc in standard_long}
                              | {lc.threshold_tokens for rates in tiers.values() for lc in rates.long_context}))
    # each service tier's rate sets by band, base first
    sets: dict[str, list[TokenRates | PriceEntry | None]] = {"standard": [entry, *_by_threshold(standard_long,
                                                                                                 thresholds)]}
    sets |= {name: [rates, *_by_threshold(rates.long_context, thresholds)] for name, rates in tiers.items()}
    bands: dict[tuple[str, bool], tuple[Rates, ...]] = {}
    for off in (False, True) if entry.off_peak is not None else (False,):
        for name in (tier for tier in SERVICE_TIERS if tier in sets):
            bands[(name, off)] = tuple(_resolved(_layers(sets, name, band, entry.off_peak if off else None))
                                       for band in range(len(thresholds) + 1))
    base = bands[("standard", False)][0]
    fees = _fees(entry)
    if len(bands) == 1 and not thresholds:
        return RateCard(base, None, fees)
    schedule = None if entry.off_peak is None else OffPeakSchedule(entry.off_peak)
    return RateCard(base, RateTable(thresholds, bands, schedule), fees)
