"""`budget tui`: a live dashboard of budgets, spend, top consumers, alerts, prices and usage.

It follows the daemon's `subscribe` stream: an event marks the views it
touches as stale and they are fetched again at most twice a second, so the
screen moves with the traffic and costs nothing when nothing happens. A slow
reconcile (every 30 s) catches what a lagged stream dropped. When the daemon
goes away the app says so and reconnects by itself.
"""

import collections
import contextlib
import datetime as dt
import os
from typing import Any
from zoneinfo import ZoneInfo

import anyio
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from budgetd.backoff import Backoff
from budgetd.client import BudgetClient
from budgetd.periods import window
from budgetd.periods import zone as find_zone
from budgetd.protocol import OpError
from budgetd.render import count, money
from tui import views

TOPICS = ["usage", "budget", "alert", "price"]  # what the views show (no system events)
#: What each event makes stale.
STALE = {"usage": {"overview", "spend", "top"}, "budget": {"overview"}, "alert": {"alerts", "overview"},
         "price": {"prices"}}
USAGE_ROWS = 200
SORTS = ("cost", "tokens", "requests")

HELP = """\
[b]budgetd dashboard[/b]

[b]1[/b]-[b]6[/b]  Overview, Spend, Top, Alerts, Prices, Usage
[b]b[/b]     spend chart: last day by hour / last week by day
[b]s[/b]     top consumers: sort by cost, tokens or requests
[b]a[/b]     acknowledge the selected alert        [b]u[/b]  unacknowledged alerts only / all
[b]/[/b]     search prices                          [b]r[/b]  fetch everything again
The overview has a box to ask the budget assistant (Enter sends).
[b]?[/b]     this help                              [b]q[/b]  quit

The screen follows the daemon's event stream; nothing is polled.
Gauges: █ spent, ▒ held by reservations, ░ left. Colours: green ok, yellow warning, red exceeded.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = "HelpScreen { align: center middle; } #help { width: 90; padding: 1 2; border: round $accent; " \
                  "background: $surface; }"

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")


def local_zone_name() -> str:
    """The zone for days and hours on screen: $TZ when it names an IANA zone, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        find_zone(name)
        return name
    except ValueError:
        return "UTC"


class BudgetApp(App[None]):
    TITLE = "budgetd"
    CSS = """
    #connection { height: 1; padding: 0 1; background: $success-darken-2; }
    #connection.down { background: $error; }
    #totals { height: auto; padding: 1 1 0 1; }
    #gauges { height: auto; padding: 1 1; }
    #chart { padding: 1 1; }
    #top-components, #top-models { width: 1fr; }
    #price-search { margin: 0 0 1 0; }
    #answer { padding: 1 1; }
    """
    BINDINGS = [
        Binding("1", "show('overview')", "Overview"),
        Binding("2", "show('spend')", "Spend"),
        Binding("3", "show('top')", "Top"),
        Binding("4", "show('alerts')", "Alerts"),
        Binding("5", "show('prices')", "Prices"),
        Binding("6", "show('usage')", "Usage"),
        Binding("b", "toggle_bucket", "Hour/day", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("a", "ack", "Ack", show=False),
        Binding("u", "toggle_unacked", "Unacked", show=False),
        Binding("slash", "search", "Search", show=False),
        Binding("r", "refresh", "Refresh"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, socket: str | None = None, timezone: str | None = None, reconcile_s: float = 30.0) -> None:
        super().__init__()
        self.socket = socket
        self.zone_name = timezone or local_zone_name()
        self.zone = ZoneInfo(self.zone_name)
        self.reconcile_s = reconcile_s
        self.client: BudgetClient | None = None
        self.connected = False
        self._clock_offset = dt.timedelta(0)
        self.stale: set[str] = set()
        self.bucket = "hour"
        self.sort = "cost"
        self.unacked_only = True
        self.search = ""
        self.top: dict[str, list[Any]] = {"component": [], "model": []}
        self.usage: collections.deque[Any] = collections.deque(maxlen=USAGE_ROWS)  # newest first
        self.usage_changed = False

    # -- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="connection")
        with TabbedContent(initial="overview"):
            with TabPane("Overview", id="overview"):
                with VerticalScroll():
                    yield Static(id="totals")
                    yield Static(id="gauges")
                    yield Input(placeholder="ask the budget assistant, e.g. why did spend go up today?",
                                id="ask")
                    yield Static(id="answer")
            with TabPane("Spend", id="spend"):
                with VerticalScroll():
                    yield Static(id="chart")
            with TabPane("Top", id="top"):
                with Horizontal():
                    yield DataTable(id="top-components", cursor_type="row", zebra_stripes=True)
                    yield DataTable(id="top-models", cursor_type="row", zebra_stripes=True)
            with TabPane("Alerts", id="alerts"):
                yield DataTable(id="alert-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Prices", id="prices"):
                yield Input(placeholder="search models (press / )", id="price-search")
                yield DataTable(id="price-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Usage", id="usage"):
                yield DataTable(id="usage-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"times in {self.zone_name}"
        for name in ("top-components", "top-models"):
            self.query_one(f"#{name}", DataTable).add_columns(
                name.split("-")[1].rstrip("s"), "requests", "tokens", "cost", "share")
        self.query_one("#alert-table", DataTable).add_columns("id", "time", "severity", "kind", "budget",
                                                             "message", "acked")
        self.query_one("#price-table", DataTable).add_columns("model", "provider", "tier", "in $/M", "out $/M",
                                                             "cache $/M", "source", "verified", "since")
        self.query_one("#usage-table", DataTable).add_columns("id", "time", "component", "model", "in", "out",
                                                             "cache", "cost")
        self.run_worker(self._follow(), group="connection", exclusive=True)
        self.set_interval(0.5, self._catch_up)
        self.set_interval(self.reconcile_s, self._reconcile)

    # -- the connection -----------------------------------------------------------------

    async def _follow(self) -> None:
        """Connect, fetch everything, then follow the event stream; on any loss, say so and retry."""
        backoff = Backoff(first=0.5, cap=5.0)
        while True:
            try:
                async with BudgetClient(self.socket, timeout=10, retries=0) as client, \
                        BudgetClient(self.socket, timeout=10, retries=0) as stream, \
                        contextlib.aclosing(stream.subscribe(TOPICS)) as events:
                    await client.ping()
                    self.client = client
                    self._show_connection(True, f"connected to budgetd at {client.path}")
                    backoff.reset()
                    self.stale = set(STALE["usage"] | STALE["alert"] | STALE["price"] | {"usage"})
                    async for event in events:
                        self._on_event(event)
                reason = "the daemon closed the connection"
            except OpError as exc:
                reason = exc.message
            except OSError as exc:
                reason = str(exc)
            self.client = None
            self._show_connection(False, f"disconnected: {reason} — retrying")
            await anyio.sleep(backoff.next())

    def _show_connection(self, up: bool, text: str) -> None:
        self.connected = up
        banner = self.query_one("#connection", Static)
        banner.update(text)
        banner.set_class(not up, "down")

    def _on_event(self, event: Any) -> None:
        topic = event.event.split(".", 1)[0]
        if event.event == "usage.recorded":
            self._add_usage(event.data)
        elif event.event == "lagged":
            self.stale |= {"overview", "spend", "top", "alerts", "prices", "usage"}
        self.stale |= STALE.get(topic, set())

    def _add_usage(self, record: dict[str, Any]) -> None:
        self.usage.appendleft(record)
        self.usage_changed = True

    def _show_usage(self) -> None:
        self.usage_changed = False
        table = self.query_one("#usage-table", DataTable)
        table.clear()
        for u in self.usage:
            table.add_row(*views.usage_row(u, self.zone))

    async def _catch_up(self) -> None:
        """Show new records, and fetch again what events made stale (at most twice a second)."""
        if self.usage_changed:
            self._show_usage()
        if self.client is None or not self.stale:
            return
        stale, self.stale = self.stale, set()
        self.run_worker(self._fetch(stale), group="fetch")

    def _reconcile(self) -> None:
        self.stale |= {"overview", "spend", "top", "alerts"}

    async def _fetch(self, parts: set[str]) -> None:
        client = self.client
        if client is None:
            return
        try:
            for part in ("overview", "spend", "top", "alerts", "prices", "usage"):
                if part in parts:
                    await getattr(self, f"_fetch_{part}")(client)
        except OpError as exc:
            if exc.code != "unavailable":
                self.notify(f"{exc.code}: {exc.message}", severity="error")
            self.stale |= parts  # fetched again once the connection is back

    # -- the views -------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        """The daemon's time (as its last status told it), which its windows are measured by."""
        return dt.datetime.now(dt.timezone.utc) + self._clock_offset

    def _local_starts(self) -> tuple[dt.datetime, dt.datetime]:
        """Today's and this month's first local midnight (DST-correct, as budgets count them)."""
        now = self._now()
        return window("daily", self.zone_name, now).start, window("monthly", self.zone_name, now).start  # type: ignore[return-value]

    async def _fetch_overview(self, client: BudgetClient) -> None:
        status = await client.status()
        self._clock_offset = status.daemon.now - dt.datetime.now(dt.timezone.utc)
        now = self._now()
        today, month = self._local_starts()
        today_report = await client.report(since=today)
        month_report = await client.report(since=month)
        minute = await client.report(since=now - dt.timedelta(minutes=1))
        self.query_one("#totals", Static).update(
            views.totals_line(today_report.totals, month_report.totals, minute.totals))
        self.query_one("#gauges", Static).update(views.gauges(status.budgets, status.forecasts, now))

    async def _fetch_spend(self, client: BudgetClient) -> None:
        span = dt.timedelta(days=1) if self.bucket == "hour" else dt.timedelta(days=7)
        now = self._now()
        report = await client.report(["component"], bucket=self.bucket, timezone=self.zone_name,
                                     since=now - span, limit=5)
        title = f"Cost per {self.bucket}, last {'day' if self.bucket == 'hour' else 'week'} (b switches)\n\n"
        chart = views.spend_chart(report.rows, self.bucket, self.zone)
        self.query_one("#chart", Static).update(Text(title, style="bold") + chart)

    async def _fetch_top(self, client: BudgetClient) -> None:
        _, month = self._local_starts()
        for dim in ("component", "model"):
            report = await client.report([dim], since=month, order=self.sort)
            self.top[dim] = report.rows
            self._fill_top(dim, report.totals.cost_usd)

    def _fill_top(self, dim: str, total: float) -> None:
        table = self.query_one(f"#top-{dim}s", DataTable)
        table.clear()
        for r in self.top[dim]:
            table.add_row(r.group.get(dim) or "-", count(r.requests), count(r.tokens), money(r.cost_usd),
                          f"{r.cost_usd / total:.0%}" if total else "-")

    async def _fetch_alerts(self, client: BudgetClient) -> None:
        alerts = await client.alerts_list(unacked=self.unacked_only, limit=200)
        table = self.query_one("#alert-table", DataTable)
        table.clear()
        for a in alerts:
            table.add_row(*views.alert_row(a, self.zone), key=str(a.id))

    async def _fetch_prices(self, client: BudgetClient) -> None:
        result = await client.prices_list(search=self.search or None, limit=300)
        table = self.query_one("#price-table", DataTable)
        table.clear()
        for p in result.prices:
            table.add_row(*views.price_row(p))

    async def _fetch_usage(self, client: BudgetClient) -> None:
        result = await client.usage_list(limit=USAGE_ROWS)
        self.usage.clear()
        self.usage.extend(result.records)
        self._show_usage()

    # -- actions ----------------------------------------------------------------------------

    def action_show(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_toggle_bucket(self) -> None:
        self.bucket = "day" if self.bucket == "hour" else "hour"
        self.stale.add("spend")

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.notify(f"top consumers by {self.sort}")
        self.stale.add("top")

    def action_toggle_unacked(self) -> None:
        self.unacked_only = not self.unacked_only
        self.notify("unacknowledged alerts only" if self.unacked_only else "all alerts")
        self.stale.add("alerts")

    def action_search(self) -> None:
        self.action_show("prices")
        self.query_one("#price-search", Input).focus()

    def action_refresh(self) -> None:
        self.stale |= {"overview", "spend", "top", "alerts", "prices", "usage"}

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_ack(self) -> None:
        table = self.query_one("#alert-table", DataTable)
        if self.client is None or table.row_count == 0:
            return
        row_key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key
        alert_id = int(row_key.value)  # type: ignore[arg-type]
        try:
            await self.client.alerts_ack(alert_id, by="budget tui")
        except OpError as exc:
            self.notify(f"could not acknowledge alert {alert_id}: {exc.message}", severity="error")
            return
        self.notify(f"alert {alert_id} acknowledged")
        self.stale.add("alerts")

    def on_input_changed(self, message: Input.Changed) -> None:
        if message.input.id == "price-search":
            self.search = message.value.strip()
            self.stale.add("prices")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if message.input.id == "ask" and message.value.strip():
            self.query_one("#answer", Static).update(Text("asking…", style="dim"))
            self.run_worker(self._ask(message.value.strip()), group="ask", exclusive=True)

    async def _ask(self, question: str) -> None:
        answer = self.query_one("#answer", Static)
        if self.client is None:
            answer.update(Text("not connected to budgetd", style="red"))
            return
        try:
            result = await self.client.ask(question)
        except OpError as exc:
            answer.update(Text(f"{exc.code}: {exc.message}", style="red"))
            return
        source = (f"offline, from the ledger's facts ({result.why_offline})" if result.offline
                  else f"{result.model}, {money(result.cost_usd)}")
        answer.update(Text(result.answer + "\n") + Text(source, style="dim"))
