"""Asking before spending: `check` and `reserve` an estimate, `commit` or `release` the hold, `route` to a model.

A refusal by the budgets is an answer, not a failure: these commands exit with DENIED for it.
"""

import argparse
from typing import Any

from budgetd.cli._arguments import billed_arguments, billed_fields, client, non_negative_float, non_negative_int, positive_float
from budgetd.cli._output import emit, table
from budgetd.cli.budgets import state_rows
from budgetd.model import TIER_INPUTS
from budgetd.render import count, money

DENIED = 3  # exit status of a check, reserve or route that the budgets refuse


def _estimate_arguments(p: argparse.ArgumentParser) -> None:
    """The call to estimate, as check, reserve and route take it; read back with `_estimate_fields`."""
    p.add_argument("--component", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--provider")
    p.add_argument("--input", type=non_negative_int, required=True, help="prompt tokens")
    p.add_argument("--max-output", type=non_negative_int, help="most output tokens the call may use")
    p.add_argument("--cache-read", type=non_negative_int)
    p.add_argument("--context", help="context or session id")
    p.add_argument("--task", help="task type")
    p.add_argument("--tier", choices=TIER_INPUTS)
    p.add_argument("--priority", type=int, choices=range(1, 11), default=5, metavar="1..10",
                   help="10 is critical (may bypass a hard limit where the budget allows it)")


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
    lines = [f"{verdict}: estimated {money(d.estimated_cost_usd)} for {count(d.estimated_tokens)} tokens"
             + ("  [duplicate: the first answer to this idempotency key; nothing more held]" if d.duplicate else "")]
    if d.reservation_id:
        lines.append(f"reservation {d.reservation_id}, held until {d.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    lines += [f"  - {reason}" for reason in d.reasons]
    if d.suggestion:
        s = d.suggestion
        lines.append(f"suggestion: {s.model} ({s.tier}), estimated {money(s.estimated_cost_usd)}")
    if d.budgets:
        lines += ["", state_rows(d.budgets)]
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
    fields: dict[str, Any] = billed_fields(args)
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
        if not r.priced:
            hint = f"; did you mean {', '.join(r.did_you_mean)}?" if r.did_you_mean else ""
            head = f"{args.model!r} has no price{hint}\n"
        else:
            head = ""
        if r.choice:
            head += f"choice: {r.choice}"
        elif r.alternatives:
            head += "no candidate fits the budgets"
        else:
            head += "no priced model meets the need" + (f" (capabilities: {', '.join(args.need)})" if args.need
                                                       else "")
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


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("check", help="would this call fit the budgets? (exit 3 when denied)", parents=[common])
    _estimate_arguments(p)
    p.set_defaults(func=cmd_check)

    p = commands.add_parser("reserve", help="hold an estimate against the budgets (exit 3 when denied)",
                            parents=[common])
    _estimate_arguments(p)
    p.add_argument("--ttl", type=positive_float, help="seconds the hold lasts (default 300)")
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_reserve)

    p = commands.add_parser("commit", help="replace a hold with the actual usage", parents=[common])
    p.add_argument("reservation_id")
    billed_arguments(p)
    p.add_argument("--component", help="needed only if the hold may have expired")
    p.add_argument("--model", help="needed only if the hold may have expired")
    p.add_argument("--cost", type=non_negative_float)
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_commit)

    p = commands.add_parser("release", help="drop a hold", parents=[common])
    p.add_argument("reservation_id")
    p.set_defaults(func=cmd_release)

    p = commands.add_parser("route", help="which model to use under the budgets (exit 3 when none fits)",
                            parents=[common])
    _estimate_arguments(p)
    p.add_argument("--candidate", action="append", metavar="MODEL", help="consider only these (repeatable)")
    p.add_argument("--need", action="append", metavar="CAPABILITY",
                   help="vision, tools, json, reasoning, audio, pdf, caching ... (repeatable)")
    p.add_argument("--min-context", type=non_negative_int)
    p.add_argument("--max-tier", choices=TIER_INPUTS)
    p.set_defaults(func=cmd_route)
