"""Reports over a million records: the ledger is built once through the ledger's own write path
(records and rollups in one transaction each batch) and cached under bench/.cache.

Each report is timed through the socket (client, daemon, rollups) beside the same
question asked of SQLite as one GROUP BY over the records (no rollups).
"""

import datetime as dt
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from actors.ledger import SCHEMA_VERSION, SqliteStore, UsageRow, WriteUsage
from budgetd.periods import HOUR_US, to_us

RECORDS = 1_000_000
WORKLOAD = 3  # bump when the generated traffic changes
CACHE = Path(__file__).parent / ".cache"
END = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
START = END - dt.timedelta(days=365)
ZONES = ["Europe/Berlin"]  # the zones with a day rollup of their own (UTC always has one)

MODELS = [  # (model, provider, tier, $/M input, $/M output)
    ("gpt-4o", "openai", "midweight", 2.5, 10), ("gpt-4o-mini", "openai", "lightweight", 0.15, 0.6),
    ("o3", "openai", "heavyweight", 2, 8), ("claude-sonnet-4-5", "anthropic", "midweight", 3, 15),
    ("claude-haiku-4-5", "anthropic", "lightweight", 1, 5), ("claude-opus-4-1", "anthropic", "heavyweight", 15, 75),
    ("gemini-2.5-pro", "gemini", "heavyweight", 1.25, 10), ("gemini-2.5-flash", "gemini", "lightweight", 0.3, 2.5),
    ("mistral-large-latest", "mistral", "midweight", 2, 6), ("llama3.1:8b", "ollama", "lightweight", 0, 0),
]
COMPONENTS = ["rhetor", "apollo", "athena", "sophia", "hermes", "ergon", "metis", "prometheus", "telos",
              "harmonia", "synthesis", "noesis"]
TASKS = ["chat", "code", "summarize", "plan"]


def ledger_path() -> Path:
    return CACHE / f"ledger-{RECORDS}-v{SCHEMA_VERSION}-w{WORKLOAD}.db"


def build(path: Path) -> None:
    """A year of traffic from twelve components, busier in working hours, through the ledger's store."""
    anyio.run(_build, path)


async def _build(path: Path) -> None:
    rng = random.Random(1)
    uses = {c: rng.sample(MODELS, 3) for c in COMPONENTS}
    tmp = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    store = SqliteStore(tmp, "normal", report_zones=ZONES)
    await store.open()
    span = to_us(END) - to_us(START)
    start_us = to_us(START)
    batch: list[WriteUsage] = []
    started = time.perf_counter()
    for i in range(RECORDS):
        ts = start_us + rng.randrange(span)
        if not 7 <= (ts // HOUR_US) % 24 <= 19 and rng.random() < 0.6:
            ts = ts // (24 * HOUR_US) * 24 * HOUR_US + rng.randrange(7, 20) * HOUR_US + rng.randrange(HOUR_US)
        component = rng.choice(COMPONENTS)
        model, provider, tier, rate_in, rate_out = rng.choice(uses[component])
        tokens_in, tokens_out = rng.randrange(100, 20_000), rng.randrange(10, 2_000)
        batch.append(WriteUsage(row=UsageRow(
            ts=ts, component=component, model=model, provider=provider, tier=tier,
            context_id=f"ctx-{rng.randrange(50_000)}", task_type=rng.choice(TASKS),
            input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=rng.choice([0, 0, tokens_in // 2]),
            cache_write_tokens=0, cost_nanos=int(tokens_in * rate_in * 1000 + tokens_out * rate_out * 1000),
            priced=True, price_version=1, reservation_id=None, request_id=None, metadata=None,
            idempotency_key=None,
        ), payload_hash=None, reply=None))  # type: ignore[arg-type]
        if len(batch) == 1024:
            await store.append(batch, ts)
            batch = []
    if batch:
        await store.append(batch, 0)
    await store.checkpoint()
    await store.close()
    tmp.rename(path)
    print(f"  built {RECORDS:,} records in {time.perf_counter() - started:.0f} s: {path}", flush=True)


def cached_ledger() -> Path:
    path = ledger_path()
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        print(f"  building the {RECORDS:,}-record ledger once (cached in {CACHE})", flush=True)
        build(path)
    return path


def copy_to(path: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, data_dir / "ledger.db")


def _us(t: dt.datetime) -> int:
    return to_us(t)


#: (name, client.report arguments, the same question as one GROUP BY over the records)
REPORTS: list[tuple[str, dict[str, Any], str]] = [
    ("year by component", {"group_by": ["component"]},
     "SELECT component, count(*), sum(input_tokens), sum(output_tokens), sum(cost_nanos) FROM usage GROUP BY 1"),
    ("30 d by component,model per day", {
        "group_by": ["component", "model"], "bucket": "day", "since": END - dt.timedelta(days=30), "until": END},
     f"SELECT ts / {24 * HOUR_US}, component, model, count(*), sum(input_tokens), sum(output_tokens), "
     f"sum(cost_nanos) FROM usage WHERE ts >= {_us(END - dt.timedelta(days=30))} AND ts < {_us(END)} "
     "GROUP BY 1, 2, 3"),
    ("year by model per month, Berlin", {"group_by": ["model"], "bucket": "month", "timezone": "Europe/Berlin"},
     "SELECT strftime('%Y-%m', ts / 1000000 + 3600, 'unixepoch'), model, count(*), sum(input_tokens), "
     "sum(output_tokens), sum(cost_nanos) FROM usage GROUP BY 1, 2"),
    ("7 d by component per hour", {
        "group_by": ["component"], "bucket": "hour", "since": END - dt.timedelta(days=7), "until": END},
     f"SELECT ts / {HOUR_US}, component, count(*), sum(input_tokens), sum(output_tokens), sum(cost_nanos) "
     f"FROM usage WHERE ts >= {_us(END - dt.timedelta(days=7))} GROUP BY 1, 2"),
    ("year, tier x task per week, top 5", {
        "group_by": ["tier", "task_type"], "bucket": "week", "limit": 5, "order": "tokens"},
     f"SELECT ts / {7 * 24 * HOUR_US}, tier, task_type, count(*), sum(input_tokens), sum(output_tokens), "
     "sum(cost_nanos) FROM usage GROUP BY 1, 2, 3"),
]


def time_ours(client: Any, args: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    result = client.report(**args)
    return (time.perf_counter() - started) * 1e3, result.totals.requests


def time_naive(path: Path, sql: str) -> float:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        started = time.perf_counter()
        db.execute(sql).fetchall()
        return (time.perf_counter() - started) * 1e3
