"""`budget alerts`: what the budgets and price sources raised, unacknowledged first; `alerts ack ID`."""

import argparse
import os
from typing import Any, Sequence

import msgspec

from budgetd.cli._arguments import client
from budgetd.cli._output import emit, table


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
            # Subscribed before listing, so no alert raised in between is missed.
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
         f"alert {args.alert_id} was acknowledged before")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    alerts = commands.add_parser("alerts", help="alerts, unacknowledged first (ack ID to acknowledge)",
                                 parents=[common])
    alerts.add_argument("--all", action="store_true", help="acknowledged ones too")
    alerts.add_argument("--follow", action="store_true", help="then print new alerts as they come")
    alerts.add_argument("--limit", type=int, default=50)
    alerts.set_defaults(func=cmd_alerts)
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    p = actions.add_parser("ack", help="acknowledge an alert", parents=[common])
    p.add_argument("alert_id", type=int)
    p.add_argument("--by", help="who acknowledges (default: $USER)")
    p.set_defaults(func=cmd_alerts_ack)
