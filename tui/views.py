"""What the dashboard shows, as Rich text built from the daemon's answers. Pure functions, no I/O."""

import datetime as dt
from typing import Any, Sequence

from rich.text import Text

from budgetd.render import count, duration, money

STATUS_STYLE = {"ok": "green", "warning": "yellow", "exceeded": "bold red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
PALETTE = ["dodger_blue1", "orange1", "medium_purple1", "spring_green2", "hot_pink", "gold1", "grey62"]


def budget_label(budget: str, key: dict[str, str]) -> str:
    """`name [value]` for a budget with one counter per value (the dims are in its scope)."""
    return budget + (" [" + ",".join(key.values()) + "]" if key else "")


def gauges(states: Sequence[Any], forecasts: Sequence[Any], now: dt.datetime, width: int = 24) -> Text:
    """One gauge per budget key in its current window: spent and held against the limit."""
    if not states:
        return Text("No budgets yet. Set one with `budget budgets set NAME --period daily --limit-usd 10`.",
                    style="dim")
    ahead = {(f.budget, tuple(sorted(f.key.items()))): f for f in forecasts}
    out = Text()
    for s in states:
        style = STATUS_STYLE.get(s.status, "")
        fraction = s.used_fraction
        held = 0.0
        if s.limit_usd:
            held = s.reserved_usd / s.limit_usd
        elif s.limit_tokens:
            held = s.reserved_tokens / s.limit_tokens
        used = round(min(fraction, 1.0) * width)
        reserved = min(width - used, round(held * width))
        out.append(f"{budget_label(s.budget, s.key):<30.30} ", style="bold")
        out.append("█" * used, style=style)
        out.append("▒" * reserved, style="dim")
        out.append("░" * (width - used - reserved), style="grey30")
        out.append(f" {fraction:>5.0%}  ", style=style)
        out.append(s.status, style=style)
        out.append("\n" + " " * 31)
        if s.limit_usd is not None:
            out.append(f"{money(s.spent_usd)} spent + {money(s.reserved_usd)} held of {money(s.limit_usd)}")
        else:
            out.append(f"{count(s.spent_tokens)} + {count(s.reserved_tokens)} of {count(s.limit_tokens)} tokens")
        if s.window_end is not None:
            out.append(f", ends in {duration((s.window_end - now).total_seconds())}", style="dim")
        f = ahead.get((s.budget, tuple(sorted(s.key.items()))))
        if f is not None and f.projected_usd is not None:
            projected = money(f.projected_usd) if f.limit_usd is not None else f"{count(f.projected_tokens)} tokens"
            over = (f.limit_usd is not None and f.projected_usd > f.limit_usd) or (
                f.limit_tokens is not None and (f.projected_tokens or 0) > f.limit_tokens)
            out.append(f", projected {projected}", style="bold red" if over else "dim")
        out.append("\n")
    return out


def totals_line(today: Any, month: Any, last_minute: Any) -> Text:
    out = Text()
    out.append("Today ", style="dim")
    out.append(money(today.cost_usd), style="bold")
    out.append(f" ({count(today.requests)} calls)   ", style="dim")
    out.append("This month ", style="dim")
    out.append(money(month.cost_usd), style="bold")
    out.append(f" ({count(month.requests)} calls)   ", style="dim")
    out.append("Last minute ", style="dim")
    out.append(f"{money(last_minute.cost_usd)}/min", style="bold")
    out.append(f" ({count(last_minute.requests)} calls)", style="dim")
    return out


def spend_chart(rows: Sequence[Any], bucket: str, zone: Any, width: int = 50) -> Text:
    """Cost per bucket as bars, stacked by component (the top ones; the rest as `other`)."""
    if not rows:
        return Text("No spend in this range yet.", style="dim")
    components: list[str] = []
    for r in rows:
        name = "(other)" if r.other else (r.group.get("component") or "-")
        if name not in components:
            components.append(name)
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(components)}
    per_bucket: dict[dt.datetime, list[Any]] = {}
    for r in rows:
        per_bucket.setdefault(r.bucket_start, []).append(r)
    top = max(sum(r.cost_usd for r in rs) for rs in per_bucket.values()) or 1.0
    label = "%a %H:00" if bucket == "hour" else "%a %d %b"
    out = Text()
    for start, rs in sorted(per_bucket.items()):
        out.append(f"{start.astimezone(zone).strftime(label):<11} ", style="dim")
        drawn, running = 0, 0.0
        for r in rs:
            name = "(other)" if r.other else (r.group.get("component") or "-")
            running += r.cost_usd
            cells = round(running / top * width) - drawn  # rounded as a whole, so the stack keeps its length
            out.append("█" * cells, style=colour[name])
            drawn += cells
        if drawn == 0 and running > 0:
            out.append("▏", style=colour[components[0]])
            drawn = 1
        out.append(" " * max(0, width - drawn))
        out.append(f" {money(sum(r.cost_usd for r in rs)):>10}\n")
    out.append("\n")
    for name in components:
        out.append("██ ", style=colour[name])
        out.append(f"{name}   ")
    return out


def alert_row(a: Any, zone: Any) -> tuple:
    return (
        str(a.id), a.ts.astimezone(zone).strftime("%m-%d %H:%M"),
        Text(a.severity, style=SEVERITY_STYLE.get(a.severity, "")), a.kind, a.budget or "-",
        a.message, "yes" if a.acked else "",
    )


def price_row(p: Any) -> tuple:
    rate = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    return (
        p.model, p.provider or "-", p.tier or "-", rate(p.input_per_mtok), rate(p.output_per_mtok),
        rate(p.cache_read_per_mtok), p.source, "yes" if p.verified else Text("no", style="yellow"),
        p.effective_from.strftime("%Y-%m-%d") if p.effective_from else "-",
    )


def usage_row(u: Any, zone: Any) -> tuple:
    """A record, from `usage.list` or from a `usage.recorded` event (a dict)."""
    get = u.get if isinstance(u, dict) else (lambda name: getattr(u, name))
    ts = get("ts")
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (
        str(get("record_id")), ts.astimezone(zone).strftime("%H:%M:%S"), get("component"), get("model"),
        count(get("input_tokens")), count(get("output_tokens")), count(get("cache_read_tokens")),
        money(get("cost_usd")),
    )
