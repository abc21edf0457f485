"""The scalar types every schema type is built from, with their bounds, and the base Struct."""

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

# The bounds keep every sum a ledger can hold inside a 64-bit integer: a call uses at most a billion
# tokens of each kind and costs at most $10,000 (the largest real calls are tens of dollars), and the
# ledger itself refuses a record that would take any of its totals past 2**63 - 1.

#: Token counts of one call: integers >= 0.
Count = Annotated[int, Meta(ge=0, le=10**9)]
#: A token limit of a budget.
TokenLimit = Annotated[int, Meta(ge=0, le=10**15)]
#: Dollars on the wire (the ledger keeps integer nano-dollars): a budget's limit.
Usd = Annotated[float, Meta(ge=0.0, le=1e9)]
#: What one call cost.
CallUsd = Annotated[float, Meta(ge=0.0, le=1e4)]
#: A point in time as a query gives it: RFC 3339, a date (its midnight), or a duration back from now (7d,
#: 12h, 30m). One grammar on every door; the daemon reads it by its own clock.
When = Annotated[str, Meta(min_length=1, max_length=64)]
#: Web searches a call made (each billed per query).
Searches = Annotated[int, Meta(ge=0, le=10_000)]
#: A positive 64-bit integer (ids, cursors).
Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]
#: Prices on the wire: USD per million tokens.
PerMtok = Annotated[float, Meta(ge=0.0, le=1e6)]
#: Names and labels are printed in tables and logs: no control character (a terminal escape, a newline,
#: a NUL, which a PostgreSQL text column cannot hold either). Free text may span lines, but holds no NUL.
_NO_CONTROL = r"\A[^\x00-\x1f\x7f]*\Z"
_WITHOUT_CONTROL = "text without control characters (no NUL, tab, newline or escape)"
Name = Annotated[str, Meta(min_length=1, max_length=128, pattern=_NO_CONTROL, description=_WITHOUT_CONTROL)]
Label = Annotated[str, Meta(min_length=1, max_length=256, pattern=_NO_CONTROL, description=_WITHOUT_CONTROL)]
Text = Annotated[str, Meta(max_length=4096, pattern=r"\A[^\x00]*\Z", description="text without NUL characters")]
#: Times are RFC 3339 with an offset; naive times are refused.
Time = Annotated[dt.datetime, Meta(tz=True)]
MetaKey = Annotated[str, Meta(min_length=1, max_length=64)]
MetaValue = Annotated[str, Meta(max_length=1024)] | int | float | bool
Metadata = Annotated[dict[MetaKey, MetaValue], Meta(max_length=32)]
BudgetName = Annotated[str, Meta(pattern=r"\A[a-z0-9][a-z0-9._-]*\Z", max_length=64, description=(
    "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"))]


class Struct(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every schema type a client sends: keyword-only, immutable, strict (a typo never passes)."""


class Answer(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every type only the daemon sends: a newer daemon may add fields, an older client ignores
    them (so clients and daemons can be upgraded one at a time)."""


class BudgetInvalid(ValueError):
    """A BudgetSpec that decodes but does not make sense; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
