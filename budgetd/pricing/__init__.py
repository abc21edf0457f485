"""Pricing: units (`_units`), rate cards built from price entries (`_card`, with off-peak windows in
`_off_peak`), cost arithmetic (`_cost`), the price book and name resolution (`_book`), tiers (`_tiers`), and
pricing a call with all of them (`_call`). Pure: no I/O."""

from budgetd.pricing._book import PriceBook, Resolved  # noqa: F401
from budgetd.pricing._call import Priced, UnpricedPolicy, price_call  # noqa: F401
from budgetd.pricing._card import KINDS, Fees, RateCard, Rates, RateTable, rate_card  # noqa: F401
from budgetd.pricing._cost import Billed, cost_atto, cost_nanos  # noqa: F401
from budgetd.pricing._off_peak import OffPeakSchedule  # noqa: F401
from budgetd.pricing._tiers import TierRules  # noqa: F401
from budgetd.pricing._units import (  # noqa: F401
    ATTO_PER_NANO,
    atto_to_nanos,
    per_mtok_to_atto,
    per_token_to_per_mtok,
    usd_to_atto,
)
