"""`budget budgets list|show|set|delete`: the budgets and the state of their current windows."""

import argparse
from typing import Any, Sequence

import msgspec

from budgetd.cli._arguments import client, dim_value, non_negative_float, non_negative_int
from budgetd.cli._errors import CliError
from budgetd.cli._output import emit, key_text, table
from budgetd.model import PERIODS, POLICIES
from budgetd.render import count, money


def state_rows(states: Sequence[Any]) -> str:
    """Budgets' counters in their windows, as `budgets show` and the admission commands print them."""
    return table(
        ["budget", "key", "window (UTC)", "spent", "reserved", "limit", "tokens", "used", "status", "policy"],
        [[b.budget, key_text(b.key) or "-",
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
        return head + "\n\n" + (state_rows(r.states) if r.states else "nothing spent in this window yet")

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
    if not deleted:
        raise CliError(f"no budget named {args.name!r}; see `budget budgets list`")
    emit(args, {"deleted": deleted}, lambda r: f"budget {args.name} deleted")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    budgets = commands.add_parser("budgets", help="list, show, set and delete budgets", parents=[common])
    actions = budgets.add_subparsers(dest="budgets_command", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("list", help="every budget", parents=[common])
    p.set_defaults(func=cmd_budgets_list)
    p = actions.add_parser("show", help="one budget and its current window", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_budgets_show)
    p = actions.add_parser("set", help="create or replace a budget", parents=[common])
    p.add_argument("name")
    p.add_argument("--period", required=True, choices=PERIODS)
    p.add_argument("--policy", required=True, choices=POLICIES)
    p.add_argument("--limit-usd", type=non_negative_float)
    p.add_argument("--limit-tokens", type=non_negative_int)
    p.add_argument("--scope", action="append", type=dim_value, metavar="DIM=VALUE",
                   help="component, context_id, provider, model, tier or task_type; VALUE '*' = one counter per value")
    p.add_argument("--timezone", default="UTC", help="IANA zone of the calendar windows")
    p.add_argument("--threshold", action="append", type=non_negative_float, metavar="FRACTION")
    p.add_argument("--critical-bypass", action="store_true", help="priority-10 requests may pass a hard limit")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--description")
    p.set_defaults(func=cmd_budgets_set)
    p = actions.add_parser("delete", help="delete a budget", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_budgets_delete)
