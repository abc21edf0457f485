"""The `budget` command. Tables for people, `--json` for machines.

Exit status: 0 on success, 1 when the daemon refused or failed the request,
2 on bad usage of the command itself.
"""

import argparse
import csv
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import msgspec

from budgetd.client import SyncBudgetClient
from budgetd.model import DIMS
from budgetd.periods import parse_when, zone
from budgetd.protocol import OpError
from budgetd.render import bar, count, duration, money


class CliError(Exception):
    pass


# -- output -----------------------------------------------------------------------


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int] | None = None) -> str:
    right = right or set()
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def emit(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        sys.stdout.write(human(result) + "\n")


# -- parsing helpers ----------------------------------------------------------------


def parse_time(text: str, zone_name: str = "UTC") -> dt.datetime:
    try:
        return parse_when(text, zone_name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} should look like dim=value, e.g. component=rhetor")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def client(args: argparse.Namespace) -> SyncBudgetClient:
    return SyncBudgetClient(getattr(args, "socket", None), timeout=getattr(args, "timeout", 10.0), retries=2)


# -- commands ----------------------------------------------------------------------


def cmd_daemon(args: argparse.Namespace) -> int:
    from budgetd import clock as clock_module
    from budgetd import config as config_module
    from budgetd import daemon

    try:
        config = config_module.load(args.config)
        clock = clock_module.from_environ()
    except (config_module.ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    overrides: dict[str, Any] = {}
    if getattr(args, "socket", None):
        overrides["socket"] = args.socket
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    http = config.http
    if args.no_http:
        http = msgspec.structs.replace(http, listen="")
    elif args.http:
        http = msgspec.structs.replace(http, listen=args.http)
    config = msgspec.structs.replace(config, daemon=msgspec.structs.replace(config.daemon, **overrides), http=http)
    try:
        daemon.run(config, clock)
    except daemon.StartupError as exc:
        raise CliError(f"cannot start: {exc}") from None
    except KeyboardInterrupt:
        pass
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.status()

    def human(s: Any) -> str:
        d, t, p = s.daemon, s.totals, s.prices
        lines = [
            f"budgetd {d.version}  pid {d.pid}  up {duration(d.uptime_s)}  socket {d.socket}",
            f"ledger  {d.data_dir}  durability={d.durability}",
            f"spent   {money(t.cost_usd)} over {count(t.requests)} requests, {count(t.tokens)} tokens",
            f"prices  version {p.version}, {count(p.models)} models",
            *[f"  {src.source:<16} " + _source_text(src) for src in p.sources],
            "actors  " + ", ".join(
                f"{a.name}{'' if a.running else ' (down)'}"
                + (f" restarts={a.restarts}" if a.restarts else "")
                + (f" queue={a.mailbox_depth}" if a.mailbox_depth else "")
                for a in d.actors
            ),
        ]
        if s.budgets:
            lines.append("")
            lines.append(table(
                ["budget", "key", "spent", "limit", "used", "status"],
                [[b.budget, ",".join(f"{k}={v}" for k, v in b.key.items()) or "-",
                  money(b.spent_usd), money(b.limit_usd), f"{b.used_fraction:.0%}", b.status] for b in s.budgets],
                right={2, 3, 4},
            ))
        lines += [_forecast_text(f, dt.timezone.utc) for f in s.forecasts]
        return "\n".join(lines)

    emit(args, result, human)
    return 0


def _source_text(src: Any) -> str:
    ok = f"ok, {count(src.models)} models, last {src.last_success:%Y-%m-%d %H:%M} UTC" if src.last_success else ""
    if src.last_error:
        return f"failed: {src.last_error}" + (f" (last {ok})" if ok else "")
    return ok or "not fetched yet"


def cmd_record(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        "component": args.component, "model": args.model, "input_tokens": args.input,
        "output_tokens": args.output, "cache_read_tokens": args.cache_read, "cache_write_tokens": args.cache_write,
    }
    for name, value in (("provider", args.provider), ("context_id", args.context), ("task_type", args.task),
                        ("tier", args.tier), ("cost_usd", args.cost), ("ts", args.ts)):
        if value is not None:
            fields[name] = value
    with client(args) as c:
        result = c.record(idempotency_key=args.idempotency_key, **fields)
    emit(args, result, lambda r: (
        f"recorded #{r.record_id}: {money(r.cost_usd)} for {r.model}"
        + (f" ({r.provider}, {r.tier})" if r.provider else f" ({r.tier})")
        + ("" if r.priced else "  [unpriced: charged by pricing.unknown_model]")
        + ("  [duplicate: already recorded]" if r.duplicate else "")
    ))
    return 0


def _filters(args: argparse.Namespace) -> dict[str, str] | None:
    filters = dict(args.filter or [])
    for name in ("component", "model", "context_id", "task_type", "provider", "tier"):
        value = getattr(args, name, None)
        if value:
            filters[name] = value
    return filters or None


USAGE_CSV = ("record_id", "ts", "recorded_at", "component", "model", "provider", "tier", "context_id", "task_type",
             "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "priced",
             "price_version", "reservation_id", "request_id")


def cmd_usage(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if args.format == "csv" and not getattr(args, "json", False):
        # An export: every page (newest first), through the cursor, up to --limit records if given.
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(USAGE_CSV)
        left, after = args.limit, args.after
        with client(args) as c:
            while left is None or left > 0:
                page = c.usage_list(filters=filters, since=args.since, until=args.until,
                                    limit=min(1000, left or 1000), after=after)
                for u in page.records:
                    writer.writerow([_csv_cell(u, name) for name in USAGE_CSV])
                left = None if left is None else left - len(page.records)
                after = page.next
                if after is None:
                    break
        return 0
    with client(args) as c:
        result = c.usage_list(filters=filters, since=args.since, until=args.until, limit=args.limit or 20,
                              after=args.after)
    def human(r: Any) -> str:
        out = table(
            ["id", "time (UTC)", "component", "model", "in", "out", "cache r/w", "cost"],
            [[u.record_id, u.ts.strftime("%Y-%m-%d %H:%M:%S"), u.component, u.model, count(u.input_tokens),
              count(u.output_tokens), f"{count(u.cache_read_tokens)}/{count(u.cache_write_tokens)}",
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
        return _rfc3339(value)
    if name == "cost_usd":
        return _usd_exact(value)
    return "" if value is None else value


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _usd_exact(value: float) -> str:
    """Dollars to the nano-dollar, as the ledger keeps them."""
    return f"{value:.9f}"


_BUCKET_LABEL = {"hour": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d %a", "week": "week of %Y-%m-%d", "month": "%Y-%m"}
def check_zone(name: str) -> None:
    """--tz must name an IANA zone (a CliError says so)."""
    try:
        zone(name)
    except ValueError as exc:
        raise CliError(f"--tz: {exc}") from None


def cmd_report(args: argparse.Namespace) -> int:
    check_zone(args.tz)
    times = {}
    for name in ("since", "until"):
        text = getattr(args, name)
        try:
            times[name] = None if text is None else parse_time(text, args.tz)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"--{name}: {exc}") from None
    group_by = [d.strip() for d in (args.by or "").split(",") if d.strip()]
    with client(args) as c:
        result = c.report(group_by, bucket=args.bucket, timezone=args.tz, filters=_filters(args),
                          limit=args.limit, order=args.order, **times)
    fmt = "json" if getattr(args, "json", False) else args.format
    if fmt == "json":
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    elif fmt == "csv":
        _report_csv(result, group_by, args.bucket)
    else:
        sys.stdout.write(_report_text(result, group_by, args.bucket, args.tz) + "\n")
    return 0


def _report_csv(result: Any, group_by: list[str], bucket: str | None) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    sums = ["requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "tokens"]
    writer.writerow((["bucket_start"] if bucket else []) + group_by + sums + ["cost_usd"])
    for row in result.rows:
        writer.writerow(
            ([_rfc3339(row.bucket_start)] if bucket else [])
            + ["(other)" if row.other else (row.group.get(d) or "") for d in group_by]
            + [getattr(row, s) for s in sums] + [_usd_exact(row.cost_usd)]
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
           f"{count(r.cache_read_tokens)}/{count(r.cache_write_tokens)}", money(r.cost_usd),
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
        lines.append(_forecast_text(f, local))
    return "\n".join(lines)


def _forecast_text(f: Any, local: Any) -> str:
    key = ",".join(f"{k}={v}" for k, v in f.key.items())
    name = f.budget + (f"[{key}]" if key else "")
    limit = money(f.limit_usd) if f.limit_usd is not None else f"{count(f.limit_tokens)} tokens"
    spent = money(f.spent_usd) if f.limit_usd is not None else f"{count(f.spent_tokens)} tokens"
    rate_text = (f"{money(f.rate_usd_per_hour)}/h" if f.limit_usd is not None
                 else f"{count(round(f.rate_tokens_per_hour))} tokens/h")
    text = f"forecast {name}: {spent} of {limit} at {rate_text}"
    if f.projected_usd is not None:
        projected = money(f.projected_usd) if f.limit_usd is not None else f"{count(f.projected_tokens)} tokens"
        text += f", projected {projected} by {f.window_end.astimezone(local):%Y-%m-%d %H:%M}"
    if f.exhausted_at is not None:
        text += f"; limit reached {f.exhausted_at.astimezone(local):%Y-%m-%d %H:%M %Z}"
    return text


def cmd_ask(args: argparse.Namespace) -> int:
    question = " ".join(args.question).strip()
    if not question:
        raise CliError('ask a question, e.g. budget ask "why did spend double yesterday?"')
    with SyncBudgetClient(getattr(args, "socket", None), timeout=10.0, retries=1) as c:
        result = c.ask(question)

    def human(r: Any) -> str:
        source = (f"offline answer from the ledger's facts ({r.why_offline})" if r.offline
                  else f"answered by {r.model} for {money(r.cost_usd)}")
        return f"{r.answer}\n\n[{source}; facts: {r.facts.horizon}, --json for all of them]"

    emit(args, result, human)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from budgetd.integrations import importers

    socket = getattr(args, "socket", None)
    try:
        if args.source == "rhetor":
            check_zone(args.tz)
            report = importers.import_rhetor(socket, Path(args.path), dry_run=args.dry_run, zone_name=args.tz)
        else:
            report = importers.import_apollo(socket, Path(args.path), dry_run=args.dry_run)
    except importers.SourceError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.write(report.text() + "\n")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    dest = Path(args.path).expanduser()
    if not dest.is_absolute():
        dest = dest.resolve()  # relative to here; the daemon takes absolute paths only
    with SyncBudgetClient(getattr(args, "socket", None), timeout=10.0, retries=1) as c:
        result = c.backup(str(dest))
    emit(args, result, lambda r: f"backup of {count(r.records)} records written to {r.path} "
                                 f"({r.bytes / 1e6:.1f} MB in {r.duration_s:g}s), verified")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    import shutil

    from actors.ledger import LedgerError, verify_ledger
    from budgetd import config as config_module
    from budgetd.daemon import StartupError, lock_data_dir

    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        raise CliError(str(exc)) from None
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.data_path
    source = Path(args.path).expanduser()
    try:
        version, records = verify_ledger(source)
    except LedgerError as exc:
        raise CliError(f"{exc} Nothing was restored.") from None
    try:
        lock = lock_data_dir(data_dir)
    except StartupError as exc:
        raise CliError(f"{exc}: stop the daemon before a restore") from None
    try:
        ledger = data_dir / "ledger.db"
        kept = None
        if ledger.exists():
            kept = data_dir / f"ledger.db.before-restore-{dt.datetime.now():%Y%m%d-%H%M%S}"
            ledger.rename(kept)
            for suffix in ("-wal", "-shm"):  # the old file's journal goes with it
                side = Path(str(ledger) + suffix)
                if side.exists():
                    side.rename(Path(str(kept) + suffix))
        partial = data_dir / "ledger.db.restoring"
        shutil.copyfile(source, partial)
        os.replace(partial, ledger)
    finally:
        lock.close()
    print(f"restored {count(records)} records (schema {version}) from {source} into {ledger}"
          + (f"; the previous ledger is kept as {kept}" if kept else ""))
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    if args.tz is not None:
        check_zone(args.tz)
    from tui.app import BudgetApp  # Textual loads only for the dashboard

    BudgetApp(socket=getattr(args, "socket", None), timezone=args.tz).run()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from budgetd import demo

    with SyncBudgetClient(getattr(args, "socket", None), timeout=10.0, retries=2) as c:
        c.ping()  # a clear message now if no daemon runs, not after the first call
        try:
            demo.run(c, args.rate, args.duration, seed=args.seed)
        except KeyboardInterrupt:
            print("demo: stopped")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.http is not None:
        host, _, port = args.http.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8014; got {args.http!r}")
    from budgetd import mcp_bridge  # the MCP SDK loads only for the bridge

    mcp_bridge.run(getattr(args, "socket", None), http=args.http, read_only=args.read_only)
    return 0


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def cmd_prices_list(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.prices_list(provider=args.provider, search=args.search, limit=args.limit)
    emit(args, result, lambda r: table(
        ["model", "provider", "tier", "in/Mtok", "out/Mtok", "cache r", "cache w", "context"],
        [[p.model, p.provider or "-", p.tier or "-", rate(p.input_per_mtok), rate(p.output_per_mtok),
          rate(p.cache_read_per_mtok), rate(p.cache_write_per_mtok), count(p.max_input_tokens)] for p in r.prices],
        right={3, 4, 5, 6, 7},
    ) + f"\n{len(r.prices)} of {r.total} models, price book version {r.version}")
    return 0


def cmd_prices_show(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.prices_get(args.model, args.provider)

    def human(r: Any) -> str:
        p = r.price
        lines = [f"{p.model}" + (f"  (resolved from {r.resolved_from})" if r.resolved_from else "")]
        rows = [
            ("provider", p.provider or "-"), ("tier", p.tier or "-"), ("mode", p.mode),
            ("input", f"${rate(p.input_per_mtok)} / Mtok"), ("output", f"${rate(p.output_per_mtok)} / Mtok"),
            ("cache read", f"${rate(p.cache_read_per_mtok)} / Mtok" if p.cache_read_per_mtok is not None else "- (input rate)"),
            ("cache write", f"${rate(p.cache_write_per_mtok)} / Mtok" if p.cache_write_per_mtok is not None else "- (input rate)"),
            ("max input", count(p.max_input_tokens)), ("max output", count(p.max_output_tokens)),
            ("capabilities", ", ".join(p.capabilities) or "-"),
            ("source", f"{p.source} (version {p.version}{'' if p.verified else ', unverified'})"),
        ]
        if p.long_context:
            lc = p.long_context
            rows.append((f"above {count(lc.threshold_tokens)}",
                         f"in ${rate(lc.input_per_mtok)}  out ${rate(lc.output_per_mtok)} / Mtok"))
        if p.deprecated_on:
            rows.append(("deprecated on", p.deprecated_on.isoformat()))
        lines += [f"  {k:<14} {v}" for k, v in rows]
        return "\n".join(lines)

    emit(args, result, human)
    return 0


def _state_rows(states: Sequence[Any]) -> str:
    return table(
        ["budget", "key", "window (UTC)", "spent", "reserved", "limit", "tokens", "used", "status", "policy"],
        [[b.budget, ",".join(f"{k}={v}" for k, v in b.key.items()) or "-",
          b.window_start.strftime("%Y-%m-%d %H:%M") if b.window_start else "total",
          money(b.spent_usd), money(b.reserved_usd), money(b.limit_usd),
          f"{count(b.spent_tokens)}/{count(b.limit_tokens)}" if b.limit_tokens is not None else count(b.spent_tokens),
          f"{b.used_fraction:.1%}", b.status, b.policy] for b in states],
        right={3, 4, 5, 6, 7},
    )


def _scope_text(spec: Any) -> str:
    scope = msgspec.structs.asdict(spec.scope)
    return ",".join(f"{k}={v}" for k, v in scope.items() if v is not None) or "(global)"


def cmd_budgets_list(args: argparse.Namespace) -> int:
    with client(args) as c:
        budgets = c.budget_list()
    emit(args, budgets, lambda bs: table(
        ["name", "scope", "period", "zone", "limit $", "limit tokens", "policy", "enabled"],
        [[b.name, _scope_text(b), b.period, b.timezone, money(b.limit_usd), count(b.limit_tokens), b.policy,
          "yes" if b.enabled else "no"] for b in bs],
    ) if bs else "no budgets; create one with `budget budgets set NAME --period daily --limit-usd 50 --policy hard`")
    return 0


def cmd_budgets_show(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.budget_get(args.name)

    def human(r: Any) -> str:
        b = r.budget
        head = (f"{b.name}: {b.policy} {b.period} budget ({b.timezone}) over {_scope_text(b)}; "
                f"limit {money(b.limit_usd)}" + (f" / {count(b.limit_tokens)} tokens" if b.limit_tokens else "")
                + ("" if b.enabled else "  [disabled]"))
        if b.description:
            head += f"\n{b.description}"
        return head + "\n\n" + (_state_rows(r.states) if r.states else "nothing spent in this window yet")

    emit(args, result, human)
    return 0


def cmd_budgets_set(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"name": args.name, "period": args.period, "policy": args.policy,
                              "timezone": args.timezone, "scope": dict(args.scope or []),
                              "critical_bypass": args.critical_bypass, "enabled": not args.disabled}
    for name in ("limit_usd", "limit_tokens", "description"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.threshold:
        fields["thresholds"] = sorted(args.threshold)
    with client(args) as c:
        spec = c.budget_set(**fields)
    emit(args, spec, lambda b: f"budget {b.name} set: {b.policy} {b.period} over {_scope_text(b)}")
    return 0


def cmd_budgets_delete(args: argparse.Namespace) -> int:
    with client(args) as c:
        deleted = c.budget_delete(args.name)
    emit(args, {"deleted": deleted}, lambda r: f"budget {args.name} deleted" if deleted else
         f"no budget named {args.name}")
    return 0 if deleted else 1


def _estimate_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"component": args.component, "model": args.model, "input_tokens": args.input,
                              "priority": args.priority}
    for name, value in (("provider", args.provider), ("context_id", args.context), ("task_type", args.task),
                        ("tier", args.tier), ("max_output_tokens", args.max_output),
                        ("cache_read_tokens", args.cache_read)):
        if value is not None:
            fields[name] = value
    return fields


def _decision_text(d: Any) -> str:
    verdict = {"allow": "allowed", "warn": "allowed, with a warning", "downgrade": "allowed; consider a cheaper model",
               "deny": "DENIED"}[d.action]
    lines = [f"{verdict}: estimated {money(d.estimated_cost_usd)} for {count(d.estimated_tokens)} tokens"]
    if d.reservation_id:
        lines.append(f"reservation {d.reservation_id}, held until {d.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    lines += [f"  - {reason}" for reason in d.reasons]
    if d.suggestion:
        s = d.suggestion
        lines.append(f"suggestion: {s.model} ({s.tier}), estimated {money(s.estimated_cost_usd)}")
    if d.budgets:
        lines += ["", _state_rows(d.budgets)]
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    with client(args) as c:
        decision = c.check(**_estimate_fields(args))
    emit(args, decision, _decision_text)
    return 0 if decision.allowed else DENIED


def cmd_reserve(args: argparse.Namespace) -> int:
    with client(args) as c:
        decision = c.reserve(ttl_s=args.ttl, idempotency_key=args.idempotency_key, **_estimate_fields(args))
    emit(args, decision, _decision_text)
    return 0 if decision.allowed else DENIED


def cmd_commit(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"input_tokens": args.input, "output_tokens": args.output,
                              "cache_read_tokens": args.cache_read, "cache_write_tokens": args.cache_write}
    for name, value in (("component", args.component), ("model", args.model), ("cost_usd", args.cost)):
        if value is not None:
            fields[name] = value
    with client(args) as c:
        result = c.commit(args.reservation_id, idempotency_key=args.idempotency_key, **fields)
    emit(args, result, lambda r: f"committed {args.reservation_id} as record #{r.record_id}: {money(r.cost_usd)}"
         + ("  [duplicate: already committed]" if r.duplicate else ""))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    with client(args) as c:
        released = c.release(args.reservation_id)
    emit(args, {"released": released}, lambda r: f"released {args.reservation_id}" if released else
         f"{args.reservation_id} was not held (committed, released or expired)")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    need = {"capabilities": args.need or []}
    if args.min_context is not None:
        need["min_context_tokens"] = args.min_context
    if args.max_tier is not None:
        need["max_tier"] = args.max_tier
    with client(args) as c:
        result = c.route(candidates=args.candidate or None, need=need, **_estimate_fields(args))

    def human(r: Any) -> str:
        head = f"choice: {r.choice}" if r.choice else "no candidate fits the budgets"
        if r.decision:
            head += f" (estimated {money(r.decision.estimated_cost_usd)})"
        return head + "\n\n" + table(
            ["model", "tier", "estimate", "fits", "why"],
            [[a.model, a.tier or "-", money(a.estimated_cost_usd), "yes" if a.fits else "no", a.why]
             for a in r.alternatives],
            right={2},
        )

    emit(args, result, human)
    return 0 if result.choice else DENIED


def _rate_change(old: float | None, new: float) -> str:
    if old is None:
        return rate(new)
    if old == new:
        return rate(new)
    pct = "" if old == 0 else f" ({(new - old) / old:+.0%})"
    return f"{rate(old)} -> {rate(new)}{pct}"


def cmd_prices_refresh(args: argparse.Namespace) -> int:
    with client(args) as c:
        report = c.prices_refresh(timeout=args.timeout)

    def human(r: Any) -> str:
        lines = [table(
            ["source", "fetched", "models", "applied", "held", "rejected", "error"],
            [[s.source, "yes" if s.fetched else "no", count(s.models), count(s.applied), count(s.held),
              count(s.rejected), s.error or ""] for s in r.sources],
            right={2, 3, 4, 5},
        )]
        if r.changes:
            lines += ["", table(
                ["model", "status", "input $/Mtok", "output $/Mtok", "source"],
                [[d.model, d.status, _rate_change(d.old_input_per_mtok, d.new_input_per_mtok),
                  _rate_change(d.old_output_per_mtok, d.new_output_per_mtok), d.source] for d in r.changes],
            )]
            if r.more_changes:
                lines.append(f"... and {r.more_changes:,} more")
        else:
            lines.append("\nno price changed")
        lines.append(f"price book version {r.version}")
        return "\n".join(lines)

    emit(args, report, human)
    return 0 if any(s.fetched and not s.error for s in report.sources) else 1


def cmd_prices_set(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"model": args.model, "input_per_mtok": args.input, "output_per_mtok": args.output}
    for name, value in (("provider", args.provider), ("cache_read_per_mtok", args.cache_read),
                        ("cache_write_per_mtok", args.cache_write), ("max_input_tokens", args.max_input),
                        ("max_output_tokens", args.max_output), ("tier", args.tier), ("mode", args.mode)):
        if value is not None:
            fields[name] = value
    if args.capability:
        fields["capabilities"] = sorted(set(args.capability))
    with client(args) as c:
        before = None
        try:
            before = c.prices_get(args.model).price
        except OpError:
            pass
        result = c.prices_set(**fields)

    def human(r: Any) -> str:
        p = r.price
        was = (f"\n  was: in {rate(before.input_per_mtok)}, out {rate(before.output_per_mtok)} "
               f"({before.source}, version {before.version})") if before else ""
        return (f"override set: {p.model} in ${rate(p.input_per_mtok)} out ${rate(p.output_per_mtok)} per Mtok "
                f"(version {p.version}); refreshes never change it{was}")

    emit(args, result, human)
    return 0


def cmd_prices_unset(args: argparse.Namespace) -> int:
    with client(args) as c:
        removed = c.prices_unset(args.model)
    emit(args, {"removed": removed}, lambda r: f"override of {args.model} removed; the source price applies again"
         if removed else f"{args.model} has no override")
    return 0 if removed else 1


def cmd_prices_history(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.prices_history(args.model)
    emit(args, result, lambda r: table(
        ["version", "from (UTC)", "until (UTC)", "source", "in/Mtok", "out/Mtok", "cache r", "cache w", "verified"],
        [[v.version, v.effective_from.strftime("%Y-%m-%d %H:%M:%S") if v.effective_from else "-",
          v.effective_to.strftime("%Y-%m-%d %H:%M:%S") if v.effective_to else "now", v.source,
          rate(v.input_per_mtok), rate(v.output_per_mtok), rate(v.cache_read_per_mtok),
          rate(v.cache_write_per_mtok), "yes" if v.verified else "no"] for v in r.versions],
        right={0, 4, 5, 6, 7},
    ))
    return 0


def _alert_rows(alerts: Sequence[Any]) -> str:
    return table(
        ["id", "time (UTC)", "kind", "severity", "acked", "message"],
        [[a.id, a.ts.strftime("%Y-%m-%d %H:%M:%S"), a.kind, a.severity, a.acked_by or ("yes" if a.acked else ""),
          a.message] for a in alerts],
        right={0},
    )


def cmd_alerts(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.follow:
            events = c.subscribe(["alert"])
            alerts = c.alerts_list(unacked=not args.all, limit=args.limit)
            if not getattr(args, "json", False):
                print(_alert_rows(list(reversed(alerts))) if alerts else "no alerts yet; waiting for new ones")
            for event in events:
                if event.event != "alert.raised":
                    continue
                if getattr(args, "json", False):
                    print(msgspec.json.encode(event.data).decode(), flush=True)
                else:
                    a = event.data
                    print(f"{a['id']:>4}  {a['ts'][:19].replace('T', ' ')}  {a['kind']}  {a['severity']}  "
                          f"{a['message']}", flush=True)
            return 0
        alerts = c.alerts_list(unacked=not args.all, limit=args.limit)
    emit(args, alerts, lambda xs: _alert_rows(xs) if xs else
         ("no alerts" if args.all else "no unacknowledged alerts (see all with --all)"))
    return 0


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    with client(args) as c:
        acked = c.alerts_ack(args.alert_id, by=args.by or os.environ.get("USER"))
    emit(args, {"acked": acked}, lambda r: f"alert {args.alert_id} acknowledged" if acked else
         f"alert {args.alert_id} does not exist or was acknowledged before")
    return 0 if acked else 1


# -- the parser ---------------------------------------------------------------------


DENIED = 3  # exit status of a check, reserve or route that the budgets refuse

TIERS = ["lightweight", "midweight", "heavyweight", "local_lightweight", "local_midweight", "remote_heavyweight"]


def _estimate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--component", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--provider")
    p.add_argument("--input", type=non_negative_int, required=True, help="prompt tokens")
    p.add_argument("--max-output", type=non_negative_int, help="most output tokens the call may use")
    p.add_argument("--cache-read", type=non_negative_int)
    p.add_argument("--context", help="context or session id")
    p.add_argument("--task", help="task type")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument("--priority", type=int, choices=range(1, 11), default=5, metavar="1..10",
                   help="10 is critical (may bypass a hard limit where the budget allows it)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket (default: BUDGETD_SOCKET or the standard path)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for machines")

    parser = argparse.ArgumentParser(prog="budget", description="Talk to budgetd, the LLM budget authority.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("daemon", help="run the daemon in the foreground", parents=[common])
    p.add_argument("--config", help="TOML config file (default: $XDG_CONFIG_HOME/budgetd/budgetd.toml)")
    p.add_argument("--data-dir", help="where ledger.db lives")
    http = p.add_mutually_exclusive_group()
    http.add_argument("--http", metavar="HOST:PORT", help="HTTP listen address")
    http.add_argument("--no-http", action="store_true", help="do not serve HTTP")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("status", help="daemon, totals, prices and budgets", parents=[common])
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("record", help="record the usage of one LLM call", parents=[common])
    p.add_argument("--component", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--provider")
    p.add_argument("--input", type=non_negative_int, default=0, help="prompt tokens not served from cache")
    p.add_argument("--output", type=non_negative_int, default=0, help="output tokens, reasoning included")
    p.add_argument("--cache-read", type=non_negative_int, default=0)
    p.add_argument("--cache-write", type=non_negative_int, default=0)
    p.add_argument("--context", help="context or session id")
    p.add_argument("--task", help="task type")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument("--cost", type=non_negative_float, help="a cost you know, in USD (overrides the computed one)")
    p.add_argument("--ts", type=parse_time, help="when the call started (default: now)")
    p.add_argument("--idempotency-key", help="repeat a record safely: the same key is charged once")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("usage", help="list recorded calls, newest first", parents=[common])
    p.add_argument("--component")
    p.add_argument("--model")
    p.add_argument("--context", dest="context_id")
    p.add_argument("--task", dest="task_type")
    p.add_argument("--filter", action="append", type=key_value, metavar="DIM=VALUE")
    p.add_argument("--since", type=parse_time, help="RFC 3339, a date or a duration back from now (7d, 12h)")
    p.add_argument("--until", type=parse_time)
    p.add_argument("--limit", type=positive_int, help="records to show (default 20; csv: every record)")
    p.add_argument("--after", help="the cursor printed by the previous page")
    p.add_argument("--format", choices=["table", "csv"], default="table", help="csv exports every page")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("report", help="tokens and cost by dims and time buckets", parents=[common])
    p.add_argument("--by", metavar="DIMS", help="group by these, comma separated: " + ", ".join(DIMS))
    p.add_argument("--since", help="RFC 3339, a date (midnight in --tz) or a duration back from now (7d, 12h)")
    p.add_argument("--until", help="as --since (default: now)")
    p.add_argument("--bucket", choices=["hour", "day", "week", "month"])
    p.add_argument("--tz", default="UTC", help="time zone of the buckets and of dates (default UTC)")
    p.add_argument("--component")
    p.add_argument("--model")
    p.add_argument("--context", dest="context_id")
    p.add_argument("--task", dest="task_type")
    p.add_argument("--filter", action="append", type=key_value, metavar="DIM=VALUE")
    p.add_argument("--order", choices=["cost", "tokens", "requests", "group"], default="cost")
    p.add_argument("--limit", type=positive_int, help="keep the first N groups; the rest make one (other) row")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ask", help="ask the budget assistant (works offline too)", parents=[common])
    p.add_argument("question", nargs="+", help='e.g. "why did spend double yesterday?"')
    p.set_defaults(func=cmd_ask)

    imports = sub.add_parser("import", help="bring Rhetor's ledger or Apollo's policies into budgetd",
                             parents=[common])
    isub = imports.add_subparsers(dest="source", metavar="SOURCE")
    isub.required = True
    p = isub.add_parser("rhetor", help="Rhetor's SQLite (usage and budget_settings)", parents=[common])
    p.add_argument("path", help="rhetor.db")
    p.add_argument("--tz", default="UTC", help="the zone Rhetor's timestamps were written in (default UTC)")
    p.add_argument("--dry-run", action="store_true", help="check and say what would happen, write nothing")
    p.set_defaults(func=cmd_import)
    p = isub.add_parser("apollo", help="Apollo's budget_policies.json", parents=[common])
    p.add_argument("path", help="budget_policies.json")
    p.add_argument("--dry-run", action="store_true", help="check and say what would happen, write nothing")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("backup", help="an online, consistent, verified copy of the ledger", parents=[common])
    p.add_argument("path", help="where the daemon writes it")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="replace the ledger with a backup (daemon stopped; verified first)",
                       parents=[common])
    p.add_argument("path", help="a file made by `budget backup`")
    p.add_argument("--config", help="the daemon's TOML config (for its data_dir)")
    p.add_argument("--data-dir", help="the daemon's data directory")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("tui", help="the live dashboard (Textual)", parents=[common])
    p.add_argument("--tz", help="time zone for days and hours on screen (default: $TZ, else UTC)")
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("mcp", help="serve the daemon to MCP clients (stdio, or streamable HTTP)",
                       parents=[common])
    p.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--read-only", action="store_true", help="no tools that reserve, commit, record or ack")
    p.set_defaults(func=cmd_mcp)

    p = sub.add_parser("demo", help="realistic synthetic traffic against a running daemon, for the dashboard",
                       parents=[common])
    p.add_argument("--rate", type=positive_float, default=5.0, help="calls per second (default 5)")
    p.add_argument("--duration", type=positive_float, default=60.0, help="seconds (default 60)")
    p.add_argument("--seed", type=int, help="repeat the same traffic")
    p.set_defaults(func=cmd_demo)

    budgets = sub.add_parser("budgets", help="list, show, set and delete budgets", parents=[common])
    bsub = budgets.add_subparsers(dest="budgets_command", metavar="ACTION")
    bsub.required = True
    p = bsub.add_parser("list", help="every budget", parents=[common])
    p.set_defaults(func=cmd_budgets_list)
    p = bsub.add_parser("show", help="one budget and its current window", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_budgets_show)
    p = bsub.add_parser("set", help="create or replace a budget", parents=[common])
    p.add_argument("name")
    p.add_argument("--period", required=True, choices=["hourly", "daily", "weekly", "monthly", "total"])
    p.add_argument("--policy", required=True, choices=["ignore", "warn", "soft", "hard"])
    p.add_argument("--limit-usd", type=non_negative_float)
    p.add_argument("--limit-tokens", type=non_negative_int)
    p.add_argument("--scope", action="append", type=key_value, metavar="DIM=VALUE",
                   help="component, context_id, provider, model, tier or task_type; VALUE '*' = one counter per value")
    p.add_argument("--timezone", default="UTC", help="IANA zone of the calendar windows")
    p.add_argument("--threshold", action="append", type=non_negative_float, metavar="FRACTION")
    p.add_argument("--critical-bypass", action="store_true", help="priority-10 requests may pass a hard limit")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--description")
    p.set_defaults(func=cmd_budgets_set)
    p = bsub.add_parser("delete", help="delete a budget", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_budgets_delete)

    p = sub.add_parser("check", help="would this call fit the budgets? (exit 3 when denied)", parents=[common])
    _estimate_arguments(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("reserve", help="hold an estimate against the budgets (exit 3 when denied)",
                       parents=[common])
    _estimate_arguments(p)
    p.add_argument("--ttl", type=non_negative_float, help="seconds the hold lasts (default 300)")
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_reserve)

    p = sub.add_parser("commit", help="replace a hold with the actual usage", parents=[common])
    p.add_argument("reservation_id")
    p.add_argument("--input", type=non_negative_int, default=0)
    p.add_argument("--output", type=non_negative_int, default=0)
    p.add_argument("--cache-read", type=non_negative_int, default=0)
    p.add_argument("--cache-write", type=non_negative_int, default=0)
    p.add_argument("--component", help="needed only if the hold may have expired")
    p.add_argument("--model", help="needed only if the hold may have expired")
    p.add_argument("--cost", type=non_negative_float)
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("release", help="drop a hold", parents=[common])
    p.add_argument("reservation_id")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("route", help="which model to use under the budgets (exit 3 when none fits)",
                       parents=[common])
    _estimate_arguments(p)
    p.add_argument("--candidate", action="append", metavar="MODEL", help="consider only these (repeatable)")
    p.add_argument("--need", action="append", metavar="CAPABILITY",
                   help="vision, tools, json, reasoning, audio, pdf, caching ... (repeatable)")
    p.add_argument("--min-context", type=non_negative_int)
    p.add_argument("--max-tier", choices=TIERS)
    p.set_defaults(func=cmd_route)

    alerts = sub.add_parser("alerts", help="alerts, unacknowledged first (ack ID to acknowledge)",
                            parents=[common])
    alerts.add_argument("--all", action="store_true", help="acknowledged ones too")
    alerts.add_argument("--follow", action="store_true", help="then print new alerts as they come")
    alerts.add_argument("--limit", type=int, default=50)
    alerts.set_defaults(func=cmd_alerts)
    asub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    p = asub.add_parser("ack", help="acknowledge an alert", parents=[common])
    p.add_argument("alert_id", type=int)
    p.add_argument("--by", help="who acknowledges (default: $USER)")
    p.set_defaults(func=cmd_alerts_ack)

    prices = sub.add_parser("prices", help="model prices", parents=[common])
    psub = prices.add_subparsers(dest="prices_command", metavar="ACTION")
    psub.required = True
    p = psub.add_parser("list", help="list prices", parents=[common])
    p.add_argument("--provider")
    p.add_argument("--search", help="substring of the model name")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_prices_list)
    p = psub.add_parser("show", help="one model's price", parents=[common])
    p.add_argument("model")
    p.add_argument("--provider")
    p.set_defaults(func=cmd_prices_show)
    p = psub.add_parser("refresh", help="fetch every price source now and apply what passes verification",
                        parents=[common])
    p.add_argument("--timeout", type=non_negative_float, default=300.0, help="seconds to wait for the feeds")
    p.set_defaults(func=cmd_prices_refresh)
    p = psub.add_parser("set", help="a local price override (refreshes never touch it)", parents=[common])
    p.add_argument("model")
    p.add_argument("--input", type=non_negative_float, required=True, help="USD per million input tokens")
    p.add_argument("--output", type=non_negative_float, required=True, help="USD per million output tokens")
    p.add_argument("--cache-read", type=non_negative_float)
    p.add_argument("--cache-write", type=non_negative_float)
    p.add_argument("--provider")
    p.add_argument("--max-input", type=non_negative_int)
    p.add_argument("--max-output", type=non_negative_int)
    p.add_argument("--capability", action="append", metavar="NAME")
    p.add_argument("--tier", choices=["lightweight", "midweight", "heavyweight"])
    p.add_argument("--mode")
    p.set_defaults(func=cmd_prices_set)
    p = psub.add_parser("unset", help="remove a local override", parents=[common])
    p.add_argument("model")
    p.set_defaults(func=cmd_prices_unset)
    p = psub.add_parser("history", help="every version of a model's price", parents=[common])
    p.add_argument("model")
    p.set_defaults(func=cmd_prices_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OpError as exc:
        where = f" ({exc.field})" if exc.field and exc.field not in exc.message else ""
        print(f"budget: {exc.code}: {exc.message}{where}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"budget: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
