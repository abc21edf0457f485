"""The prices actor's inbox: prices asked for, set and refreshed, and the book it publishes."""

import msgspec

from actors.runtime import ReplyTo
from budgetd.model import PriceSpec
from budgetd.pricing import PriceBook


class GetPrice(msgspec.Struct, frozen=True):
    """Answer: `PriceResult` (the entry a name resolves to), or not_found."""

    model: str
    provider: str | None
    reply: ReplyTo


class ListPrices(msgspec.Struct, frozen=True):
    """Answer: `PriceListResult`."""

    provider: str | None
    search: str | None
    limit: int | None
    reply: ReplyTo


class GetPricesStatus(msgspec.Struct, frozen=True):
    """Answer: `PricesStatus` (version, models, sources)."""

    reply: ReplyTo


class GetBook(msgspec.Struct, frozen=True):
    """Answer: the current `PriceBook` (immutable)."""

    reply: ReplyTo


class NewBook(msgspec.Struct, frozen=True):
    """Told to the allocator whenever the book changes."""

    book: PriceBook


class PricesMoved(msgspec.Struct, frozen=True):
    """On a fleet, told every sync interval: the database's newest price version and count of overrides (the
    book is read again when they are not this actor's), and whether this node is the one that refreshes."""

    version: int
    overrides: int
    leading: bool


class Refresh(msgspec.Struct, frozen=True):
    """Fetch every feed now; answer (when `reply` is set): `RefreshReport`, once applied."""

    reply: ReplyTo | None = None


class SetPrice(msgspec.Struct, frozen=True):
    """A local override; answer: `PriceResult`."""

    spec: PriceSpec
    reply: ReplyTo


class UnsetPrice(msgspec.Struct, frozen=True):
    """Remove an override; answer: True when there was one."""

    model: str
    reply: ReplyTo


class GetHistory(msgspec.Struct, frozen=True):
    """Answer: `PriceHistoryResult`, oldest version first."""

    model: str
    reply: ReplyTo
