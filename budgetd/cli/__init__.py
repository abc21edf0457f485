"""The `budget` command. Tables for people, `--json` for machines.

Exit status: 0 on success, 1 when the daemon refused or failed the request,
2 on bad usage of the command itself, 3 when the budgets deny a check, reserve or route.

Each module holds a group of commands and the `register` that adds their arguments to the parser.
"""

import argparse
import os
import sys
from typing import Sequence

from budgetd.cli import (
    admission, alerts, assistant, backups, budgets, daemon, fleet, imports, prices, report, tools, usage,
)
from budgetd.cli._arguments import common_options
from budgetd.cli._errors import CliError
from budgetd.protocol import OpError

__all__ = ["build_parser", "main"]

# In the order `budget --help` lists their commands.
_COMMAND_GROUPS = (daemon, usage, report, assistant, imports, backups, fleet, tools, budgets, admission, alerts,
                   prices)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="budget", description="Talk to budgetd, the LLM budget authority.",
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _COMMAND_GROUPS:
        group.register(commands, common)
    _help_without_a_command(parser)
    return parser


def _help_without_a_command(parser: argparse.ArgumentParser) -> None:
    """`budget`, `budget budgets`, `budget prices` ... without what to do print their commands (status 2)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            if parser.get_default("func") is None:
                parser.set_defaults(func=lambda _args, shown=parser: _show_help(shown))
            for sub in action.choices.values():
                _help_without_a_command(sub)


def _show_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OpError as exc:
        # One style for every refusal: what was wrong and what to do (the message names the field).
        print(f"budget: {exc.message}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"budget: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`budget usage --format csv | head`): quiet, and no second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
