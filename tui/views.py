"""What the dashboard shows, as Rich renderables built from the daemon's answers. Pure functions, no I/O.

The gauges and the spend chart are drawn for the width they get on screen (`Fitted`), so they fill a wide
terminal and wrap, not spill, on a narrow one.
"""

import datetime as dt
from typing import Any, Callable, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from budgetd.periods import window
from budgetd.periods import zone as find_zone
from budgetd.render import count, duration, money
from tui.tables import Column

STATUS_STYLE = {"ok": "green", "warning": "yellow", "exceeded": "bold red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
PALETTE = ["dodger_blue1", "orange1", "medium_purple1", "spring_green2", "hot_pink", "gold1", "grey62"]

ALERT_COLUMNS = (
    Column("id"), Column("time", narrowest=5, lines=2), Column("severity"),
    Column("kind", narrowest=10, lines=2), Column("budget", narrowest=8, lines=2),
    Column("message", narrowest=20, lines=4, flexible=True), Column("acked"),
)
# Prices per million tokens in / out / cache read; at 80 columns provider and source give way first.
PRICE_COLUMNS = (
    Column("model", narrowest=16, flexible=True), Column("provider", narrowest=8, optional=True),
    Column("tier"), Column("in"), Column("out"), Column("cache"),
    Column("source", narrowest=10, optional=True), Column("verified"), Column("since"),
)
USAGE_COLUMNS = (
    Column("id"), Column("time"), Column("component", narrowest=8), Column("model", narrowest=12, flexible=True),
    Column("in"), Column("out"), Column("cache"), Column("cost"),
)
TOP_MEASURES = ("requests", "tokens", "cost")


def top_columns(dim: str, sort: str) -> tuple[Column, ...]:
    """A top table's columns; the one it is sorted by is marked ▼."""
    return (Column(dim, narrowest=10, flexible=True),
            *(Column(f"{m} ▼" if m == sort else m) for m in TOP_MEASURES), Column("share"))


class Fitted:
    """A renderable drawn by `draw(width)` for the width it is given on screen."""

    def __init__(self, draw: Callable[[int], RenderableType]) -> None:
        self.draw = draw

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.draw(options.max_width)


def connection_line(head: str, path: str = "", tail: str = "", advice: str = "") -> Fitted:
    """`head path tail` and then `advice`: on one line where they fit, else the advice on a second line
    and a long path cut in its middle, so what to do is always on screen."""
    def draw(width: int) -> Text:
        whole = f"{head}{path}{tail}" + (f"; {advice}" if advice else "")
        if len(whole) <= width:
            return Text(whole)
        room = width - len(head) - len(tail)
        shown = path if len(path) <= room else clip_middle(path, max(room, 16))
        return Text(f"{head}{shown}{tail}" + (f"\n{advice}" if advice else ""))
    return Fitted(draw)


def clip_middle(text: str, width: int) -> str:
    """`text` in `width` characters, its middle given way to `…` (a path keeps its end, the file name)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def budget_label(budget: str, key: dict[str, str]) -> str:
    """`name [value]` for a budget with one counter per value (the dims are in its scope)."""
    return budget + (" [" + ",".join(key.values()) + "]" if key else "")


def gauges(states: Sequence[Any], forecasts: Sequence[Any], now: dt.datetime) -> RenderableType:
    """One gauge per budget key in its current window: spent and held against the limit."""
    if not states:
        return Text("No budgets yet. Set one with `budget budgets set NAME --period daily --limit-usd 10`.",
                    style="dim")
    return Fitted(lambda width: _gauges(states, forecasts, now, width))


def _gauges(states: Sequence[Any], forecasts: Sequence[Any], now: dt.datetime, width: int) -> Group:
    ahead = {(f.budget, tuple(sorted(f.key.items()))): f for f in forecasts}
    labels = [budget_label(s.budget, s.key) for s in states]
    label_width = min(max(map(len, labels)), 30, max(12, width // 3))
    bar_width = max(10, min(40, width - label_width - 16))  # 16: " 100%  exceeded" after the bar
    parts: list[RenderableType] = []
    for s, label in zip(states, labels):
        style = STATUS_STYLE.get(s.status, "")
        held = 0.0
        if s.limit_usd:
            held = s.reserved_usd / s.limit_usd
        elif s.limit_tokens:
            held = s.reserved_tokens / s.limit_tokens
        used = round(min(s.used_fraction, 1.0) * bar_width)
        reserved = min(bar_width - used, round(held * bar_width))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{clip(label, label_width):<{label_width}} ", style="bold")
        line.append("█" * used, style=style)
        line.append("▒" * reserved, style="dim")
        line.append("░" * (bar_width - used - reserved), style="grey30")
        line.append(f" {s.used_fraction:>4.0%}  ", style=style)
        line.append(s.status, style=style)
        parts.append(line)
        # The details wrap under the bar, never back to the first column.
        parts.append(Padding(_gauge_details(s, ahead, now), (0, 0, 0, label_width + 1)))
    return Group(*parts)


def _gauge_details(s: Any, ahead: dict, now: dt.datetime) -> Text:
    out = Text()
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
    return out


def totals(today: Any, month: Any, last_minute: Any) -> Table:
    """Today, this month and the last minute side by side, each label over its numbers."""
    grid = Table.grid(padding=(0, 4))
    for _ in range(3):
        grid.add_column(no_wrap=True)
    grid.add_row(Text("Today", style="dim"), Text("This month", style="dim"), Text("Last minute", style="dim"))
    grid.add_row(_total(money(today.cost_usd), today.requests), _total(money(month.cost_usd), month.requests),
                 _total(f"{money(last_minute.cost_usd)}/min", last_minute.requests))
    return grid


def _total(amount: str, requests: int) -> Text:
    return Text.assemble((amount, "bold"), (f" {count(requests)} calls", "dim"))


def bucket_starts(bucket: str, zone_name: str, now: dt.datetime) -> list[dt.datetime]:
    """Every bucket of the chart's span up to `now`: the last 24 hours, or the last 7 local days."""
    if bucket == "hour":
        period, first = "hourly", now - dt.timedelta(hours=23)
    else:
        tz = find_zone(zone_name)
        day = now.astimezone(tz).date() - dt.timedelta(days=6)
        period, first = "daily", dt.datetime.combine(day, dt.time(12), tz)  # noon: never in a DST gap
    starts = []
    w = window(period, zone_name, first)
    while w.start <= now:
        starts.append(w.start)
        w = window(period, zone_name, w.end)
    return starts


def spend_chart(rows: Sequence[Any], starts: Sequence[dt.datetime], bucket: str, zone: Any) -> RenderableType:
    """Cost per bucket as bars, stacked by component (the top ones; the rest as `other`); every bucket of the
    span has its line (newest first), an empty one at zero."""
    if not rows:
        return Text("No spend in this range yet.", style="dim")
    return Fitted(lambda width: _spend_chart(rows, starts, bucket, zone, width))


def _spend_chart(rows: Sequence[Any], starts: Sequence[dt.datetime], bucket: str, zone: Any, width: int) -> Text:
    components: list[str] = []
    for r in rows:
        name = _component(r)
        if name not in components:
            components.append(name)
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(components)}
    per_bucket: dict[dt.datetime, list[Any]] = {start: [] for start in starts}
    for r in rows:
        per_bucket.setdefault(r.bucket_start, []).append(r)
    top = max(sum(r.cost_usd for r in rs) for rs in per_bucket.values()) or 1.0
    bar_width = max(10, min(80, width - 24))  # 24: the label before the bar and the amount after it
    label = "%a %H:00" if bucket == "hour" else "%a %d %b"
    out = Text()
    for name in components:
        out.append("██ ", style=colour[name])
        out.append(f"{name}   ")
    out.append("\n\n")
    for start, rs in sorted(per_bucket.items(), reverse=True):  # newest first: on screen without scrolling
        out.append(f"{start.astimezone(zone).strftime(label):<11} ", style="dim")
        drawn, running = 0, 0.0
        for r in rs:
            running += r.cost_usd
            cells = round(running / top * bar_width) - drawn  # rounded as a whole, so the stack keeps its length
            out.append("█" * cells, style=colour[_component(r)])
            drawn += cells
        if drawn == 0 and running > 0:
            out.append("▏", style=colour[_component(rs[0])])
            drawn = 1
        out.append(" " * max(0, bar_width - drawn))
        out.append(f" {money(running):>10}\n", style="" if running else "dim")
    return out


def _component(row: Any) -> str:
    return "(other)" if row.other else (row.group.get("component") or "-")


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


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


def top_row(r: Any, dim: str, total_cost: float) -> tuple:
    return (r.group.get(dim) or "-", count(r.requests), count(r.tokens), money(r.cost_usd),
            f"{r.cost_usd / total_cost:.0%}" if total_cost else "-")


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
