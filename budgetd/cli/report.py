"""`budget report`: tokens and cost grouped by dims and time buckets, with the budgets' forecasts."""

import argparse
import sys
from typing import Any

from budgetd.cli._arguments import check_zone, client, filter_arguments, dim_list, filters, positive_int, when
from budgetd.cli._output import csv_writer, key_text, rfc3339, table, usd_exact, write_json
from budgetd.model import BUCKETS, DIMS, REPORT_ORDERS
from budgetd.periods import zone
from budgetd.render import bar, count, money

_BUCKET_LABEL = {"hour": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d %a", "week": "week of %Y-%m-%d", "month": "%Y-%m"}


def cmd_report(args: argparse.Namespace) -> int:
    check_zone(args.tz)
    group_by = args.by or []
    with client(args) as c:
        result = c.report(group_by, bucket=args.bucket, timezone=args.tz, filters=filters(args),
                          limit=args.limit, order=args.order, since=args.since, until=args.until)
    fmt = "json" if getattr(args, "json", False) else args.format
    if fmt == "json":
        write_json(result)
    elif fmt == "csv":
        _report_csv(result, group_by, args.bucket)
    else:
        sys.stdout.write(_report_text(result, group_by, args.bucket, args.tz) + "\n")
    return 0


def _report_csv(result: Any, group_by: list[str], bucket: str | None) -> None:
    writer = csv_writer()
    sums = ["requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
            "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "audio_output_tokens",
            "web_search_requests", "tokens"]
    writer.writerow((["bucket_start"] if bucket else []) + group_by + sums + ["cost_usd"])
    for row in result.rows:
        writer.writerow(
            ([rfc3339(row.bucket_start)] if bucket else [])
            + ["(other)" if row.other else (row.group.get(d) or "") for d in group_by]
            + [getattr(row, s) for s in sums] + [usd_exact(row.cost_usd)]
        )


def _report_text(result: Any, group_by: list[str], bucket: str | None, tz: str) -> str:
    t = result.totals
    if not result.rows:
        return "no usage in this range"
    local = zone(tz)
    label = _BUCKET_LABEL.get(bucket or "", "")

    def when(row: Any) -> str:
        return row.bucket_start.astimezone(local).strftime(label)

    headers = ([f"{bucket} ({tz})"] if bucket else []) + group_by + ["requests", "in", "out", "cache r/w", "cost",
                                                                      "share"]
    rows = [
        ([when(r)] if bucket else [])
        + ["(other)" if r.other else (r.group.get(d) or "-") for d in group_by]
        + [count(r.requests), count(r.input_tokens), count(r.output_tokens),
           f"{count(r.cache_read_tokens)}/{count(r.cache_write_tokens + r.cache_write_1h_tokens)}", money(r.cost_usd),
           f"{r.cost_usd / t.cost_usd:.0%}" if t.cost_usd else "-"]
        for r in result.rows
    ]
    first = 1 if bucket else 0
    numbers = set(range(first + len(group_by), len(headers)))
    lines = [table(headers, rows, right=numbers)]
    lines.append(f"total: {money(t.cost_usd)} over {count(t.requests)} requests, {count(t.tokens)} tokens")
    if bucket:
        per_bucket: dict[str, float] = {}
        for r in result.rows:
            per_bucket[when(r)] = per_bucket.get(when(r), 0.0) + r.cost_usd
        top = max(per_bucket.values()) or 1.0
        width = max(len(k) for k in per_bucket)
        lines.append("")
        lines += [f"{k.ljust(width)}  {money(v).rjust(10)}  {bar(v / top, 40)}" for k, v in per_bucket.items()]
    for f in result.forecasts:
        lines.append(forecast_text(f, local))
    return "\n".join(lines)


def forecast_text(f: Any, local: Any) -> str:
    """One line on where a budget is heading, its times in `local`; `status` prints them too."""
    key = key_text(f.key)
    name = f.budget + (f"[{key}]" if key else "")
    limit = money(f.limit_usd) if f.limit_usd is not None else f"{count(f.limit_tokens)} tokens"
    spent = money(f.spent_usd) if f.limit_usd is not None else f"{count(f.spent_tokens)} tokens"
    rate_text = (f"{money(f.rate_usd_per_hour)}/h" if f.limit_usd is not None
                 else f"{count(round(f.rate_tokens_per_hour))} tokens/h")
    basis = "the last hour's rate" if f.rate_basis == "last_hour" else "the window's average rate"
    text = f"forecast {name}: {spent} of {limit} at {rate_text} ({basis})"
    if f.projected_usd is not None:
        projected = money(f.projected_usd) if f.limit_usd is not None else f"{count(f.projected_tokens)} tokens"
        text += f", projected {projected} by {f.window_end.astimezone(local):%Y-%m-%d %H:%M}"
    if f.exhausted_at is not None:
        text += f"; limit reached {f.exhausted_at.astimezone(local):%Y-%m-%d %H:%M %Z}"
    return text


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("report", help="tokens and cost by dims and time buckets", parents=[common])
    p.add_argument("--by", type=dim_list, metavar="DIMS", help="group by these, comma separated: " + ", ".join(DIMS))
    p.add_argument("--since", type=when, help="RFC 3339, a date (midnight in --tz) or a duration back from now (7d, 12h)")
    p.add_argument("--until", type=when, help="as --since (default: now)")
    p.add_argument("--bucket", choices=BUCKETS)
    p.add_argument("--tz", default="UTC", help="time zone of the buckets and of dates (default UTC)")
    filter_arguments(p)
    p.add_argument("--order", choices=REPORT_ORDERS, default="cost")
    p.add_argument("--limit", type=positive_int, help="keep the first N groups; the rest make one (other) row")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(func=cmd_report)
