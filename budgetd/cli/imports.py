"""`budget import`: bring Rhetor's ledger or Apollo's budget policies into budgetd."""

import argparse
import sys
from pathlib import Path

from budgetd.cli._arguments import check_zone
from budgetd.cli._errors import CliError


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


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    imports = commands.add_parser("import", help="bring Rhetor's ledger or Apollo's policies into budgetd",
                                  parents=[common])
    sources = imports.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True
    p = sources.add_parser("rhetor", help="Rhetor's SQLite (usage and budget_settings)", parents=[common])
    p.add_argument("path", help="rhetor.db")
    p.add_argument("--tz", default="UTC", help="the zone Rhetor's timestamps were written in (default UTC)")
    p.add_argument("--dry-run", action="store_true", help="check and say what would happen, write nothing")
    p.set_defaults(func=cmd_import)
    p = sources.add_parser("apollo", help="Apollo's budget_policies.json", parents=[common])
    p.add_argument("path", help="budget_policies.json")
    p.add_argument("--dry-run", action="store_true", help="check and say what would happen, write nothing")
    p.set_defaults(func=cmd_import)
