"""`budget fleet import`: move a single host's ledger into the fleet's PostgreSQL database (daemon stopped)."""

import argparse
from pathlib import Path

import anyio

from budgetd.cli._arguments import client
from budgetd.cli._errors import CliError
from budgetd.cli._output import emit, table
from budgetd.render import count


def cmd_fleet_import(args: argparse.Namespace) -> int:
    # No daemon to ask: the import reads the SQLite file and writes the database itself.
    from budgetd.fleet import FleetDatabaseError, ImportRefused, import_ledger
    from budgetd import config as config_module

    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        raise CliError(str(exc)) from None
    dsn = args.dsn or config.fleet.dsn
    if not dsn:
        raise CliError("name the fleet database: --dsn postgresql://user@host/database, or fleet.dsn in the config "
                       "(BUDGETD_FLEET_DSN)")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise CliError("--dsn must be a PostgreSQL URL (postgresql://user@host/database)")
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.data_path
    ledger = Path(args.ledger).expanduser() if args.ledger else data_dir / "ledger.db"
    try:
        done = anyio.run(import_ledger, ledger, dsn)
    except (ImportRefused, FleetDatabaseError) as exc:
        raise CliError(str(exc)) from None
    print(f"imported {count(done.rows['usage'])} records, {count(done.rows['budgets'])} budgets, "
          f"{count(done.rows['price_versions'])} price versions, {count(done.rows['alerts'])} alerts and "
          f"{count(done.rows['holds'])} open holds from {ledger} into {done.database}")
    return 0


def cmd_fleet_status(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.fleet_status()

    def human(r: object) -> str:
        rows = [[("* " if n.this else "  ") + n.node, "serving" if n.serving else "gone", n.version,
                 n.started_at.strftime("%Y-%m-%d %H:%M:%S"), f"{(r.now - n.heartbeat_at).total_seconds():.1f}s ago",
                 count(n.open_holds), f"${n.held_usd:,.4f}", "?" if n.spooled < 0 else count(n.spooled)]
                for n in r.nodes]  # type: ignore[attr-defined]
        return (f"fleet database {r.database} (this node: {r.node})\n"  # type: ignore[attr-defined]
                + table(["node", "state", "version", "started (UTC)", "heartbeat", "open holds", "held on hard",
                         "spooled"], rows, right={5, 6, 7}))

    emit(args, result, human)
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fleet = commands.add_parser("fleet", help="the fleet's PostgreSQL database", parents=[common])
    sub = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND")
    p = sub.add_parser("import", help="copy a single host's ledger into an empty fleet database (daemon stopped)",
                       parents=[common])
    p.add_argument("ledger", nargs="?", help="the SQLite ledger (default: ledger.db in the data directory)")
    p.add_argument("--dsn", help="the fleet database (default: fleet.dsn of the config)")
    p.add_argument("--config", help="the daemon's TOML config (for fleet.dsn and data_dir)")
    p.add_argument("--data-dir", help="the daemon's data directory")
    p.set_defaults(func=cmd_fleet_import)
    p = sub.add_parser("status", help="the nodes sharing this daemon's fleet database", parents=[common])
    p.set_defaults(func=cmd_fleet_status)
