"""Programs run against a daemon: the dashboard (`tui`), the MCP bridge (`mcp`), synthetic traffic (`demo`).

Each loads its heavy dependency only when it runs, so that the rest of the CLI starts fast.
"""

import argparse

from budgetd.cli._arguments import check_zone, client, positive_float
from budgetd.cli._errors import CliError
from budgetd.config import host_port


def cmd_tui(args: argparse.Namespace) -> int:
    if args.tz is not None:
        check_zone(args.tz)
    from tui.app import BudgetApp  # Textual

    BudgetApp(socket=getattr(args, "socket", None), timezone=args.tz).run()
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.http is not None:
        try:
            host_port(args.http)
        except ValueError as exc:
            raise CliError(f"--http: {exc}") from None
    from budgetd import mcp_bridge  # the MCP SDK

    mcp_bridge.run(getattr(args, "socket", None), http=args.http, read_only=args.read_only)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from budgetd import demo

    with client(args) as c:
        c.ping()  # a clear message now if no daemon runs, not after the first call
        try:
            demo.run(c, args.rate, args.duration, seed=args.seed, keep=args.keep)
        except KeyboardInterrupt:
            print("demo: stopped")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("tui", help="the live dashboard (Textual)", parents=[common])
    p.add_argument("--tz", help="time zone for days and hours on screen (default: $TZ, else UTC)")
    p.set_defaults(func=cmd_tui)

    p = commands.add_parser("mcp", help="serve the daemon to MCP clients (stdio, or streamable HTTP)",
                            parents=[common])
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--read-only", action="store_true", help="no tools that reserve, commit, record or ack")
    p.set_defaults(func=cmd_mcp)

    p = commands.add_parser("demo", help="realistic synthetic traffic against a running daemon, for the dashboard",
                            parents=[common])
    p.add_argument("--rate", type=positive_float, default=5.0, help="calls per second (default 5)")
    p.add_argument("--duration", type=positive_float, default=60.0,
                   help="seconds at that rate (default 60): the run sends rate x duration calls")
    p.add_argument("--seed", type=int, help="repeat the same traffic")
    p.add_argument("--keep", action="store_true", help="keep the run's budget afterwards (default: delete it)")
    p.set_defaults(func=cmd_demo)
