"""`budget prices list|show|refresh|set|unset|history`: the daemon's price book and local overrides."""

import argparse
from typing import Any

from budgetd.cli._arguments import client, non_negative_float, non_negative_int
from budgetd.cli._output import emit, rate, table
from budgetd.model import TIERS
from budgetd.protocol import OpError
from budgetd.render import count


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


def _per_mtok(value: float | None) -> str:
    """A cache rate; none means the input rate applies."""
    return f"${rate(value)} / Mtok" if value is not None else "- (input rate)"


def cmd_prices_show(args: argparse.Namespace) -> int:
    with client(args) as c:
        result = c.prices_get(args.model, args.provider)

    def human(r: Any) -> str:
        p = r.price
        lines = [f"{p.model}" + (f"  (resolved from {r.resolved_from})" if r.resolved_from else "")]
        rows = [
            ("provider", p.provider or "-"), ("tier", p.tier or "-"), ("mode", p.mode),
            ("input", f"${rate(p.input_per_mtok)} / Mtok"), ("output", f"${rate(p.output_per_mtok)} / Mtok"),
            ("cache read", _per_mtok(p.cache_read_per_mtok)), ("cache write", _per_mtok(p.cache_write_per_mtok)),
            ("max input", count(p.max_input_tokens)), ("max output", count(p.max_output_tokens)),
            ("capabilities", ", ".join(p.capabilities) or "-"),
            ("source", f"{p.source} (version {p.version}{'' if p.verified else ', unverified'})"),
        ]
        rows += [(label, f"${rate(value)} / Mtok") for label, value in (
            ("cache write 1h", p.cache_write_1h_per_mtok), ("reasoning", p.reasoning_per_mtok),
            ("audio input", p.audio_input_per_mtok), ("audio output", p.audio_output_per_mtok)) if value is not None]
        for lc in ([p.long_context] if p.long_context else []) + list(p.longer_contexts):
            rows.append((f"above {count(lc.threshold_tokens)}", _rates_text(lc)))
        for tier in ("priority", "flex", "batch"):
            rates = getattr(p, f"{tier}_rates")
            if rates is not None:
                rows.append((tier, _rates_text(rates)))
                rows += [(f"  above {count(lc.threshold_tokens)}", _rates_text(lc)) for lc in rates.long_context]
        if p.off_peak is not None:
            when = "; ".join(" ".join(w.hours_utc) + " UTC" + ("" if w.weekdays is None else
                                                               f" on days {','.join(map(str, w.weekdays))}")
                             for w in p.off_peak.windows)
            rows.append(("off-peak", f"{_rates_text(p.off_peak)} ({when})"))
        if p.web_search_usd is not None:
            rows.append(("web search", f"${rate(p.web_search_usd)} per "
                                       f"{'query' if p.web_search_billing == 'per_query' else 'request that searched'}"))
        if p.request_usd is not None:
            rows.append(("per request", f"${rate(p.request_usd)}"))
        if p.alias_of:
            rows.append(("alias of", p.alias_of))
        if p.deprecated_on:
            rows.append(("deprecated on", p.deprecated_on.isoformat()))
        lines += [f"  {k:<16} {v}" for k, v in rows]
        return "\n".join(lines)

    emit(args, result, human)
    return 0


def _rates_text(rates: Any) -> str:
    """The rates a set gives, as `in $1.25  out $10 / Mtok` (the kinds it leaves out fall back)."""
    names = (("input", "in"), ("output", "out"), ("cache_read", "cache read"), ("cache_write", "cache write"),
             ("cache_write_1h", "cache write 1h"), ("reasoning", "reasoning"), ("audio_input", "audio in"),
             ("audio_output", "audio out"))
    given = [f"{label} ${rate(v)}" for kind, label in names if (v := getattr(rates, f"{kind}_per_mtok")) is not None]
    return "  ".join(given) + " / Mtok" if given else "as below it"


def _rate_change(old: float | None, new: float) -> str:
    if old is None or old == new:
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
        before = None  # the price it replaces, to show what changed
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


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    prices = commands.add_parser("prices", help="model prices", parents=[common])
    actions = prices.add_subparsers(dest="prices_command", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("list", help="list prices", parents=[common])
    p.add_argument("--provider")
    p.add_argument("--search", help="substring of the model name")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_prices_list)
    p = actions.add_parser("show", help="one model's price", parents=[common])
    p.add_argument("model")
    p.add_argument("--provider")
    p.set_defaults(func=cmd_prices_show)
    p = actions.add_parser("refresh", help="fetch every price source now and apply what passes verification",
                           parents=[common])
    p.add_argument("--timeout", type=non_negative_float, default=300.0, help="seconds to wait for the feeds")
    p.set_defaults(func=cmd_prices_refresh)
    p = actions.add_parser("set", help="a local price override (refreshes never touch it)", parents=[common])
    p.add_argument("model")
    p.add_argument("--input", type=non_negative_float, required=True, help="USD per million input tokens")
    p.add_argument("--output", type=non_negative_float, required=True, help="USD per million output tokens")
    p.add_argument("--cache-read", type=non_negative_float)
    p.add_argument("--cache-write", type=non_negative_float)
    p.add_argument("--provider")
    p.add_argument("--max-input", type=non_negative_int)
    p.add_argument("--max-output", type=non_negative_int)
    p.add_argument("--capability", action="append", metavar="NAME")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument("--mode")
    p.set_defaults(func=cmd_prices_set)
    p = actions.add_parser("unset", help="remove a local override", parents=[common])
    p.add_argument("model")
    p.set_defaults(func=cmd_prices_unset)
    p = actions.add_parser("history", help="every version of a model's price", parents=[common])
    p.add_argument("model")
    p.set_defaults(func=cmd_prices_history)
