"""`make bench`: budgetd's figures beside baselines measured in the same run.

Each figure is the median of several runs (`--runs`, default 5) and is printed
with its baseline and the ratio between them:

- ping round trip p50, p99   vs a bare anyio+msgspec echo server (the floor); a durable record's   vs the
  echo plus one bare SQLite commit (WAL, synchronous FULL)
- check and reserve at 10 matching budgets   vs the echo; a denied check (which looks for a cheaper model
  over the whole book)   vs an allowed one
- durable record throughput at 1, 8, 64 connections   vs raw aiosqlite group commit; reserve+commit flows
  (two durable writes each)   vs half of it
- per-record cost   vs litellm's BudgetManager.update_cost
- `budget status` wall time   vs a bare `python -c pass`
- the ledger on PostgreSQL (`fleet.dsn`, two nodes, a server started for the run): a durable record   vs the
  echo plus one bare PostgreSQL commit; records/s at 64 connections   vs PostgreSQL's own group commit
  through asyncpg; records/s of both nodes at once, 64 connections each   vs that group commit with 128
  writers; reserve p50 on a node (three hard budgets among ten, admitted by the database)   vs the same
  figure single-host
"""

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from bench import reports

ROOT = Path(__file__).resolve().parent.parent
# As the client library sends it: every write carries an idempotency key.
RECORD = (b'{"op":"record","id":%d,"idempotency_key":"k%d","usage":{"component":"bench","model":"gpt-4o",'
          b'"input_tokens":1000,"output_tokens":500}}\n')
PING = b'{"op":"ping","id":%d}\n'
ESTIMATE = b'"estimate":{"component":"bench","model":"gpt-4o","input_tokens":1000,"max_output_tokens":500}'
CHECK = b'{"op":"check","id":%d,' + ESTIMATE + b'}\n'
# Denied checks, whose decision searches the whole book for a cheaper model that fits (see refusing_budgets).
REFUSED = CHECK.replace(b'"component":"bench"', b'"component":"bench-refused"')
DOWNGRADED = CHECK.replace(b'"component":"bench"', b'"component":"bench-suggested"')
RESERVE = b'{"op":"reserve","id":%d,"idempotency_key":"r%d","ttl_s":60,' + ESTIMATE + b'}\n'
COMMIT = (b'{"op":"commit","id":%d,"reservation_id":"%s","usage":{"component":"bench","model":"gpt-4o",'
          b'"input_tokens":1000,"output_tokens":400}}\n')


def define_budgets(path: Path, n: int = 10) -> None:
    """Ten budgets of different scopes and periods that every bench request matches; none refuses."""
    from budgetd.client import SyncBudgetClient

    scopes = [{}, {"component": "*"}, {"component": "bench"}, {"model": "gpt-4o"}, {"provider": "*"},
              {"tier": "midweight"}, {"component": "*", "model": "*"}, {"provider": "openai"}, {}, {"model": "*"}]
    periods = ["hourly", "daily", "weekly", "monthly", "total"]
    with SyncBudgetClient(path) as client:
        for i in range(n):
            client.budget_set(name=f"bench-{i}", period=periods[i % 5], timezone="Europe/Berlin",
                              limit_usd=1e8, limit_tokens=10**12, policy=["warn", "soft", "hard"][i % 3],
                              scope=scopes[i % len(scopes)])


def many_budgets(path: Path, n: int = 10_000) -> None:
    """`n` more budgets, each on a component of its own: none covers a bench request, so they show what
    admission pays for budgets that exist but do not match (nothing, when matching is by index)."""
    from budgetd.client import SyncBudgetClient

    with SyncBudgetClient(path) as client:
        for i in range(n):
            client.budget_set(name=f"other-{i}", period=("daily", "monthly")[i % 2], limit_usd=100.0,
                              policy=("hard", "soft", "warn")[i % 3], scope={"component": f"other-{i}"})


def refusing_budgets(path: Path) -> None:
    """Hard budgets that deny REFUSED with nothing cheaper fitting (no headroom), and DOWNGRADED's gpt-4o
    alone (a cheaper model of its tier fits)."""
    from budgetd.client import SyncBudgetClient

    with SyncBudgetClient(path) as client:
        client.budget_set(name="bench-refused", period="daily", limit_usd=0.0, policy="hard",
                          scope={"component": "bench-refused"})
        client.budget_set(name="bench-no-gpt-4o", period="daily", limit_usd=0.0, policy="hard",
                          scope={"component": "bench-suggested", "model": "gpt-4o"})


def lease_admission(path: Path, n: int) -> tuple[float, float]:
    """p50 and p99 of `Lease.admit` in microseconds: calls admitted in process against holds leased from
    the daemon in batches of 1,000 (the lease round trips are not in the figure; they are one per 1,000
    calls). Each admitted hold is given back with the rest, so the budgets are left as they were."""
    from budgetd.client import SyncBudgetClient
    from budgetd.protocol import Release

    times: list[float] = []
    with SyncBudgetClient(path) as client:
        while len(times) < n:
            lease = client.lease(component="bench", model="gpt-4o", input_tokens=1000, max_output_tokens=500,
                                 calls=1000, ttl_s=600)
            admitted = []
            while True:
                start = time.perf_counter()
                reservation = lease.admit()
                took = time.perf_counter() - start
                if reservation is None:
                    break
                times.append(took)
                admitted.append(reservation)
            client.lease_return(lease)
            client.call(Release(reservation_ids=admitted))
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def _frame(template: bytes, i: int) -> bytes:
    return template % ((i,) * template.count(b"%d"))


# -- processes ----------------------------------------------------------------------


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(b'{"op":"ping","id":0}\n')
                if s.recv(100):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{path} not ready")


class Process:
    def __init__(self, args: list[str], path: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for_socket(path, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def start_daemon(work: Path, name: str, http_port: int | None, ledger: Path | None = None,
                 **env_extra: str) -> tuple[Process, Path]:
    sock = work / f"{name}.sock"
    data = work / f"{name}-data"
    shutil.rmtree(data, ignore_errors=True)
    if ledger is not None:
        reports.copy_to(ledger, data)
    http = ["--http", f"127.0.0.1:{http_port}"] if http_port else ["--no-http"]
    args = [sys.executable, "-m", "budgetd", "daemon", "--socket", str(sock), "--data-dir", str(data), *http]
    # Offline: prices from the bundled file only, so no feed fetch runs during the measurements.
    # Reserve latency runs leave their holds open: room for all of them.
    env = dict(os.environ, BUDGETD_PRICING_SOURCES='["litellm_bundled"]', BUDGETD_ADMISSION_MAX_OPEN_HOLDS="10000000",
               BUDGETD_ADMISSION_MAX_HOLDS_PER_COMPONENT="10000000", **env_extra)
    return Process(args, sock, env), sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready")


def start_asgi_echo() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.asgi_echo", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, port


def http_frame(body: bytes) -> bytes:
    return (b"POST /api/v1/rpc HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def _read_http(reader: asyncio.StreamReader) -> bytes:
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


# -- load: one request at a time per connection, over a Unix socket or HTTP/1.1 keep-alive ------------

Exchange = Any  # async (reader, writer, i) -> None: one request and its answer
# Every run numbers its requests afresh, so idempotency keys never repeat across runs (a repeat would be
# answered from memory as a duplicate and flatter the figures).
_runs = itertools.count(1)


def over_socket(path: Path, template: bytes) -> tuple[Any, Exchange]:
    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        writer.write(_frame(template, i))
        await reader.readline()

    return (lambda: asyncio.open_unix_connection(str(path))), exchange


def over_http(port: int, template: bytes) -> tuple[Any, Exchange]:
    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        writer.write(http_frame(_frame(template, i).rstrip(b"\n")))
        await _read_http(reader)

    return (lambda: asyncio.open_connection("127.0.0.1", port)), exchange


async def _latency(target: tuple[Any, Exchange], n: int) -> tuple[float, float]:
    """p50 and p99 round trip in microseconds, one request at a time on one connection."""
    connect, exchange = target
    reader, writer = await connect()
    times = []
    base = next(_runs) * 1_000_000_000
    for i in range(n + 50):
        start = time.perf_counter()
        await exchange(reader, writer, base + i)
        if i >= 50:  # warm-up
            times.append(time.perf_counter() - start)
    writer.close()
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


async def _throughput(target: tuple[Any, Exchange], connections: int, seconds: float) -> float:
    connect, exchange = target
    done = 0
    stop_at = time.perf_counter() + seconds
    base = next(_runs) * 1_000_000_000

    async def worker(w: int) -> None:
        nonlocal done
        reader, writer = await connect()
        i = base + w * 10_000_000
        while time.perf_counter() < stop_at:
            await exchange(reader, writer, i)
            done += 1
            i += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    return done / (time.perf_counter() - start)


def latency(target: tuple[Any, Exchange], n: int) -> tuple[float, float]:
    return _run(_latency(target, n))


def socket_latency(path: Path, template: bytes, n: int) -> tuple[float, float]:
    """Like `latency`, with a blocking socket: an event loop in the client would add its own ~50 us to
    every round trip and blur the ratio to the floor."""
    times = []
    base = next(_runs) * 1_000_000_000
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        buffer = b""
        for i in range(n + 50):
            frame = _frame(template, base + i)
            start = time.perf_counter()
            s.sendall(frame)
            while b"\n" not in buffer:
                buffer += s.recv(65536)
            _, buffer = buffer.split(b"\n", 1)
            if i >= 50:  # warm-up
                times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def throughput(target: tuple[Any, Exchange], connections: int, seconds: float) -> float:
    return _run(_throughput(target, connections, seconds))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id (Linux: empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return {}
    return out


def cpu_per_request(pid: int, run: Any) -> tuple[float, float, float]:
    """`run()`'s rate per second, and the CPU (us) the daemon's event loop (its main thread) and its other
    threads (the ledger's SQLite thread) spent per request meanwhile."""
    before, start = thread_cpu(pid), time.perf_counter()
    rate = run()
    after, elapsed = thread_cpu(pid), time.perf_counter() - start
    n = max(rate * elapsed, 1)
    loop = after.get(pid, 0) - before.get(pid, 0)
    others = sum(v - before.get(t, 0) for t, v in after.items() if t != pid)
    return rate, loop / n * 1e6, others / n * 1e6


def reserve_commit(path: Path) -> tuple[Any, Exchange]:
    """A reserve and the commit of its hold: one exchange."""
    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        writer.write(RESERVE % (2 * i, 2 * i))
        rid = json.loads(await reader.readline())["result"]["reservation_id"].encode()
        writer.write(COMMIT % (2 * i + 1, rid))
        await reader.readline()

    return (lambda: asyncio.open_unix_connection(str(path))), exchange


def start_echo(work: Path) -> tuple[Process, Path]:
    sock = work / "echo.sock"
    return Process([sys.executable, "-m", "bench.echo", str(sock)], sock), sock


# -- measurements ---------------------------------------------------------------------


async def _sqlite_floor(db_path: Path, writers: int, seconds: float) -> float:
    """Raw aiosqlite group commit: writers queue rows, one committer drains, inserts, commits, acks."""
    db = await aiosqlite.connect(db_path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY, ts INTEGER, component TEXT, model TEXT, "
        "input_tokens INTEGER, output_tokens INTEGER, cost_nanos INTEGER, key TEXT)"
    )
    await db.execute("CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, result BLOB) WITHOUT ROWID")
    queue: asyncio.Queue = asyncio.Queue()
    done = 0
    stop_at = time.perf_counter() + seconds
    loop = asyncio.get_running_loop()

    async def committer() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT INTO usage (ts, component, model, input_tokens, output_tokens, cost_nanos, key) "
                "VALUES (?, 'bench', 'gpt-4o', 1000, 500, 7500000, ?)", [(time.time_ns(), k) for k, _ in batch]
            )
            await db.executemany("INSERT INTO keys VALUES (?, x'00')", [(k,) for k, _ in batch])
            await db.execute("COMMIT")
            for _, fut in batch:
                fut.set_result(None)

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            fut = loop.create_future()
            queue.put_nowait((f"{w}-{i}-{time.time_ns()}", fut))
            await fut
            done += 1
            i += 1

    task = asyncio.create_task(committer())
    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    task.cancel()
    await db.close()
    return done / elapsed


def sqlite_commit(work: Path, n: int) -> tuple[float, float]:
    """p50 and p99 (us) of one transaction holding one record and its key, as the floor's committer writes them
    (WAL, synchronous FULL), on the calling thread: the durable part of a record's round trip at its barest."""
    path = work / f"commit-{time.time_ns()}.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE usage (id INTEGER PRIMARY KEY, ts INTEGER, component TEXT, model TEXT, "
                   "input_tokens INTEGER, output_tokens INTEGER, cost_nanos INTEGER, key TEXT)")
        db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY, result BLOB) WITHOUT ROWID")
        times = []
        for i in range(n + 50):
            key = f"{i}-{time.time_ns()}"
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO usage (ts, component, model, input_tokens, output_tokens, cost_nanos, key) "
                       "VALUES (?, 'bench', 'gpt-4o', 1000, 500, 7500000, ?)", (time.time_ns(), key))
            db.execute("INSERT INTO keys VALUES (?, x'00')", (key,))
            db.execute("COMMIT")
            if i >= 50:  # warm-up
                times.append(time.perf_counter() - start)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


async def _ledger_append(path: Path, n: int) -> tuple[float, float]:
    from actors.ledger.messages import UsageRow, WriteUsage
    from actors.ledger.sqlite.writes import SqliteStore

    store = SqliteStore(path)
    await store.open()
    appends, hops = [], []
    try:
        now = time.time_ns() // 1000
        for i in range(n + 50):
            row = UsageRow(ts=now + i, component="bench", model="gpt-4o", provider="openai", tier="midweight",
                           context_id=None, task_type=None, input_tokens=1000, output_tokens=500,
                           cache_read_tokens=0, cache_write_tokens=0, cost_nanos=7_500_000, priced=True,
                           price_version=1, reservation_id=None, request_id=None, metadata=None,
                           idempotency_key=f"k{i}")
            start = time.perf_counter()
            await store.append([WriteUsage(row=row, payload_hash=b"h", reply=None)], now + i)
            middle = time.perf_counter()
            await anyio.to_thread.run_sync(int)
            if i >= 50:  # warm-up
                appends.append(middle - start)
                hops.append(time.perf_counter() - middle)
    finally:
        await store.close()
    return med(appends) * 1e6, med(hops) * 1e6


def ledger_append(work: Path, n: int) -> tuple[float, float]:
    """p50 (us) of the ledger's own transaction for one record (its row, rollups and key, committed by the
    SQLite thread), and of the bare thread hop it includes: where a durable record's time goes."""
    path = work / f"append-{time.time_ns()}.db"
    try:
        return _run(_ledger_append(path, n))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def sqlite_floor(work: Path, writers: int, seconds: float) -> float:
    path = work / f"floor-{writers}-{time.time_ns()}.db"
    try:
        return _run(_sqlite_floor(path, writers, seconds))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def _run(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def budget_status_wall(path: Path, n: int) -> tuple[float, float]:
    budget = Path(sys.executable).with_name("budget")
    times, bare = [], []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([str(budget), "--socket", str(path), "status"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, statistics.median(bare) * 1e3


def litellm_budget_manager(n: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.litellm_budget_manager", str(n)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_figures(work: Path, runs: int, add: Any, built_only: bool = False) -> None:
    """Five reports over a million records, through the socket, beside one GROUP BY over the records
    (`built_only`: only when that ledger is already built, since building it takes minutes)."""
    from budgetd.client import SyncBudgetClient

    if built_only and not reports.ledger_path().exists():
        print("  (no report rows: their ledger is not built yet; a full `make bench` builds it once)", flush=True)
        return
    ledger = reports.cached_ledger()
    daemon, sock = start_daemon(work, "reports", None, ledger=ledger,
                                BUDGETD_REPORTS_TIMEZONES=json.dumps(reports.ZONES))
    try:
        with SyncBudgetClient(sock, timeout=120) as client:
            for name, request, sql in reports.REPORTS:
                ours, naive = [], []
                for _ in range(runs):
                    ms, requests = reports.time_ours(client, request)
                    ours.append(ms)
                    naive.append(reports.time_naive(ledger, sql))
                if name == "year by component" and requests != reports.RECORDS:
                    raise SystemExit(f"the report counted {requests:,} records, not {reports.RECORDS:,}")
                add(f"report: {name}", med(ours), "SQL GROUP BY", med(naive), "ms", False)
    finally:
        daemon.stop()


async def _postgres_commit(dsn: str, n: int) -> tuple[float, float]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_PG_FLOOR_TABLES)
        times = []
        for i in range(n + 50):
            key = f"{i}-{time.time_ns()}"
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(_PG_INSERT_ROW, time.time_ns(), key)
                await conn.execute(_PG_INSERT_KEY, key)
            if i >= 50:
                times.append(time.perf_counter() - start)
    finally:
        await conn.close()
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


_PG_FLOOR_TABLES = (
    "CREATE TABLE IF NOT EXISTS floor_usage (id BIGSERIAL PRIMARY KEY, ts BIGINT, component TEXT, model TEXT, "
    "input_tokens BIGINT, output_tokens BIGINT, cost_nanos BIGINT, key TEXT); "
    "CREATE TABLE IF NOT EXISTS floor_keys (key TEXT PRIMARY KEY, result BYTEA)")
_PG_INSERT_ROW = ("INSERT INTO floor_usage (ts, component, model, input_tokens, output_tokens, cost_nanos, key) "
                  "VALUES ($1, 'bench', 'gpt-4o', 1000, 500, 7500000, $2)")
_PG_INSERT_KEY = "INSERT INTO floor_keys VALUES ($1, '\\x00')"


async def _postgres_floor(dsn: str, writers: int, seconds: float) -> float:
    """PostgreSQL's own group commit through asyncpg: writers queue rows, one committer drains the queue and
    inserts each batch's rows and keys (one pipelined statement each) in one transaction, then acks."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await conn.execute(_PG_FLOOR_TABLES)
    queue: asyncio.Queue = asyncio.Queue()
    done = 0
    stop_at = time.perf_counter() + seconds
    loop = asyncio.get_running_loop()

    async def committer() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            async with conn.transaction():
                await conn.executemany(_PG_INSERT_ROW, [(time.time_ns(), k) for k, _ in batch])
                await conn.executemany(_PG_INSERT_KEY, [(k,) for k, _ in batch])
            for _, fut in batch:
                fut.set_result(None)

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            fut = loop.create_future()
            queue.put_nowait((f"{w}-{i}-{time.time_ns()}", fut))
            await fut
            done += 1
            i += 1

    task = asyncio.create_task(committer())
    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await conn.close()
    return done / elapsed


def postgres_figures(work: Path, args: Any, add: Any, echo_sock: Path, echo_p50: float, sqlite_reserve: float) -> None:
    """The ledger on PostgreSQL (`fleet.dsn`, one node): a durable record and a reserve beside their floors and
    the SQLite figures, and records/s beside PostgreSQL's own group commit, on a server started for the run."""
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        dsn = server.create_database("bench")
        floor_dsn = server.create_database("floor")
        daemon, sock = start_daemon(work, "fleet", None, BUDGETD_FLEET_DSN=dsn, BUDGETD_FLEET_NODE="bench-a")
        second, sock_b = start_daemon(work, "fleet-b", None, BUDGETD_FLEET_DSN=dsn, BUDGETD_FLEET_NODE="bench-b")
        try:
            records, commits, rates, floors = [], [], [], []
            for _ in range(args.runs):
                records.append(socket_latency(sock, RECORD, args.n // 3))
                commits.append(_run(_postgres_commit(floor_dsn, args.n // 3)))
            add("record p50 (durable), ledger on PostgreSQL", med(r[0] for r in records),
                "echo + one PG commit p50", echo_p50 + med(c[0] for c in commits), "us", False)
            for _ in range(args.runs):
                rates.append(throughput(over_socket(sock, RECORD), 64, args.seconds))
                floors.append(_run(_postgres_floor(floor_dsn, 64, args.seconds)))
            add("record/s, 64 conn, ledger on PostgreSQL", med(rates), "PG group commit", med(floors), "/s", True)
            fleet, floors = [], []
            for _ in range(args.runs):  # both nodes at once, 64 connections each
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    fleet.append(sum(pool.map(lambda path: throughput(over_socket(path, RECORD), 64, args.seconds),
                                              [sock, sock_b])))
                floors.append(_run(_postgres_floor(floor_dsn, 128, args.seconds)))
            add("record/s fleet-wide, 2 nodes x 64 conn", med(fleet), "PG group commit, 128", med(floors), "/s",
                True)
            define_budgets(sock)  # three of them hard: every reserve is admitted by the database
            reserves = [socket_latency(sock, RESERVE, args.n // 3) for _ in range(args.runs)]
            add("reserve p50 (10 budgets), fleet node", med(r[0] for r in reserves),
                "same single-host", sqlite_reserve, "us", False)
            add("reserve p50 (10 budgets), fleet node", med(r[0] for r in reserves),
                "echo + one PG commit p50", echo_p50 + med(c[0] for c in commits), "us", False)
        finally:
            second.stop()
            daemon.stop()
    finally:
        server.remove()


med = statistics.median


# -- the table --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each throughput run")
    parser.add_argument("--n", type=int, default=3000, help="round trips per latency run")
    parser.add_argument("--quick", action="store_true",
                        help="a one-minute look: one run of each figure, short runs, no 10k-budget rows, and the "
                             "report rows only if their ledger is already built")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.n = 1, 0.5, 600
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="budgetd-bench-"))
    rows: list[tuple[str, str, float, str, float, str]] = []

    def add(name: str, ours: float, base_name: str, base: float, unit: str, higher_is_better: bool) -> None:
        ratio = (ours / base) if higher_is_better else (ours / base)
        rows.append((name, f"{ours:,.1f} {unit}", ours, f"{base_name} {base:,.1f} {unit}", base, f"{ratio:.2f}x"))
        print(f"  {name:<42} {ours:>12,.1f} {unit:<9} {base_name:<22} {base:>12,.1f} {unit:<9} {ratio:>6.2f}x",
              flush=True)

    echo, echo_sock = start_echo(work)
    http_port = free_port()
    daemon, sock = start_daemon(work, "budgetd", http_port)
    wait_for_port(http_port, daemon.proc)
    asgi, asgi_port = start_asgi_echo()
    try:
        print(f"budgetd bench: medians of {args.runs} runs (ratio = budgetd / baseline)", flush=True)
        print(f"  {'figure':<42} {'budgetd':>22} {'baseline':<22} {'':>22} {'ratio':>6}")
        lat = {k: [] for k in ("fp", "ep", "rp", "commit", "append")}
        for _ in range(args.runs):
            lat["fp"].append(socket_latency(sock, PING, args.n))
            lat["ep"].append(socket_latency(echo_sock, PING, args.n))
            lat["rp"].append(socket_latency(sock, RECORD, args.n // 3))
            lat["commit"].append(sqlite_commit(work, args.n // 3))
            lat["append"].append(ledger_append(work, args.n // 3))
        p50 = lambda xs: med(x[0] for x in xs)  # noqa: E731
        p99 = lambda xs: med(x[1] for x in xs)  # noqa: E731
        add("ping p50", p50(lat["fp"]), "echo p50", p50(lat["ep"]), "us", False)
        add("ping p99", p99(lat["fp"]), "echo p99", p99(lat["ep"]), "us", False)
        # A durable record's floor: the echo's round trip and one bare SQLite commit, one after the other.
        add("record p50 (durable)", p50(lat["rp"]), "echo + one commit p50", p50(lat["ep"]) + p50(lat["commit"]),
            "us", False)
        add("record p99 (durable)", p99(lat["rp"]), "echo + one commit p99", p99(lat["ep"]) + p99(lat["commit"]),
            "us", False)
        # What that floor leaves out: the ledger's transaction of one record, and the thread hop in it.
        add("ledger append of one record (in process)", med(a for a, _ in lat["append"]), "one commit p50",
            p50(lat["commit"]), "us", False)
        add("  of which the SQLite thread hop", med(h for _, h in lat["append"]), "one commit p50",
            p50(lat["commit"]), "us", False)

        for c in (1, 8, 64):
            ours = [throughput(over_socket(sock, RECORD), c, args.seconds) for _ in range(args.runs)]
            floor = [sqlite_floor(work, c, args.seconds) for _ in range(args.runs)]
            add(f"record/s, {c} conn", med(ours), "sqlite group commit", med(floor), "/s", True)
        echo64 = [throughput(over_socket(echo_sock, RECORD), 64, args.seconds) for _ in range(args.runs)]
        spent = [cpu_per_request(daemon.proc.pid, lambda: throughput(over_socket(sock, RECORD), 64, args.seconds))
                 for _ in range(args.runs)]
        ours64 = [rate for rate, _, _ in spent]
        add("record/s, 64 conn", med(ours64), "echo, 64 conn", med(echo64), "/s", True)
        # Where a record's time goes: both threads hold the GIL for most of their CPU, so their sum beside the
        # wall time per record says how much of it they spend one after the other.
        wall = 1e6 / med(ours64)
        add("event loop CPU per record, 64 conn", med(loop for _, loop, _ in spent), "wall per record", wall,
            "us", False)
        add("SQLite thread CPU per record, 64 conn", med(other for _, _, other in spent), "wall per record", wall,
            "us", False)

        define_budgets(sock)
        time.sleep(2)  # let the ledger's WAL checkpoint after the throughput runs finish
        adm = {k: [] for k in ("check", "reserve", "echo")}
        for _ in range(args.runs):
            adm["check"].append(socket_latency(sock, CHECK, args.n))
            adm["reserve"].append(socket_latency(sock, RESERVE, args.n))
            adm["echo"].append(socket_latency(echo_sock, CHECK, args.n))
        add("check p50 (10 budgets)", p50(adm["check"]), "echo p50", p50(adm["echo"]), "us", False)
        add("check p99 (10 budgets)", p99(adm["check"]), "echo p99", p99(adm["echo"]), "us", False)
        add("reserve p50 (10 budgets)", p50(adm["reserve"]), "echo p50", p50(adm["echo"]), "us", False)
        add("reserve p99 (10 budgets)", p99(adm["reserve"]), "echo p99", p99(adm["echo"]), "us", False)
        leased = [lease_admission(sock, args.n) for _ in range(args.runs)]
        add("in-process admission p50 (lease)", p50(leased), "reserve p50 (socket)", p50(adm["reserve"]), "us",
            False)
        refusing_budgets(sock)
        denied = {k: [] for k in ("allowed", "refused", "downgraded")}
        for _ in range(args.runs):
            denied["allowed"].append(socket_latency(sock, CHECK, args.n // 3))
            denied["refused"].append(socket_latency(sock, REFUSED, args.n // 3))
            denied["downgraded"].append(socket_latency(sock, DOWNGRADED, args.n // 3))
        add("check p50 denied, nothing fits", p50(denied["refused"]), "allowed check p50", p50(denied["allowed"]),
            "us", False)
        add("check p50 denied, suggestion", p50(denied["downgraded"]), "allowed check p50", p50(denied["allowed"]),
            "us", False)
        pairs = [throughput(reserve_commit(sock), 64, args.seconds) for _ in range(args.runs)]
        # A flow is two durable writes (its hold, then its record): the floor allows half its writes per second.
        add("reserve+commit/s, 64 conn", med(pairs), "sqlite group commit / 2", med(floor) / 2, "/s", True)
        records_with_budgets = [throughput(over_socket(sock, RECORD), 64, args.seconds) for _ in range(args.runs)]
        add("record/s, 64 conn, 10 budgets", med(records_with_budgets), "sqlite group commit", med(floor), "/s",
            True)

        h = {k: [] for k in ("record", "check", "echo")}
        for _ in range(args.runs):
            h["record"].append(latency(over_http(http_port, RECORD), args.n // 3))
            h["check"].append(latency(over_http(http_port, CHECK), args.n // 3))
            h["echo"].append(latency(over_http(asgi_port, PING), args.n // 3))
        add("HTTP record p50 (keep-alive)", p50(h["record"]), "ASGI echo p50", p50(h["echo"]), "us", False)
        add("HTTP check p50 (keep-alive)", p50(h["check"]), "ASGI echo p50", p50(h["echo"]), "us", False)
        add("HTTP check p99 (keep-alive)", p99(h["check"]), "ASGI echo p99", p99(h["echo"]), "us", False)
        http_records = [throughput(over_http(http_port, RECORD), 64, args.seconds) for _ in range(args.runs)]
        http_echo = [throughput(over_http(asgi_port, PING), 64, args.seconds) for _ in range(args.runs)]
        add("HTTP record/s, 64 conn", med(http_records), "ASGI echo, 64 conn", med(http_echo), "/s", True)

        bm = [litellm_budget_manager(300) for _ in range(max(1, args.runs // 2))]
        record_us = p50(lat["rp"])
        bm_us = med(b["p50_us"] for b in bm)
        add("per-record cost (durable, p50)", record_us, "BudgetManager", bm_us, "us", False)
        amortised = 1e6 / med(ours64)
        add("per-record cost (64 conn)", amortised, "BudgetManager", bm_us, "us", False)

        status_ms, bare_ms = budget_status_wall(sock, max(3, args.runs))
        add("`budget status` wall", status_ms, "python -c pass", bare_ms, "ms", False)

        if not args.quick:
            many_budgets(sock)
            many = {k: [] for k in ("allowed", "refused")}
            for _ in range(args.runs):
                many["allowed"].append(socket_latency(sock, CHECK, args.n // 3))
                many["refused"].append(socket_latency(sock, REFUSED, args.n // 3))
            add("check p50, 10k more budgets", p50(many["allowed"]), "check p50 (10 budgets)", p50(adm["check"]),
                "us", False)
            add("check p50 denied, 10k more budgets", p50(many["refused"]), "allowed, 10k budgets",
                p50(many["allowed"]), "us", False)

        postgres_figures(work, args, add, echo_sock, p50(lat["ep"]), p50(adm["reserve"]))
        report_figures(work, args.runs, add, built_only=args.quick)
    finally:
        daemon.stop()
        echo.stop()
        asgi.terminate()
        asgi.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
