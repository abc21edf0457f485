"""Pricing: cost arithmetic (`_cost`), the price book and name resolution (`_book`), tiers (`_tiers`),
and pricing a call with all of them (`_call`). Pure: no I/O."""

from budgetd.pricing._book import PriceBook, Resolved  # noqa: F401
from budgetd.pricing._call import Priced, UnpricedPolicy, price_call  # noqa: F401
from budgetd.pricing._cost import (  # noqa: F401
    ATTO_PER_NANO,
    Billed,
    RateCard,
    Rates,
    atto_to_nanos,
    cost_atto,
    cost_nanos,
    per_mtok_to_atto,
    per_token_to_per_mtok,
    rate_card,
)
from budgetd.pricing._tiers import TierRules  # noqa: F401
