"""The dashboard against a real daemon, read off the screen as the user sees it: in Textual's pilot, and as
the real `budget tui` command in a tmux terminal."""

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from budgetd.client import BudgetClient
from budgetd.render import money
from tests.conftest import ROOT
from tui.app import BudgetApp

pytestmark = pytest.mark.anyio

CLOCK = "2025-06-12T12:00:00Z"  # a Thursday midday: the same windows whatever the date the tests run
LONG_COMPONENT = "nightly-evaluation-pipeline-batch-runner"
ALERT_HEADER = re.compile(r"\bid\s+time\s+severity\s+kind\s+budget\s+message\s+acked\b")
VIEW_KEYS = ("a Ask", "b Hour/day", "s Sort", "a Ack", "u Unacked/all", "/ Search")


# -- reading the screen ----------------------------------------------------------------------

def screen(app) -> list[str]:
    """The terminal's lines as they are drawn."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def top_background(app) -> tuple[int, int, int]:
    """The colour behind the first character of the top line."""
    strip = app.screen._compositor.render_strips()[0]
    colour = next(s.style.bgcolor for s in strip if s.text.strip())
    return colour.get_truecolor()


async def until(pilot, condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(screen(pilot.app)):
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}; the screen:\n" + "\n".join(screen(pilot.app)))


def text(lines: list[str]) -> str:
    return "\n".join(lines)


def header_at(lines: list[str], pattern: re.Pattern) -> int:
    return next(i for i, line in enumerate(lines) if pattern.search(line))


def column(lines: list[str], header: re.Pattern, name: str, following: str) -> str:
    """The text of one table column (from its label to the next column's), its wrapped lines joined."""
    at = header_at(lines, header)
    start, end = lines[at].index(f" {name} ") + 1, lines[at].index(f" {following}") + 1
    out = ""
    for line in lines[at + 1:]:
        piece = line[start:end].strip()
        if piece:
            out += ("" if not out or out[-1] in "-_/" else " ") + piece
    return out


def row_starting(lines: list[str], first_cell: str) -> str:
    """The line of the table row whose first cell shows `first_cell` (whole, or cut with an ellipsis)."""
    def shows(line: str) -> bool:
        cell = line.split()[0] if line.split() else ""
        return cell == first_cell or (cell.endswith("…") and first_cell.startswith(cell[:-1]))
    return next((line for line in lines if shows(line)), "")


def top_line(lines: list[str]) -> str:
    """The connection line (wrapped onto as many lines as it needs), above the tabs."""
    tabs = next(i for i, line in enumerate(lines) if "1 Overview" in line)
    return " ".join(line.strip() for line in lines[:tabs])


def says_no_daemon_answers(top: str, socket: Path) -> bool:
    """The top line names the socket (whole, or its middle cut to fit) and says how to start a daemon."""
    shown = re.search(r"no budgetd answers on (\S+?)(?:;|\s|$)", top)
    if shown is None or "start one with `budget daemon`" not in top:
        return False
    head, cut, tail = shown.group(1).partition("…")
    return head + tail == str(socket) or bool(cut and str(socket).startswith(head) and str(socket).endswith(tail))


def gauge_region_is_indented(lines: list[str]) -> bool:
    """Every line under a gauge (its details, wrapped) starts under the bar, none in the first column."""
    start = next(i for i, line in enumerate(lines) if "░" in line or "█" in line)
    end = next(i for i, line in enumerate(lines) if "▔" in line)  # the ask box's top edge
    return all(not line.strip() or "░" in line or "█" in line or line.startswith(" " * 20)
               for line in lines[start:end])


@pytest.fixture
async def seeded(make_daemon):
    d = make_daemon(clock=CLOCK)
    async with BudgetClient(d.socket) as c:
        await c.budget_set(name="daily-cap", period="daily", limit_usd=1.0, policy="hard")
        await c.budget_set(name="per-comp", scope={"component": "*"}, period="monthly", limit_tokens=10_000_000,
                           policy="warn")
        for comp, model, cost in (("rhetor", "gpt-4o", 0.30), ("apollo", "gpt-4o-mini", 0.25),
                                  ("rhetor", "gpt-4o", 0.05)):
            await c.record(component=comp, model=model, input_tokens=1000, output_tokens=100, cost_usd=cost)
        # 60 % of per-comp for one component: a threshold alert with a message longer than any column.
        await c.record(component=LONG_COMPONENT, model="gpt-4o-mini", input_tokens=6_000_000, cost_usd=0.01)
    return d


async def alert_messages(d) -> tuple[str, str]:
    """The daily cap's 50 % alert (short) and the long component's (longer than a line), once raised."""
    deadline = time.monotonic() + 15
    async with BudgetClient(d.socket) as c:
        while True:
            alerts = await c.alerts_list(limit=50)
            short = [a.message for a in alerts if a.budget == "daily-cap" and a.kind == "threshold"]
            long = [a.message for a in alerts if LONG_COMPONENT in a.message]
            if short and long:
                return short[0], long[0]
            assert time.monotonic() < deadline, [a.message for a in alerts]
            await anyio.sleep(0.1)


# -- the real command in a real terminal -------------------------------------------------------

class Terminal:
    """A tmux terminal of a given size running one command, read with capture-pane."""

    def __init__(self, directory: Path, command: list[str], width: int, height: int) -> None:
        self.tmux = ["tmux", "-S", str(directory / "tmux.sock"), "-f", "/dev/null"]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height),
                        shlex.join(command)], check=True)
        self.run("set-option", "-t", "tui", "remain-on-exit", "on")  # a crash stays readable on the screen

    def run(self, *args: str) -> str:
        return subprocess.run([*self.tmux, *args], check=True, capture_output=True, text=True).stdout

    def lines(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", "tui").split("\n")[:-1]

    def top_background(self) -> tuple[int, int, int]:
        first = self.run("capture-pane", "-p", "-e", "-t", "tui").split("\n")[0]
        return tuple(int(v) for v in re.search(r"48;2;(\d+);(\d+);(\d+)", first).groups())  # type: ignore[union-attr]

    def press(self, *keys: str) -> None:
        for key in keys:  # one at a time: Escape then a key at once would read as Alt+key
            self.run("send-keys", "-t", "tui", key)
            time.sleep(0.15)

    def resize(self, width: int, height: int) -> None:
        self.run("resize-window", "-t", "tui", "-x", str(width), "-y", str(height))

    def wait(self, condition, what: str, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if condition(lines):
                return lines
            time.sleep(0.1)
        size = self.run("display-message", "-p", "-t", "tui", "#{pane_width}x#{pane_height}").strip()
        raise AssertionError(f"timed out waiting for {what}; the screen ({size}):\n" + "\n".join(self.lines()))

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
async def test_budget_tui_in_a_terminal_fits_80x24_and_160x45_and_says_when_the_daemon_is_gone(seeded, tmp_path):
    short, long = await alert_messages(seeded)
    # COLUMNS and LINES, where set, would pin the size: the app would not follow the terminal's.
    command = ["env", "-u", "COLUMNS", "-u", "LINES", f"PYTHONPATH={ROOT}", "COLORTERM=truecolor", sys.executable,
               "-m", "budgetd", "tui", "--socket", str(seeded.socket), "--tz", "UTC"]
    term = Terminal(tmp_path, command, 80, 24)
    try:
        lines = term.wait(lambda ls: "daily-cap" in text(ls) and ls[0].startswith(" connected to budgetd at"),
                          "the overview")
        assert len(lines) == 24 and "1 Overview" in lines[1] + lines[2]  # nothing scrolled away at the top
        assert all(key in lines[-1] for key in ("1-6 Views", "a Ask", "r Refresh", "? Help", "q Quit"))
        assert gauge_region_is_indented(lines)
        assert re.search(r" per-comp \[nightly-[a-z-]+… +█+░+ +60%", text(lines))  # the label is cut, not the bar

        term.press("4")
        lines = term.wait(lambda ls: any(ALERT_HEADER.search(line) for line in ls) and "a Ack" in ls[-1]
                          and short in column(ls, ALERT_HEADER, "message", "acked"), "the alerts at 80x24, whole")
        messages = column(lines, ALERT_HEADER, "message", "acked")
        assert long[:60] in messages and long not in messages and "…" in messages  # cut with an ellipsis
        assert "threshold" in column(lines, ALERT_HEADER, "kind", "budget")
        assert all(key in lines[-1] for key in ("u Unacked/all", "q Quit")) and "a Ask" not in lines[-1]

        term.resize(160, 45)
        lines = term.wait(lambda ls: len(ls) == 45 and any(ALERT_HEADER.search(line) for line in ls)
                          and long in column(ls, ALERT_HEADER, "message", "acked"), "the alerts at 160x45")
        assert lines[0].startswith(" connected to budgetd at") and "a Ack" in lines[-1]
        term.press("1")
        lines = term.wait(lambda ls: "Today" in text(ls) and "a Ask" in ls[-1], "the overview at 160x45")
        assert gauge_region_is_indented(lines) and "q Quit" in lines[-1]
        red, green, _ = term.top_background()
        assert green > red  # connected: not the alarm colour

        seeded.kill()
        for key in ("1", "6"):  # the overview and the usage view both say so, on top
            term.press(key)
            term.wait(lambda ls: ls[0].startswith(" disconnected")
                      and says_no_daemon_answers(top_line(ls), seeded.socket), f"the red line in view {key}")
            red, green, blue = term.top_background()
            assert red > green + 60 and red > blue + 60
    finally:
        term.close()


# -- the views, in Textual's pilot ------------------------------------------------------------------

async def test_views_show_the_daemons_numbers(seeded):
    app = BudgetApp(socket=str(seeded.socket), timezone="UTC")
    async with BudgetClient(seeded.socket) as c, app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda s: "daily-cap" in text(s), what="the gauges")
        status = await c.status()
        daily = next(s for s in status.budgets if s.budget == "daily-cap")
        shown = text(screen(app))
        assert f"{money(daily.spent_usd)} spent + $0 held of {money(1.0)}" in shown
        assert re.search(rf"daily-cap +█+░+ +61%  {daily.status}", shown)
        assert "per-comp [rhetor]" in shown and "projected" in shown
        assert money(0.61) in shown  # today's and this month's totals

        await pilot.press("3")
        top_header = re.compile(r"component +requests +tokens +cost ▼ +share")
        await until(pilot, lambda s: "sorted by cost" in text(s) and any(top_header.search(x) for x in s),
                    what="top by cost")
        report = await c.report(["component"])
        lines = screen(app)
        at = header_at(lines, top_header)
        assert [line.split()[0] for line in lines[at + 1:at + 4]] == [r.group["component"] for r in report.rows]
        await pilot.press("s")
        await until(pilot, lambda s: "sorted by tokens" in text(s) and "tokens ▼" in text(s)
                    and row_starting(s[at + 1:at + 2], LONG_COMPONENT), what="top by tokens, the biggest first")

        await pilot.press("2")
        hour_line = re.compile(r"^ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d:00 ")
        await until(pilot, lambda s: "Cost per hour" in text(s) and any(hour_line.match(x) for x in s),
                    what="the hour chart")
        hours = [line for line in screen(app) if hour_line.match(line)]
        assert [h[1:10] for h in hours] == [f"{'Thu' if h >= 0 else 'Wed'} {h % 24:02d}:00" for h in range(12, -12, -1)]
        assert hours[0].rstrip().endswith(money(0.61)) and all(h.rstrip().endswith(" $0") for h in hours[1:])
        await pilot.press("b")
        day_line = re.compile(r"^ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d [A-Z][a-z][a-z] ")
        await until(pilot, lambda s: "Cost per day" in text(s), what="the day chart")
        days = [line[1:11] for line in screen(app) if day_line.match(line)]
        assert days == ["Thu 12 Jun", "Wed 11 Jun", "Tue 10 Jun", "Mon 09 Jun", "Sun 08 Jun", "Sat 07 Jun",
                        "Fri 06 Jun"]

        await pilot.press("5")
        price_header = re.compile(r"model +provider +tier +in +out +cache +source +verified +since")
        await until(pilot, lambda s: any(price_header.search(x) for x in s), what="the prices")
        await pilot.press("slash", *"gemini/")  # the / is typed into the search, not taken as a key
        await until(pilot, lambda s: "gemini/" in text(s) and row_starting(s, "gemini/gemini-2.5-pro")
                    and not row_starting(s, "gpt-4o"), what="the price search")
        lines = screen(app)
        assert any(price_header.search(line) for line in lines)  # the same columns after a search
        price = (await c.prices_get("gemini/gemini-2.5-pro")).price
        row = row_starting(lines, "gemini/gemini-2.5-pro").split()
        assert row[3:5] == [f"{price.input_per_mtok:g}", f"{price.output_per_mtok:g}"]
        assert row[-3:] == [price.source, "yes" if price.verified else "no", price.effective_from.strftime("%Y-%m-%d")]


async def test_keys_work_only_where_they_act_and_the_boxes_let_go(seeded):
    app = BudgetApp(socket=str(seeded.socket), timezone="UTC")
    async with BudgetClient(seeded.socket) as c, app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda s: "daily-cap" in text(s), what="the overview")
        footer = screen(app)[-1]
        assert "a Ask" in footer and not any(k in footer for k in VIEW_KEYS if k != "a Ask")

        # Other views' keys do nothing here: no view changes, no sort, no search.
        await pilot.press("s", "u", "b", "slash")
        await pilot.pause(0.6)
        assert "Today" in text(screen(app)) and "search models" not in text(screen(app))
        await pilot.press("a")  # the ask box
        await until(pilot, lambda s: "esc Back" in s[-1], what="the ask box's keys")
        assert "q Quit" not in screen(app)[-1] and "1-6" not in screen(app)[-1]
        await pilot.press(*"who spent most today? 4")
        await until(pilot, lambda s: "who spent most today? 4" in text(s), what="the question typed in the box")
        await pilot.press("enter")
        await until(pilot, lambda s: "Top spender: rhetor" in text(s), what="the answer")
        assert "a Ask" in screen(app)[-1] and "1 Overview" in text(screen(app))
        assert not any(a.acked for a in await c.alerts_list(limit=50))

        await pilot.press("3")  # the s pressed in the overview did not sort
        await until(pilot, lambda s: "sorted by cost" in text(s) and "s Sort" in s[-1], what="top, still by cost")
        await pilot.press("4")
        await until(pilot, lambda s: any(ALERT_HEADER.search(x) for x in s), what="the alerts")
        footer = screen(app)[-1]
        assert "a Ack" in footer and "u Unacked/all" in footer and "a Ask" not in footer

        await pilot.press("5")
        price_header = re.compile(r"model +tier +in +out +cache +verified +since")  # 80 columns: two give way
        await until(pilot, lambda s: any(price_header.search(x) for x in s), what="the prices at 80x24")
        assert "provider and source need a wider terminal" in text(screen(app))
        columns = next(line for line in screen(app) if price_header.search(line)).split()
        await pilot.press("slash", *"q1")
        await until(pilot, lambda s: "q1" in text(s) and "esc Back" in s[-1], what="q and 1 typed in the search")
        assert "q Quit" not in screen(app)[-1] and app.return_code is None
        await pilot.press("backspace", "backspace", *"gpt-4o-mini", "escape")
        await until(pilot, lambda s: "/ Search" in s[-1] and "q Quit" in s[-1], what="out of the search")
        lines = screen(app)
        assert row_starting(lines, "gpt-4o-mini") and not row_starting(lines, "gpt-4o")  # the search still applies
        assert next(line for line in lines if price_header.search(line)).split() == columns  # the same columns
        await pilot.press("slash")
        await until(pilot, lambda s: "esc Back" in s[-1], what="back in the search")
        await pilot.press("enter")
        await until(pilot, lambda s: "/ Search" in s[-1], what="out of the search with Enter")
        await pilot.press("1")
        await until(pilot, lambda s: "Today" in text(s), what="the overview again")


async def test_records_stream_in_and_alerts_are_acknowledged(seeded):
    app = BudgetApp(socket=str(seeded.socket), timezone="UTC")
    async with BudgetClient(seeded.socket) as c, app.run_test(size=(160, 45)) as pilot:
        await pilot.press("6")
        await until(pilot, lambda s: row_starting(s, "4"), what="the usage table")
        recorded = await c.record(component="live", model="gpt-4o", input_tokens=5, cost_usd=0.5)
        usage_header = re.compile(r"id +time +component +model +in +out +cache +cost")
        await until(pilot, lambda s: "live" in row_starting(s[header_at(s, usage_header) + 1:][:1],
                                                             str(recorded.record_id)),
                    what="the new record on top, without a key press")

        # The record took the daily cap over its limit: the alert shows up by itself, on top.
        await pilot.press("4")
        await until(pilot, lambda s: "limit_exceeded" in text(s), what="the limit alert")
        for _ in range(100):  # the newest alert on top, under the cursor
            newest = (await c.alerts_list(unacked=True, limit=1))[0]
            if row_starting(screen(app)[header_at(screen(app), ALERT_HEADER) + 1:][:1], str(newest.id)):
                break
            await pilot.pause(0.1)
        await pilot.press("a")
        for _ in range(100):
            acked = [a for a in await c.alerts_list(limit=50) if a.acked]
            if acked:
                break
            await pilot.pause(0.1)
        assert len(acked) == 1 and acked[0].acked_by == "budget tui"
        await until(pilot, lambda s: not row_starting(s, str(acked[0].id)), what="the acked alert to leave the list")
        await pilot.press("u")  # all alerts: the acknowledged one is back, marked
        await until(pilot, lambda s: row_starting(s, str(acked[0].id)).rstrip().endswith("yes"), what="all alerts")


async def test_daemon_restarts_are_survived_and_shown(seeded):
    app = BudgetApp(socket=str(seeded.socket), timezone="UTC")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda s: s[0].startswith(" connected"), what="connected")
        seeded.kill()
        await until(pilot, lambda s: s[0].startswith(" disconnected"), what="disconnected")
        await pilot.press("6")
        await until(pilot, lambda s: "start one with `budget daemon`" in top_line(s), what="what to do, in usage")
        red, green, blue = top_background(app)
        assert red > green + 60 and red > blue + 60
        seeded.start()
        await until(pilot, lambda s: s[0].startswith(" connected"), timeout=30, what="reconnected")
        async with BudgetClient(seeded.socket) as c:
            await c.record(component="after-restart", model="gpt-4o", input_tokens=1, cost_usd=0.01)
        await until(pilot, lambda s: "after-restart" in text(s), what="events after the restart")


async def test_no_daemon_says_so_and_help_opens(tmp_path):
    app = BudgetApp(socket=str(tmp_path / "none.sock"), timezone="UTC")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda s: s[0].startswith(" disconnected"), what="the message")
        lines = screen(app)
        assert says_no_daemon_answers(top_line(lines), tmp_path / "none.sock")
        assert "Nothing to show until budgetd answers" in text(lines)
        await pilot.press("question_mark")
        await until(pilot, lambda s: "acknowledge the selected alert" in text(s), what="the help")
        assert screen(app)[-1].split() == ["esc", "Close"]
        await pilot.press("escape")
        await until(pilot, lambda s: "q Quit" in s[-1], what="the help closed")
        assert app.return_code is None
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.return_code == 0  # q quit the app (run_test would only exit it on leaving)


async def test_snapshots_render_every_screen(seeded, tmp_path):
    from tui.snapshots import save_all

    paths = await save_all(str(seeded.socket), tmp_path, timezone="UTC")
    assert {p.stem for p in paths} == {"tui-overview", "tui-spend", "tui-top", "tui-alerts", "tui-prices",
                                        "tui-usage"}
    overview = (tmp_path / "tui-overview.svg").read_text()
    assert overview.startswith("<svg") and "daily-cap" in overview


def test_cli_tui_refuses_a_bad_zone_clearly():
    from tests.conftest import run_cli

    out = run_cli("tui", "--tz", "Atlantis/Capital")
    assert out.returncode == 1 and "unknown time zone" in out.stderr and "Traceback" not in out.stderr
