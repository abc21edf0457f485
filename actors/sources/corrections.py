"""Corrections: reviewed facts where litellm's price file contradicts a provider's published rule, one row per
fact with the page that states it (`corrections.toml`, shipped with budgetd: no network).

They are applied after the litellm-format sources (the bundled file and the litellm feed): a row sets the
price terms its fact fixes on that model's entry, and the entry's source becomes `corrections`.
"""

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from budgetd.model import PriceEntry, PriceSpec

NAME = "corrections"
PATH = Path(__file__).with_name("corrections.toml")

_FIELD_TYPES = {f.name: f.type for f in msgspec.structs.fields(PriceEntry)}
# What a fact may fix: the terms that decide what a call costs, never a model's name, limits or capabilities.
_TERMS = frozenset(PriceSpec.__struct_fields__) - {
    "model", "provider", "max_input_tokens", "max_output_tokens", "mode", "capabilities", "tier"}


class Correction(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    model: str
    fact: str
    source_url: str
    set: dict[str, Any]


def load(path: Path | None = None) -> dict[str, list[Correction]]:
    """The corrections of each model. A row that is not one fact of a price, with its source, is an error."""
    where = path or PATH
    with open(where, "rb") as f:
        rows = msgspec.convert(tomllib.load(f).get("correction", []), list[Correction])
    by_model: dict[str, list[Correction]] = {}
    for row in rows:
        unknown = set(row.set) - _TERMS
        if not row.set or unknown or not row.source_url.startswith("https://"):
            raise ValueError(f"{where}: the correction of {row.model} must set price terms "
                             f"({', '.join(sorted(_TERMS))}) and give the https page that states its fact; "
                             f"it sets {sorted(row.set)}")
        _terms(row)  # each value of the schema's type and bounds
        by_model.setdefault(row.model, []).append(row)
    return by_model


def _terms(row: Correction) -> dict[str, Any]:
    try:
        return {name: msgspec.convert(value, _FIELD_TYPES[name]) for name, value in row.set.items()}
    except msgspec.ValidationError as exc:
        raise ValueError(f"the correction of {row.model}: {exc}") from None


def correct(entry: PriceEntry, rows: list[Correction]) -> PriceEntry:
    """`entry` with every fact of `rows` set, from the source `corrections`."""
    fixed = {name: value for row in rows for name, value in _terms(row).items()}
    return msgspec.structs.replace(entry, **fixed, source=NAME)
