"""Prices: the actor that owns the price book (`actor`), the feeds it fetches (`fetch`) and the rules a
new price must pass before it is applied (`rules`). Callers use the messages in `actors.prices.messages`."""

from actors.prices.actor import Prices  # noqa: F401
from actors.prices.fetch import PricesSettings  # noqa: F401
from actors.prices.messages import (  # noqa: F401 - the inbox is the public face
    GetBook,
    GetHistory,
    GetPrice,
    GetPricesStatus,
    ListPrices,
    NewBook,
    PricesMoved,
    Refresh,
    SetPrice,
    UnsetPrice,
)
from actors.prices.rules import Rules  # noqa: F401
