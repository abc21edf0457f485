"""Pricing a call: the book, the unpriced policy and the tier rules together."""

from dataclasses import dataclass
from typing import NamedTuple

from budgetd.model import PriceEntry, canonical_tier
from budgetd.pricing._book import PriceBook
from budgetd.pricing._card import RateCard, Rates
from budgetd.pricing._cost import Billed, cost_nanos
from budgetd.pricing._tiers import TierRules


@dataclass(frozen=True)
class UnpricedPolicy:
    """What an unpriced model costs: never silently free."""

    mode: str = "fallback"  # fallback | deny | zero
    fallback_input_per_mtok: float = 15.0
    fallback_output_per_mtok: float = 75.0

    @property
    def card(self) -> RateCard:
        return RateCard(Rates.flat(self.fallback_input_per_mtok, self.fallback_output_per_mtok))


class Priced(NamedTuple):
    model: str  # the resolved price key, or the name as given when unpriced
    provider: str | None
    tier: str
    cost_nanos: int
    priced: bool
    price_version: int | None
    entry: PriceEntry | None


def price_call(
    book: PriceBook,
    policy: UnpricedPolicy,
    tiers: TierRules,
    model: str,
    provider: str | None,
    tier: str | None,
    billed: Billed,
    at_us: int | None = None,
    cost_nanos_given: int | None = None,
) -> Priced:
    """The call's price key, provider, tier and cost (a caller's own `cost_nanos_given` wins)."""
    resolved = book.resolve(model, provider)
    if resolved is not None:
        entry, card = resolved
        cost = cost_nanos(card, billed, at_us)
        return Priced(
            entry.model,
            provider or entry.provider,
            canonical_tier(tier) or entry.tier or "heavyweight",
            cost if cost_nanos_given is None else cost_nanos_given,
            True,
            entry.version,
            entry,
        )
    if provider is None and "/" in model:
        provider = model.split("/", 1)[0]
    if policy.mode == "zero":
        cost = 0
    else:
        cost = cost_nanos(policy.card, billed, at_us)
    resolved_tier = canonical_tier(tier) or tiers.tier_of(
        model, provider, policy.fallback_input_per_mtok, policy.fallback_output_per_mtok
    )
    return Priced(
        model, provider, resolved_tier, cost if cost_nanos_given is None else cost_nanos_given, False, None, None
    )
