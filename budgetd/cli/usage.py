"""`budget record` tells the daemon about one LLM call; `budget usage` lists the calls recorded."""

import argparse
import datetime as dt
from typing import Any

from budgetd.cli._arguments import (
    billed_arguments,
    billed_fields,
    client,
    filter_arguments,
    filters,
    non_negative_float,
    parse_time,
    when,
    positive_int,
)
from budgetd.cli._output import csv_writer, emit, rfc3339, table, usd_exact
from budgetd.model import TIER_INPUTS
from budgetd.render import count, money


def cmd_record(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"component": args.component, "model": args.model, **billed_fields(args)}
    for name, value in (("provider", args.provider), ("context_id", args.context), ("task_type", args.task),
                        ("tier", args.tier), ("cost_usd", args.cost), ("ts", args.ts)):
        if value is not None:
            fields[name] = value
    with client(args) as c:
        result = c.record(idempotency_key=args.idempotency_key, **fields)
    emit(args, result, lambda r: (
        f"recorded #{r.record_id}: {money(r.cost_usd)} for {r.model}"
        + (f" ({r.provider}, {r.tier})" if r.provider else f" ({r.tier})")
        + ("" if r.priced else "  [unpriced: charged by pricing.unknown_model"
           + (f"; did you mean {', '.join(r.did_you_mean)}?]" if r.did_you_mean else "]"))
        + ("  [duplicate: already recorded]" if r.duplicate else "")
    ))
    return 0


#: The columns of `budget usage --format csv`, fields of a UsageRecord.
USAGE_CSV = ("record_id", "ts", "recorded_at", "component", "model", "provider", "tier", "context_id", "task_type",
             "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
             "reasoning_tokens", "audio_input_tokens", "audio_output_tokens", "service_tier", "web_search_requests",
             "cost_usd", "priced", "price_version", "reservation_id", "request_id")


def cmd_usage(args: argparse.Namespace) -> int:
    selected = filters(args)
    if args.format == "csv" and not getattr(args, "json", False):
        # An export: every page (newest first), through the cursor, up to --limit records if given.
        writer = csv_writer()
        writer.writerow(USAGE_CSV)
        left, after = args.limit, args.after
        with client(args) as c:
            while left is None or left > 0:
                page = c.usage_list(filters=selected, since=args.since, until=args.until,
                                    limit=min(1000, left or 1000), after=after)
                for u in page.records:
                    writer.writerow([_csv_cell(u, name) for name in USAGE_CSV])
                left = None if left is None else left - len(page.records)
                after = page.next
                if after is None:
                    break
        return 0
    with client(args) as c:
        result = c.usage_list(filters=selected, since=args.since, until=args.until, limit=args.limit or 20,
                              after=args.after)

    def human(r: Any) -> str:
        out = table(
            ["id", "time (UTC)", "component", "model", "in", "out", "cache r/w", "cost"],
            [[u.record_id, u.ts.strftime("%Y-%m-%d %H:%M:%S"), u.component, u.model, count(u.input_tokens),
              count(u.output_tokens),
              f"{count(u.cache_read_tokens)}/{count(u.cache_write_tokens + u.cache_write_1h_tokens)}",
              money(u.cost_usd) + ("" if u.priced else "*")] for u in r.records],
            right={0, 4, 5, 6, 7},
        )
        if any(not u.priced for u in r.records):
            out += "\n* unpriced model: charged by pricing.unknown_model"
        if r.next:
            out += f"\nmore: budget usage --after {r.next}"
        return out

    emit(args, result, human)
    return 0


def _csv_cell(record: Any, name: str) -> Any:
    value = getattr(record, name)
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if name == "cost_usd":
        return usd_exact(value)
    return "" if value is None else value


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("record", help="record the usage of one LLM call", parents=[common])
    p.add_argument("--component", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--provider")
    billed_arguments(p)
    p.add_argument("--context", help="context or session id")
    p.add_argument("--task", help="task type")
    p.add_argument("--tier", choices=TIER_INPUTS)
    p.add_argument("--cost", type=non_negative_float, help="a cost you know, in USD (overrides the computed one)")
    p.add_argument("--ts", type=parse_time, help="when the call started (default: now)")
    p.add_argument("--idempotency-key", help="repeat a record safely: the same key is charged once")
    p.set_defaults(func=cmd_record)

    p = commands.add_parser("usage", help="list recorded calls, newest first", parents=[common])
    filter_arguments(p)
    p.add_argument("--since", type=when, help="RFC 3339, a date or a duration back from now (7d, 12h)")
    p.add_argument("--until", type=when)
    p.add_argument("--limit", type=positive_int, help="records to show (default 20; csv: every record)")
    p.add_argument("--after", help="the cursor printed by the previous page")
    p.add_argument("--format", choices=["table", "csv"], default="table", help="csv exports every page")
    p.set_defaults(func=cmd_usage)
