"""`budget ask`: a question about spend, answered by the daemon's assistant (from the ledger's facts when offline)."""

import argparse
from typing import Any

from budgetd.cli._arguments import client
from budgetd.cli._errors import CliError
from budgetd.cli._output import emit
from budgetd.render import money


def cmd_ask(args: argparse.Namespace) -> int:
    question = " ".join(args.question).strip()
    if not question:
        raise CliError('ask a question, e.g. budget ask "why did spend double yesterday?"')
    with client(args, retries=1) as c:
        result = c.ask(question)

    def human(r: Any) -> str:
        source = (f"offline answer from the ledger's facts ({r.why_offline})" if r.offline
                  else f"answered by {r.model} for {money(r.cost_usd)}")
        return f"{r.answer}\n\n[{source}; facts: {r.facts.horizon}, --json for all of them]"

    emit(args, result, human)
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("ask", help="ask the budget assistant (works offline too)", parents=[common])
    p.add_argument("question", nargs="+", help='e.g. "why did spend double yesterday?"')
    p.set_defaults(func=cmd_ask)
