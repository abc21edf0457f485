"""Money: the ledger's integer nano-dollars, the wire's dollars, and dollars for people."""

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_USD = 1_000_000_000


def usd(nanos: int) -> float:
    """Nano-dollars (the ledger's unit) to wire dollars."""
    return nanos / NANOS_PER_USD


def nanos(usd_amount: float) -> int:
    """Wire dollars to nano-dollars, rounded once to the nearest nano-dollar.

    Goes through the shortest decimal form of the float, so 0.1 is exactly
    100,000,000 nano-dollars and large sums never pick up float noise.
    """
    return int(Decimal(repr(usd_amount)).scaleb(9).quantize(Decimal(1), ROUND_HALF_EVEN))


def format_usd(value: float | None) -> str:
    """Dollars for people: cents above $1, up to micro-dollars below."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    if abs(value) < 1:
        digits = f"{value:.6f}".rstrip("0")
        return "$" + (digits if len(digits.split(".")[1]) >= 2 else f"{value:.2f}")
    return f"${value:,.2f}"
