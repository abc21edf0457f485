"""The prices actor: owns the current (immutable) PriceBook and answers questions about it."""

import datetime as dt
from typing import Any

import msgspec

from actors.runtime import Actor, Ref, ReplyTo
from budgetd.model import PriceEntry, SourceStatus
from budgetd.pricing import PriceBook
from budgetd.protocol import OpError, PriceListResult, PriceResult, PricesStatus


class GetPrice(msgspec.Struct, frozen=True):
    model: str
    provider: str | None
    reply: ReplyTo


class ListPrices(msgspec.Struct, frozen=True):
    provider: str | None
    search: str | None
    limit: int | None
    reply: ReplyTo


class GetPricesStatus(msgspec.Struct, frozen=True):
    reply: ReplyTo


def load_book(
    entries: list[PriceEntry], overrides: list[PriceEntry], version: int, aliases: dict[str, str]
) -> PriceBook:
    """Overrides always win over what the sources say."""
    stamped = [msgspec.structs.replace(e, version=version) for e in entries]
    return PriceBook(stamped + overrides, version=version, aliases=aliases)


class Prices(Actor):
    name = "prices"

    def __init__(self, book: PriceBook, sources: list[SourceStatus], allocator: Ref | None = None) -> None:
        super().__init__()
        self.book = book
        self.sources = sources
        self.allocator = allocator
        self.updated_at = dt.datetime.now(dt.timezone.utc)

    async def handle(self, message: Any) -> None:
        if isinstance(message, GetPrice):
            resolved = self.book.resolve(message.model, message.provider)
            if resolved is None:
                raise OpError(
                    "not_found",
                    f"no price for model {message.model!r}; see `budget prices list --search` "
                    "or set one with `budget prices set`",
                    "$.model",
                )
            via = None if resolved.entry.model == message.model else message.model
            message.reply.set(PriceResult(price=resolved.entry, resolved_from=via))
        elif isinstance(message, ListPrices):
            found = self.book.search(message.search, message.provider)
            shown = found if message.limit is None else found[: message.limit]
            message.reply.set(PriceListResult(prices=shown, version=self.book.version, total=len(found)))
        elif isinstance(message, GetPricesStatus):
            message.reply.set(PricesStatus(
                version=self.book.version, models=len(self.book), updated_at=self.updated_at,
                sources=self.sources,
            ))
        else:
            raise TypeError(f"the prices actor does not handle {type(message).__name__}")
