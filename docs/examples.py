"""The README's example outputs, made by running its commands against a real daemon.

`make readme` rewrites the output under every `$ ...` line of the README's fenced blocks;
tests/test_readme_examples.py runs the same generation and fails when the README differs.

The run, as a person would make it:

- A temporary directory stands for `/`: `$HOME` is its `home/me` and `$XDG_RUNTIME_DIR` its
  `run/user/1000`, so the daemon and every command use their default paths (config, socket, ledger)
  and the commands run exactly as the README writes them. Its price feeds are served from
  127.0.0.1: the litellm feed is the file bundled with the installed litellm, llm-prices and
  OpenRouter are the test fixtures.
- The daemon's wall clock stands still at `INSTANT`. `BUDGETD_CLOCK_START` would start it there,
  but it runs on while the examples run, and everything measured from "now" (record times, price
  versions, the forecasts' rates and projections to the nano-dollar) would differ in its last
  digits on every run. So the daemon is started here, through `budgetd.daemon.run`, with a clock
  that does not move: the same seam, held still.
- Before the commands of a scene (`SCENES`) run, the world moves on: two weeks of traffic from
  four components are recorded under the budgets the README's "Budgets" section sets up, or the
  litellm feed changes its prices.
- What a command prints that is not the same on two runs is replaced by fixed values:
  `SUBSTITUTIONS`.

    .venv/bin/python docs/examples.py            # rewrite README.md
    .venv/bin/python docs/examples.py --check    # exit 1 with a diff when README.md is not up to date
"""

import contextlib
import datetime as dt
import difflib
import json
import os
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from actors.sources.litellm_bundled import bundled_path  # noqa: E402
from budgetd import config as config_module  # noqa: E402
from budgetd import daemon as daemon_module  # noqa: E402
from budgetd.client import DaemonUnavailable, SyncBudgetClient  # noqa: E402
from budgetd.clock import Clock  # noqa: E402
from budgetd.demo import HABITS, Habit, call_of  # noqa: E402
from feeds import FeedServer  # noqa: E402
from test_migration import APOLLO_POLICIES, RHETOR_SCHEMA  # noqa: E402

README = ROOT / "README.md"
UTC = dt.timezone.utc
#: The daemon's "now" for every example: a Saturday afternoon (16:00 in Berlin).
INSTANT = dt.datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
THIS_MONDAY = dt.datetime(2026, 11, 23, tzinfo=UTC)
#: The history starts on the Monday before, so "this week" has a week to compare with.
HISTORY_FROM = THIS_MONDAY - dt.timedelta(days=7)
SEED = 20261128
#: Today rhetor summarises long documents: prompt and output tokens of each.
LONG_DOCUMENT = (60_000, 100_000)
SUMMARY = (1_000, 3_000)
#: Each feed answers this long after it is asked: the daemon lists the feeds in `prices refresh` as they
#: answer, so this is the order they are shown in.
FEED_DELAY_S = {"litellm": 0.0, "llm_prices": 0.3, "openrouter": 0.6}

#: The README's width: a line of JSON longer than this is shown abridged (`abridged_json`).
WIDTH = 110
#: (pattern, shown instead): what differs between two runs, or names the temporary directory.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"(?<=  pid )\d+", "3397"),  # budget status: the daemon's process id
    (r"(?<=  up )\S+(?=  socket )", "1m02s"),  # budget status: the daemon's uptime
    (r"(?<= MB in )[\d.e-]+(?=s\))", "0.04"),  # budget backup: how long the copy took
    (r"[\d.]+(?= MB in )", "8.0"),  # budget backup: the file's size, which depends on when SQLite checkpointed
]


class StillClock(Clock):
    """Wall time that stays at one instant (monotonic time, for timeouts, runs as always)."""

    __slots__ = ("at_us",)

    def __init__(self, at: dt.datetime) -> None:
        super().__init__()
        self.at_us = (at - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)

    def now_us(self) -> int:
        return self.at_us


def serve() -> None:
    """The daemon of the examples: its default config and paths, its wall clock at INSTANT."""
    daemon_module.run(config_module.load(), StillClock(INSTANT))


# -- the machine the examples run on ---------------------------------------------------------------


class Machine:
    """The temporary `/` with a home, a runtime directory, price feeds and a running daemon."""

    def __init__(self, root: Path, feeds: FeedServer) -> None:
        self.root = root
        self.feeds = feeds
        # The litellm feed starts as the file bundled with litellm: the same upstream, at the same moment.
        self.publish("litellm", json.loads(bundled_path().read_text()))
        for name in ("llm_prices", "openrouter"):
            self.publish(name)
        self.home = root / "home" / "me"
        self.runtime = root / "run" / "user" / "1000"
        self.runtime.mkdir(parents=True, mode=0o700)
        config = self.home / ".config" / "budgetd" / "budgetd.toml"
        config.parent.mkdir(parents=True)
        # Only what differs from `make run`: feeds from 127.0.0.1 and no HTTP (no port to choose).
        config.write_text('[http]\nlisten = ""\n\n[pricing.urls]\n'
                          + "".join(f'{name} = "{feeds.url(name)}"\n' for name in feeds.paths))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("BUDGETD_", "XDG_")) and k not in ("BUDGET_PORT", "HOME", "TZ")}
        self.env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.runtime), PYTHONPATH=str(ROOT), TZ="UTC")
        self.socket = self.runtime / "budgetd" / "budgetd.sock"
        self.log = root / "daemon.log"
        self.daemon: subprocess.Popen | None = None

    def publish(self, feed: str, data: object = None) -> None:
        self.feeds.publish(feed, data)
        self.feeds.routes[self.feeds.paths[feed]].delay = FEED_DELAY_S[feed]

    def start_daemon(self) -> None:
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=self.home, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.daemon.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(DaemonUnavailable), self.client() as c:
                # Ready once the refresh it starts with has heard from every source.
                if all(s.last_success or s.last_error for s in c.status().prices.sources):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the daemon was not ready in 60s:\n{self.log.read_text()}")

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(30)

    def client(self) -> SyncBudgetClient:
        return SyncBudgetClient(self.socket, retries=0)

    def run(self, line: str, last_status: int) -> tuple[str, int]:
        """What a person sees after typing `line`, and its exit status."""
        words = shlex.split(line)
        if words == ["echo", "$?"]:
            return f"{last_status}\n", 0
        if words[0] != "budget":
            raise ValueError(f"the README shows `$ {line}`, which the examples cannot run (only budget ... "
                             "and echo $?)")
        words = [str(self.home) + w[1:] if w.startswith("~/") else w for w in words[1:]]
        done = subprocess.run([sys.executable, "-m", "budgetd", *words], cwd=self.home, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        return done.stdout, done.returncode

    def shown(self, output: str) -> str:
        """`output` as the README shows it: the temporary `/` is `/`, what varies is fixed, and long JSON is
        abridged."""
        output = output.replace(str(self.root), "")
        for pattern, fixed in SUBSTITUTIONS:
            output = re.sub(pattern, fixed, output)
        return "\n".join(abridged_json(line) if line.startswith("{") and len(line) > WIDTH else line
                         for line in output.split("\n"))


def abridged_json(line: str) -> str:
    """A line of JSON as the README shows it: a list of more than two items shows its first and `...`, and the
    line is folded after commas into lines of at most WIDTH columns."""

    def abridged(value: object) -> object:
        if isinstance(value, list):
            return [abridged(v) for v in value] if len(value) <= 2 else [abridged(value[0]), _LEFT_OUT]
        if isinstance(value, dict):
            return {k: abridged(v) for k, v in value.items()}
        return value

    text = json.dumps(abridged(json.loads(line)), separators=(",", ":"), ensure_ascii=False)
    text = text.replace(f'"{_LEFT_OUT}"', "...")
    pieces = re.findall(r'(?:"(?:[^"\\]|\\.)*"|[^,"])*(?:,|$)', text)
    folded = [""]
    for piece in filter(None, pieces):
        if folded[-1] and len(folded[-1]) + len(piece) > WIDTH:
            folded.append(" ")
        folded[-1] += piece
    return "\n".join(folded)


_LEFT_OUT = "<left out>"


# -- scenes: what happens before some of the commands ----------------------------------------------


def seed_history(machine: Machine) -> None:
    """The budgets of the README's "Budgets" section, and two weeks of traffic under them: rhetor, apollo
    and athena every day, sophia from this Monday on, and today rhetor summarising long documents on
    claude-opus-4-5 until it is close to its daily limit (so that the next large call is refused)."""
    rng = random.Random(SEED)
    habits = {h.component: h for h in HABITS}
    calls_per_day = {"rhetor": 24, "apollo": 16, "athena": 40, "sophia": 14}
    with machine.client() as c:
        c.budget_set(name="daily-total", period="daily", timezone="Europe/Berlin", limit_usd=50, policy="hard",
                     scope={"component": "*"})
        c.budget_set(name="rhetor-tokens", period="hourly", limit_tokens=2_000_000, policy="soft",
                     scope={"component": "rhetor"})
        c.budget_set(name="monthly-total", period="monthly", limit_usd=150, policy="warn")
        calls = []
        day = HISTORY_FROM
        while day < INSTANT:
            for component, per_day in calls_per_day.items():
                if component == "sophia" and day < THIS_MONDAY:
                    continue
                for _ in range(per_day):
                    ts = day + dt.timedelta(seconds=rng.randrange(7 * 3600, 21 * 3600))
                    if ts < INSTANT:
                        calls.append(_call(rng, habits[component], ts))
            day += dt.timedelta(days=1)
        for usage in sorted(calls, key=lambda u: u["ts"]):
            c.record(**usage)
        # Today's long documents, from 08:00 Berlin on, one every few minutes, for as long as the budgets
        # allow the largest one: rhetor stops close to its daily limit.
        ts = INSTANT.replace(hour=7)
        while c.check(component="rhetor", model="claude-opus-4-5", input_tokens=LONG_DOCUMENT[1],
                      max_output_tokens=SUMMARY[1]).allowed:
            ts += dt.timedelta(seconds=rng.randrange(90, 300))
            c.record(component="rhetor", model="claude-opus-4-5", input_tokens=rng.randint(*LONG_DOCUMENT),
                     output_tokens=rng.randint(*SUMMARY), task_type="summarise",
                     context_id=f"rhetor-report-{rng.randrange(8)}", ts=ts)


def _call(rng: random.Random, habit: Habit, ts: dt.datetime) -> dict:
    """One call as `budget demo` makes them, for one of the habit's tasks, at `ts`."""
    return {**call_of(rng, habit, rng.choice(habit.task_types)), "ts": ts}


def move_feed_prices(machine: Machine) -> None:
    """The litellm feed raises gpt-4o by 30% (applied, unverified: the other feeds still say 2.5), gpt-4o-mini
    fivefold (held for a second source) and prices o3 below zero (rejected)."""
    data = machine.feeds.edit("litellm")
    data["gpt-4o"]["input_cost_per_token"] = 3.25e-6
    data["gpt-4o-mini"]["input_cost_per_token"] = 0.75e-6
    data["o3"]["input_cost_per_token"] = -2e-6
    machine.publish("litellm", data)


#: (the command a scene comes before, the scene): each runs once, before the first `$ ` line that starts so.
SCENES: list[tuple[str, Callable[[Machine], None]]] = [
    ("budget check ", seed_history),
    ("budget prices refresh", move_feed_prices),
]


def write_migration_sources(home: Path) -> None:
    """Rhetor's SQLite ledger and Apollo's policy file, where those components keep them."""
    rhetor = home / "Tekton" / "Rhetor" / "rhetor.db"
    rhetor.parent.mkdir(parents=True)
    db = sqlite3.connect(rhetor)
    db.executescript(RHETOR_SCHEMA)
    start = dt.datetime(2026, 11, 12, 9, 0)  # Rhetor wrote Berlin wall time, without an offset
    rows = [((start + dt.timedelta(minutes=25 * i)).isoformat(), "anthropic", "claude-3-haiku-20240307", "rhetor",
             "chat", 1200 + 150 * i, 180 + 20 * i, round(0.0005 + 0.0001 * i, 6), json.dumps({"session": f"s{i % 4}"}))
            for i in range(20)]
    rows += [("not a time", "openai", "gpt-4o", "rhetor", "chat", 1, 1, 0.1, "{}"),
             (start.isoformat(), "openai", "gpt-4o", "rhetor", "chat", -5, 1, 0.1, "{}")]
    db.executemany("INSERT INTO usage (timestamp, provider, model, component, task_type, input_tokens, "
                   "output_tokens, cost, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO budget_settings (period, provider, limit_amount, enforcement, start_date, active) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [
                       ("daily", "all", 40.0, "warn", "2026-10-01T00:00:00", 0),
                       ("daily", "all", 60.0, "enforce", "2026-11-01T00:00:00", 1),
                       ("monthly", "anthropic", 100.0, "warn", "2026-10-01T00:00:00", 1),
                       ("weekly", "all", 0.0, "warn", "2026-10-01T00:00:00", 1),
                   ])
    db.commit()
    db.close()
    apollo = home / ".tekton" / "data" / "apollo" / "budget_data" / "budget_policies.json"
    apollo.parent.mkdir(parents=True)
    apollo.write_text(json.dumps(APOLLO_POLICIES, indent=2))


# -- the README ------------------------------------------------------------------------------------

FENCE = "```"


def example_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line index, command) of every `$ ` line inside a fenced block, in order."""
    inside = False
    for i, line in enumerate(text.split("\n")):
        if line.startswith(FENCE):
            inside = not inside
        elif inside and line.startswith("$ "):
            yield i, line[2:]


def generate(text: str) -> str:
    """`text` (the README) with the output under each `$ ` line replaced by what the command prints."""
    lines = text.split("\n")
    outputs: dict[int, list[str]] = {}
    scenes = list(SCENES)
    with tempfile.TemporaryDirectory(prefix="budgetd-readme-") as tmp, FeedServer() as feeds:
        machine = Machine(Path(tmp), feeds)
        write_migration_sources(machine.home)
        machine.start_daemon()
        try:
            status = 0
            for index, command in example_lines(text):
                for prefix, scene in [s for s in scenes if command.startswith(s[0])]:
                    scene(machine)
                    scenes.remove((prefix, scene))
                output, status = machine.run(command, status)
                outputs[index] = machine.shown(output).rstrip("\n").split("\n") if output else []
        finally:
            machine.stop_daemon()
    if scenes:
        raise ValueError(f"no README command starts with {', '.join(repr(p) for p, _ in scenes)}; "
                         "update SCENES in docs/examples.py")
    new: list[str] = []
    skipping = False
    for i, line in enumerate(lines):
        if i in outputs:
            new += [line, *outputs[i]]
            skipping = True
        elif skipping and not line.startswith(FENCE):
            continue  # the output shown before
        else:
            skipping = False
            new.append(line)
    return "\n".join(new)


def difference(text: str, made: str) -> str:
    """What `make readme` would change in `text`, as a unified diff and what to do; "" when nothing."""
    if made == text:
        return ""
    diff = difflib.unified_diff(text.splitlines(True), made.splitlines(True), "README.md",
                                "README.md as the commands print it")
    return "".join(diff) + "\nthe README's examples are not what the commands print: run `make readme`\n"


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        serve()
        return 0
    text = README.read_text()
    made = generate(text)
    if argv == ["--check"]:
        print(difference(text, made), end="")
        return 1 if made != text else 0
    README.write_text(made)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
