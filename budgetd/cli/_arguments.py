"""What every command shares on its command line: argument types, the common options, the filters of
usage and report, and the daemon client the options configure."""

import argparse
import datetime as dt
from typing import Any

from budgetd.cli._errors import CliError
from budgetd.client import SyncBudgetClient
from budgetd.model import DIMS, SERVICE_TIERS
from budgetd.periods import parse_when, when_text, zone

# -- argument types: argparse reports their errors as bad usage (exit status 2) --


def parse_time(text: str, zone_name: str = "UTC") -> dt.datetime:
    try:
        return parse_when(text, zone_name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def when(text: str) -> str:
    """A time bound of a query, sent as written: the daemon reads durations by its clock."""
    try:
        return when_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def dim_list(text: str) -> list[str]:
    """`component,model`: dims to group by, each one of DIMS."""
    dims = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in dims if d not in DIMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))} is not a dim; use any of "
                                         f"{', '.join(DIMS)}, comma separated")
    return dims


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def dim_value(text: str) -> tuple[str, str]:
    """`component=rhetor`: a dim and its value (scopes and filters)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} should look like dim=value, e.g. component=rhetor")
    key, value = (part.strip() for part in text.split("=", 1))
    if key not in DIMS:
        raise argparse.ArgumentTypeError(f"{key!r} is not a dim; use one of {', '.join(DIMS)}")
    return key, value


def check_zone(name: str) -> None:
    """--tz must name an IANA zone (a CliError says so)."""
    try:
        zone(name)
    except ValueError as exc:
        raise CliError(f"--tz: {exc}") from None


# -- options ----------------------------------------------------------------------


def common_options() -> argparse.ArgumentParser:
    """--socket and --json, a parent of every parser: they may come before or after the command.

    SUPPRESS keeps a subcommand's unset option from overwriting what was given before the command.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS,
                        help="daemon socket (default: BUDGETD_SOCKET or the standard path)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for machines")
    return common


def filter_arguments(p: argparse.ArgumentParser) -> None:
    """The dims that `usage` and `report` select by; read back with `filters`."""
    p.add_argument("--component")
    p.add_argument("--model")
    p.add_argument("--context", dest="context_id")
    p.add_argument("--task", dest="task_type")
    p.add_argument("--filter", action="append", type=dim_value, metavar="DIM=VALUE")


def filters(args: argparse.Namespace) -> dict[str, str] | None:
    selected = dict(args.filter or [])
    for name in DIMS:
        value = getattr(args, name, None)
        if value:
            selected[name] = value
    return selected or None


def client(args: argparse.Namespace, *, retries: int = 2) -> SyncBudgetClient:
    return SyncBudgetClient(getattr(args, "socket", None), timeout=getattr(args, "timeout", 10.0), retries=retries)


#: What a call was billed for, as `record` and `commit` take it: (flag, Usage field, help).
BILLED = (
    ("--input", "input_tokens", "prompt tokens not read from or written to a cache"),
    ("--output", "output_tokens", "output tokens, reasoning and audio included"),
    ("--cache-read", "cache_read_tokens", "prompt tokens read from a cache"),
    ("--cache-write", "cache_write_tokens", "prompt tokens written to a cache for its default lifetime"),
    ("--cache-write-1h", "cache_write_1h_tokens", "prompt tokens written to a cache for an hour"),
    ("--reasoning", "reasoning_tokens", "how many of --output were reasoning"),
    ("--audio-in", "audio_input_tokens", "how many of --input were audio"),
    ("--audio-out", "audio_output_tokens", "how many of --output were audio"),
    ("--web-searches", "web_search_requests", "web searches the call made"),
)


def billed_arguments(p: argparse.ArgumentParser) -> None:
    """The quantities of a call; read back with `billed_fields`."""
    for flag, _, text in BILLED:
        p.add_argument(flag, type=non_negative_int, default=0, help=text)
    p.add_argument("--service-tier", choices=SERVICE_TIERS, default="standard",
                   help="the provider's processing tier the call was billed at")


def billed_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {name: getattr(args, flag[2:].replace("-", "_")) for flag, name, _ in BILLED}
    fields["service_tier"] = args.service_tier
    return fields
