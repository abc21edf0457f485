"""Units: published prices (floats, USD per token or per million) as exact integers of atto-dollars (1e-18 USD).

Each float is read in its shortest decimal form (`repr`), the way it was written in the source, so a price
like 0.3 per Mtok is exactly 300_000_000_000 atto-dollars per token and never 0.299999...
"""

from decimal import ROUND_HALF_EVEN, Decimal

ATTO_PER_NANO = 1_000_000_000
_ATTO_PER_USD = Decimal(10) ** 18
_ATTO_PER_USD_PER_MTOK = Decimal(10) ** 12  # (1e-6 USD per token) / 1e-18


def _exact(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def per_mtok_to_atto(rate: float) -> int:
    """USD per million tokens -> atto-dollars per token (exact for every rate down to 1e-18 USD per token; a
    float's noise below that is dropped)."""
    return int((_exact(rate) * _ATTO_PER_USD_PER_MTOK).to_integral_value(ROUND_HALF_EVEN))


def usd_to_atto(fee: float) -> int:
    """A fee in USD -> atto-dollars, exactly."""
    return int((_exact(fee) * _ATTO_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def per_token_to_per_mtok(rate: float) -> float:
    """USD per token (as sources publish) -> USD per million, without float noise."""
    return float(_exact(rate).scaleb(6))


def atto_to_nanos(atto: int) -> int:
    """Round half up to the nearest nano-dollar (costs are never negative)."""
    return (atto + ATTO_PER_NANO // 2) // ATTO_PER_NANO
