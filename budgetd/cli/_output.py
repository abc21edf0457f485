"""How commands print: aligned tables for people, JSON for machines (`--json`), CSV for spreadsheets."""

import argparse
import csv
import datetime as dt
import sys
from typing import Any, Callable, Mapping, Sequence

import msgspec


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def key_text(key: Mapping[str, str]) -> str:
    """The key of a budget's counter, `dim=value,dim=value`."""
    return ",".join(f"{k}={v}" for k, v in key.items())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int] | None = None) -> str:
    right = right or set()
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values))
        return "  ".join(padded).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def write_json(result: Any) -> None:
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


def emit(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    """The result as JSON with `--json`, else as `human` words it."""
    if getattr(args, "json", False):
        write_json(result)
    else:
        sys.stdout.write(human(result) + "\n")


def csv_writer() -> Any:
    return csv.writer(sys.stdout, lineterminator="\n")


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def usd_exact(value: float) -> str:
    """Dollars to the nano-dollar, as the ledger keeps them."""
    return f"{value:.9f}"
