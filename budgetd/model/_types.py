"""The scalar types every schema type is built from, with their bounds, and the base Struct."""

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

#: Token counts: integers >= 0, bounded so a typo cannot poison a sum.
Count = Annotated[int, Meta(ge=0, le=10**12)]
#: Dollars on the wire (the ledger keeps integer nano-dollars).
Usd = Annotated[float, Meta(ge=0.0, le=1e9)]
#: Prices on the wire: USD per million tokens.
PerMtok = Annotated[float, Meta(ge=0.0, le=1e6)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Label = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=4096)]
#: Times are RFC 3339 with an offset; naive times are refused.
Time = Annotated[dt.datetime, Meta(tz=True)]
MetaKey = Annotated[str, Meta(min_length=1, max_length=64)]
MetaValue = Annotated[str, Meta(max_length=1024)] | int | float | bool
Metadata = Annotated[dict[MetaKey, MetaValue], Meta(max_length=32)]
BudgetName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]


class Struct(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every schema type: keyword-only, immutable, strict."""


class BudgetInvalid(ValueError):
    """A BudgetSpec that decodes but does not make sense; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
