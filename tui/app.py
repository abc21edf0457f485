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
from typing import Any, Awaitable
from zoneinfo import ZoneInfo

import anyio
from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from budgetd.backoff import Backoff
from budgetd.client import BudgetClient
from budgetd.periods import window
from budgetd.periods import zone as find_zone
from budgetd.protocol import OpError
from budgetd.render import money
from tui import views
from tui.tables import FittedTable

TOPICS = ["usage", "budget", "alert", "price"]  # what the views show (no system events)
#: What each event makes stale.
STALE = {"usage": {"overview", "spend", "top"}, "budget": {"overview"}, "alert": {"alerts", "overview"},
         "price": {"prices"}}
USAGE_ROWS = 200
SORTS = ("cost", "tokens", "requests")
#: The view each view-bound action belongs to: anywhere else it neither fires nor shows in the footer.
VIEW_OF_ACTION = {"ask": "overview", "toggle_bucket": "spend", "cycle_sort": "top", "ack": "alerts",
                  "toggle_unacked": "alerts", "search": "prices"}
#: Below this width the two top tables are stacked, not side by side.
TOP_SIDE_BY_SIDE = 110

HELP = """\
[b]budgetd dashboard[/b]

[b]1[/b]-[b]6[/b]  Overview, Spend, Top, Alerts, Prices, Usage
[b]r[/b]    fetch everything again     [b]?[/b]  this help     [b]q[/b]  quit

Each view has keys of its own (the footer shows them):
  Overview  [b]a[/b]  ask the budget assistant (Enter asks, Escape leaves)
  Spend     [b]b[/b]  last day by hour / last week by day
  Top       [b]s[/b]  sort by cost, tokens or requests
  Alerts    [b]a[/b]  acknowledge the selected alert
            [b]u[/b]  unacknowledged alerts only / all
  Prices    [b]/[/b]  search models (Enter or Escape leaves the search)

The screen follows the daemon's event stream; nothing is polled.
Gauges: █ spent, ▒ held by reservations, ░ left.
Colours: green ok, yellow warning, red exceeded."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = "HelpScreen { align: center middle; } #help { width: 78; max-width: 100%; padding: 1 2; " \
                  "border: round $accent; background: $surface; }"

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")
        yield Footer()  # its own: the dashboard's keys do not work while help is open


class AskInput(Input):
    BINDINGS = [Binding("enter", "submit", "Ask"), Binding("escape", "app.leave_input", "Back")]


class SearchInput(Input):
    BINDINGS = [Binding("enter", "submit", "Done"), Binding("escape", "app.leave_input", "Back")]


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
    #connection { height: auto; padding: 0 1; background: $success-darken-2; }
    #connection.down { background: $error; }
    TabbedContent, ContentSwitcher, TabPane { height: 1fr; }
    #totals { height: auto; padding: 1 1 0 1; }
    #gauges { height: auto; padding: 1 1; }
    #answer { height: auto; padding: 0 1 1 1; }
    #chart { padding: 1 1; }
    .caption { height: auto; padding: 0 1; color: $text-muted; }
    #top-tables { height: 1fr; }
    #top-tables.stacked { layout: vertical; }
    #top-tables FittedTable { width: 1fr; height: 1fr; }
    FittedTable { height: 1fr; }
    """
    BINDINGS = [
        # One footer entry for the six: the tabs carry their numbers.
        Binding("1", "show('overview')", "Views", key_display="1-6"),
        Binding("2", "show('spend')", "Spend", show=False),
        Binding("3", "show('top')", "Top", show=False),
        Binding("4", "show('alerts')", "Alerts", show=False),
        Binding("5", "show('prices')", "Prices", show=False),
        Binding("6", "show('usage')", "Usage", show=False),
        Binding("a", "ask", "Ask"),
        Binding("b", "toggle_bucket", "Hour/day"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("a", "ack", "Ack"),
        Binding("u", "toggle_unacked", "Unacked/all"),
        Binding("slash", "search", "Search"),
        Binding("r", "refresh", "Refresh"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, socket: str | None = None, timezone: str | None = None, reconcile_s: float = 30.0) -> None:
        super().__init__()
        self.socket = socket
        self.socket_path = BudgetClient(socket).path
        self.zone_name = timezone or local_zone_name()
        self.zone = ZoneInfo(self.zone_name)
        self.reconcile_s = reconcile_s
        self.client: BudgetClient | None = None
        self.connected = False
        self.loaded: set[str] = set()  # the views fetched since the connection came up
        self.view = "overview"
        self._clock_offset = dt.timedelta(0)
        self.stale: set[str] = set()
        self.bucket = "hour"
        self.sort = "cost"
        self.unacked_only = True
        self.search = ""
        self.usage: collections.deque[Any] = collections.deque(maxlen=USAGE_ROWS)  # newest first
        self.usage_changed = False

    # -- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(views.connection_line("connecting to budgetd at ", str(self.socket_path),
                                           f" · times in {self.zone_name}"), id="connection")
        with TabbedContent(initial="overview"):
            with TabPane("1 Overview", id="overview"):
                with VerticalScroll(id="overview-scroll"):
                    yield Static(Text("Nothing to show until budgetd answers (see the top line).", style="dim"),
                                 id="totals")
                    yield Static(id="gauges")
                    yield Static(id="answer")
                yield AskInput(placeholder="press a to ask the budget assistant, e.g. why did spend go up today?",
                               id="ask")
            with TabPane("2 Spend", id="spend"):
                with VerticalScroll():
                    yield Static(id="chart")
            with TabPane("3 Top", id="top"):
                yield Static(id="top-title", classes="caption")
                with Horizontal(id="top-tables"):
                    yield FittedTable(views.top_columns("component", self.sort), id="top-components")
                    yield FittedTable(views.top_columns("model", self.sort), id="top-models")
            with TabPane("4 Alerts", id="alerts"):
                yield FittedTable(views.ALERT_COLUMNS, id="alert-table")
            with TabPane("5 Prices", id="prices"):
                yield SearchInput(placeholder="press / to search models", id="price-search")
                yield Static(id="price-caption", classes="caption")
                yield FittedTable(views.PRICE_COLUMNS, id="price-table")
            with TabPane("6 Usage", id="usage"):
                yield FittedTable(views.USAGE_COLUMNS, id="usage-table")
        yield Footer()

    def on_mount(self) -> None:
        self._show_top_title()
        self.run_worker(self._while_open(self._follow()), group="connection", exclusive=True)
        self.set_interval(0.5, self._catch_up)
        self.set_interval(self.reconcile_s, self._reconcile)

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#top-tables").set_class(event.size.width < TOP_SIDE_BY_SIDE, "stacked")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Each view's keys work in it alone; its table takes the focus, so arrows move in it."""
        self.view = event.pane.id or "overview"
        tables = event.pane.query(FittedTable)
        self.set_focus(tables.first() if tables else None)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = VIEW_OF_ACTION.get(action)
        # While a box has the focus its keys are typed into it, so the view's keys are not offered.
        return view is None or (view == self.view and not isinstance(self.focused, Input))

    async def _while_open(self, work: Awaitable[None]) -> None:
        """Run `work`, which fills widgets after it awaits the daemon: while the app closes, its screen goes
        before its workers do, and a widget not found then is no error."""
        try:
            await work
        except NoMatches:
            if self.is_running:
                raise

    # -- the connection -----------------------------------------------------------------

    async def _follow(self) -> None:
        """Connect, fetch everything, then follow the event stream; on any loss, say so and retry."""
        backoff = Backoff(first=0.5, cap=5.0)
        path = str(self.socket_path)
        while True:
            try:
                async with BudgetClient(self.socket, timeout=10, retries=0) as client, \
                        BudgetClient(self.socket, timeout=10, retries=0) as stream, \
                        contextlib.aclosing(stream.subscribe(TOPICS)) as events:
                    await client.ping()
                    self.client = client
                    self._show_connection(True, views.connection_line("connected to budgetd at ", path,
                                                                      f" · times in {self.zone_name}"))
                    backoff.reset()
                    self.stale = set(STALE["usage"] | STALE["alert"] | STALE["price"] | {"usage"})
                    async for event in events:
                        self._on_event(event)
                line = views.connection_line("disconnected: budgetd at ", path, " closed the connection",
                                             "start it again with `budget daemon`; retrying…")
            except OpError as exc:
                line = (views.connection_line("disconnected: no budgetd answers on ", path, "",
                                              "start one with `budget daemon`; retrying…")
                        if exc.code == "unavailable" else views.connection_line(f"disconnected: {exc.message}",
                                                                                advice="retrying…"))
            except OSError as exc:
                line = views.connection_line(f"disconnected: {exc}", advice="retrying…")
            self.client = None
            self.loaded.clear()
            self._show_connection(False, line)
            await anyio.sleep(backoff.next())

    def _show_connection(self, up: bool, line: views.Fitted) -> None:
        self.connected = up
        banner = self.query_one("#connection", Static)
        banner.update(line)
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
        self.query_one("#usage-table", FittedTable).show([views.usage_row(u, self.zone) for u in self.usage])

    async def _catch_up(self) -> None:
        """Show new records, and fetch again what events made stale (at most twice a second)."""
        if self.usage_changed:
            self._show_usage()
        if self.client is None or not self.stale:
            return
        stale, self.stale = self.stale, set()
        self.run_worker(self._while_open(self._fetch(stale)), group="fetch")

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
                    self.loaded.add(part)
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
            views.totals(today_report.totals, month_report.totals, minute.totals))
        self.query_one("#gauges", Static).update(views.gauges(status.budgets, status.forecasts, now))

    async def _fetch_spend(self, client: BudgetClient) -> None:
        starts = views.bucket_starts(self.bucket, self.zone_name, self._now())
        report = await client.report(["component"], bucket=self.bucket, timezone=self.zone_name,
                                     since=starts[0], limit=5)
        span = "hour, the last 24 hours" if self.bucket == "hour" else "day, the last 7 days"
        title = Text(f"Cost per {span}, newest first\n", style="bold")
        self.query_one("#chart", Static).update(
            Group(title, views.spend_chart(report.rows, starts, self.bucket, self.zone)))

    async def _fetch_top(self, client: BudgetClient) -> None:
        _, month = self._local_starts()
        for dim in ("component", "model"):
            report = await client.report([dim], since=month, order=self.sort)
            self.query_one(f"#top-{dim}s", FittedTable).show(
                [views.top_row(r, dim, report.totals.cost_usd) for r in report.rows],
                columns=views.top_columns(dim, self.sort))
        self._show_top_title()

    def _show_top_title(self) -> None:
        following = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.query_one("#top-title", Static).update(
            Text.assemble("This month, sorted by ", (self.sort, "bold"), f" (s: by {following})"))

    async def _fetch_alerts(self, client: BudgetClient) -> None:
        alerts = await client.alerts_list(unacked=self.unacked_only, limit=200)
        self.query_one("#alert-table", FittedTable).show([views.alert_row(a, self.zone) for a in alerts],
                                                         keys=[str(a.id) for a in alerts])

    async def _fetch_prices(self, client: BudgetClient) -> None:
        result = await client.prices_list(search=self.search or None, limit=300)
        self.query_one("#price-table", FittedTable).show([views.price_row(p) for p in result.prices])

    def on_fitted_table_laid(self, message: FittedTable.Laid) -> None:
        if message.table.id == "price-table":
            note = f"; {' and '.join(message.hidden)} need a wider terminal" if message.hidden else ""
            self.query_one("#price-caption", Static).update(f"$ per million tokens{note}")

    async def _fetch_usage(self, client: BudgetClient) -> None:
        result = await client.usage_list(limit=USAGE_ROWS)
        self.usage.clear()
        self.usage.extend(result.records)
        self._show_usage()

    # -- actions ----------------------------------------------------------------------------

    def action_show(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_ask(self) -> None:
        self.query_one("#ask", Input).focus()

    def action_leave_input(self) -> None:
        """Out of a box, so the keys are the view's again: the price search hands the focus to its table."""
        self.set_focus(self.query_one("#price-table") if self.view == "prices" else None)

    def action_toggle_bucket(self) -> None:
        self.bucket = "day" if self.bucket == "hour" else "hour"
        self.stale.add("spend")

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._show_top_title()
        self.stale.add("top")

    def action_toggle_unacked(self) -> None:
        self.unacked_only = not self.unacked_only
        self.notify("unacknowledged alerts only" if self.unacked_only else "all alerts")
        self.stale.add("alerts")

    def action_search(self) -> None:
        self.query_one("#price-search", Input).focus()

    def action_refresh(self) -> None:
        self.stale |= {"overview", "spend", "top", "alerts", "prices", "usage"}

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_ack(self) -> None:
        table = self.query_one("#alert-table", FittedTable)
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
        self.action_leave_input()
        question = message.value.strip()
        if message.input.id == "ask" and question:
            message.input.clear()
            self.query_one("#answer", Static).update(Text(f"{question}\nasking…", style="dim"))
            self.run_worker(self._while_open(self._ask(question)), group="ask", exclusive=True)

    async def _ask(self, question: str) -> None:
        answer = self.query_one("#answer", Static)
        asked = Text(question + "\n", style="bold")
        if self.client is None:
            answer.update(asked + Text("not connected to budgetd", style="red"))
            return
        try:
            result = await self.client.ask(question)
        except OpError as exc:
            answer.update(asked + Text(f"{exc.code}: {exc.message}", style="red"))
            return
        source = (f"offline, from the ledger's facts ({result.why_offline})" if result.offline
                  else f"{result.model}, {money(result.cost_usd)}")
        answer.update(asked + Text(result.answer + "\n") + Text(source, style="dim"))
        self.query_one("#overview-scroll").scroll_end(animate=False)
