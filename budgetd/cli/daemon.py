"""`budget daemon` runs the daemon in the foreground; `budget status` asks a running one how it is."""

import argparse
import datetime as dt
from typing import Any

import msgspec

from budgetd.cli._arguments import client
from budgetd.cli._errors import CliError
from budgetd.cli._output import emit, key_text, table
from budgetd.cli.report import forecast_text
from budgetd.render import count, duration, money


def cmd_daemon(args: argparse.Namespace) -> int:
    # The daemon's modules (actors, servers, SQLite) load only when it runs.
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
        failure = daemon.run(config, clock)
    except daemon.StartupError as exc:
        raise CliError(f"cannot start: {exc}") from None
    except KeyboardInterrupt:
        return 0
    if failure is not None:
        raise CliError(f"stopped: {failure}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.status()

    def human(s: Any) -> str:
        d, t, p = s.daemon, s.totals, s.prices
        lines = [
            f"budgetd {d.version}  pid {d.pid}  up {duration(d.uptime_s)}  socket {d.socket}",
            f"ledger  the fleet database {d.fleet_database}" if d.fleet_database else
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
                [[b.budget, key_text(b.key) or "-", money(b.spent_usd), money(b.limit_usd), f"{b.used_fraction:.0%}",
                  b.status] for b in s.budgets],
                right={2, 3, 4},
            ))
        lines += [forecast_text(f, dt.timezone.utc) for f in s.forecasts]
        return "\n".join(lines)

    emit(args, result, human)
    return 0


def _source_text(src: Any) -> str:
    ok = f"ok, {count(src.models)} models, last {src.last_success:%Y-%m-%d %H:%M} UTC" if src.last_success else ""
    if src.last_error:
        return f"failed: {src.last_error}" + (f" (last {ok})" if ok else "")
    return ok or "not fetched yet"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("daemon", help="run the daemon in the foreground", parents=[common])
    p.add_argument("--config", help="TOML config file (default: $XDG_CONFIG_HOME/budgetd/budgetd.toml)")
    p.add_argument("--data-dir", help="where ledger.db lives")
    http = p.add_mutually_exclusive_group()
    http.add_argument("--http", metavar="HOST:PORT", help="HTTP listen address")
    http.add_argument("--no-http", action="store_true", help="do not serve HTTP")
    p.set_defaults(func=cmd_daemon)

    p = commands.add_parser("status", help="daemon, totals, prices and budgets", parents=[common])
    p.set_defaults(func=cmd_status)
