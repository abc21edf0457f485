"""Chaos and soak: `make soak` (minutes), and a short run of each case inside `make test`.

`python -m tests.soak [--seconds 300] [--workers 8] [--kills 10]` prints a summary table:
operations, kills, records verified, holds verified (acknowledged, left open, still there after every
kill), the daemon's largest RSS, violations (must be 0).
"""

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from budgetd.client import BudgetError, SyncBudgetClient
from tests.conftest import ROOT, Daemon, RawConn

HARD_LIMIT = 2_000_000  # tokens per day for component soak-hard
CONFIG = f"""
[[budgets]]
name = "soak-hard"
scope = {{ component = "soak-hard" }}
period = "daily"
limit_tokens = {HARD_LIMIT}
policy = "hard"
"""


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def mixed_workload(tmp: Path, seconds: float, workers: int, kills: int, seed: int = 1) -> dict:
    """Load from many processes while the daemon is SIGKILLed and restarted at random moments; then every
    acknowledged write must be in the ledger exactly once, the hard limit must have held at every sample,
    and the budget's counter must equal the ledger's sum."""
    rng = random.Random(seed)
    d = Daemon(tmp, CONFIG, name="soak")
    d.start()
    outs = [tmp / f"acks-{i}.txt" for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.soak_worker", str(d.socket), str(out), str(seconds),
                               str(i)], env=_env(), cwd=ROOT) for i, out in enumerate(outs)]
    violations: list[str] = []
    samples = 0
    max_rss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal samples, max_rss
        while not stop.is_set():
            try:
                with SyncBudgetClient(d.socket, retries=0, timeout=2) as c:
                    for s in c.status().budgets:
                        if s.budget == "soak-hard":
                            samples += 1
                            if s.spent_tokens + s.reserved_tokens > HARD_LIMIT:
                                violations.append(f"spent {s.spent_tokens} + held {s.reserved_tokens} > limit")
            except (BudgetError, OSError):
                pass
            if d.proc is not None:
                max_rss = max(max_rss, rss_kb(d.proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    done_kills = 0
    kill_times = sorted(rng.uniform(0.1, 0.9) * seconds for _ in range(kills))
    started = time.monotonic()
    for at in kill_times:
        time.sleep(max(0.0, started + at - time.monotonic()))
        d.kill()
        done_kills += 1
        time.sleep(rng.uniform(0.0, 0.3))
        d.start()
    for p in procs:
        p.wait(seconds + 120)
    stop.set()
    sampler.join()
    d.stop()

    lines = [line.split() for out in outs if out.exists() for line in out.read_text().splitlines()]
    acked = [(kind, key) for kind, key in lines if kind in ("record", "commit")]
    held = {key for kind, key in lines if kind == "hold"} - {key for kind, key in lines if kind == "closed"}
    db = sqlite3.connect(f"file:{d.ledger}?mode=ro", uri=True)
    open_holds = {row[0]: row[1] for row in db.execute("SELECT id, tokens FROM holds WHERE component = 'soak-hard'")}
    counts = dict(db.execute("SELECT idempotency_key, count(*) FROM usage WHERE idempotency_key IS NOT NULL "
                             "GROUP BY idempotency_key"))
    operations = db.execute("SELECT count(*) FROM usage").fetchone()[0]
    day_start = int(time.time() // 86400 * 86400 * 1_000_000)
    hard_sum = db.execute(
        "SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0) "
        "FROM usage WHERE component = 'soak-hard' AND ts >= ?", (day_start,)).fetchone()[0]
    db.close()
    missing = [key for _, key in acked if counts.get(key, 0) == 0]
    doubled = [key for key, n in counts.items() if n > 1]
    violations += [f"acknowledged but missing: {k}" for k in missing[:5]]
    violations += [f"recorded twice: {k}" for k in doubled[:5]]
    violations += [f"acknowledged hold lost: {h}" for h in sorted(held - set(open_holds))[:5]]
    d.start()
    with SyncBudgetClient(d.socket) as c:
        state = next(s for s in c.status().budgets if s.budget == "soak-hard")
    d.stop()
    if state.spent_tokens != hard_sum:
        violations.append(f"counter {state.spent_tokens} != ledger sum {hard_sum}")
    if state.reserved_tokens != sum(open_holds.values()):
        violations.append(f"reserved {state.reserved_tokens} != the open holds' {sum(open_holds.values())}")
    if hard_sum + state.reserved_tokens > HARD_LIMIT:
        violations.append(f"hard budget spent {hard_sum} + held {state.reserved_tokens} > {HARD_LIMIT}")
    if hard_sum > HARD_LIMIT:
        violations.append(f"hard budget spent {hard_sum} > {HARD_LIMIT}")
    return {"case": "mixed load + SIGKILL", "operations": operations, "kills": done_kills,
            "records verified": len(acked), "holds verified": len(held), "samples": samples,
            "max RSS MB": round(max_rss / 1024, 1),
            "violations": violations}


def abandoned_connections(tmp: Path, connections: int) -> dict:
    """Connections opened and dropped, half-written frames, subscribers that never read: memory stays
    bounded and the daemon keeps serving."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * connections + 256)), hard))
    d = Daemon(tmp, "", name="conns")
    d.start()
    violations: list[str] = []
    before = rss_kb(d.proc.pid)  # type: ignore[union-attr]
    peak = before
    batch = 500
    for start in range(0, connections, batch):
        socks = []
        for i in range(start, min(connections, start + batch)):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.socket))
            if i % 3 == 0:
                s.sendall(b'{"op": "record", "id": 1, "usage": {"component": "half')  # never finished
            elif i % 3 == 1:
                s.sendall(b'{"op": "subscribe", "id": 1, "topics": ["usage"]}\n')  # never read
            socks.append(s)
        with SyncBudgetClient(d.socket) as c:  # events pile up for the subscribers that do not read
            for _ in range(50):
                c.record(component="noise", model="gpt-4o", input_tokens=1)
        for s in socks:
            s.close()
        peak = max(peak, rss_kb(d.proc.pid))  # type: ignore[union-attr]
    time.sleep(1.0)
    after = rss_kb(d.proc.pid)  # type: ignore[union-attr]
    with RawConn(d.socket) as conn:
        if not conn.call({"op": "ping", "id": 1})["ok"]:
            violations.append("the daemon stopped answering")
    if peak > before + 300 * 1024:
        violations.append(f"RSS grew from {before // 1024} MB to {peak // 1024} MB")
    d.stop()
    return {"case": f"{connections} abandoned connections", "operations": connections, "kills": 0,
            "records verified": 0, "samples": 0, "max RSS MB": round(peak / 1024, 1),
            "RSS before/after MB": f"{before // 1024}/{after // 1024}", "violations": violations}


def hanging_neighbours(tmp: Path, records: int) -> dict:
    """A webhook receiver and a Hermes that accept and never answer, a price feed that is slow: records
    are answered as usual (none waits for them)."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # accepts, never replies
    port = hang.getsockname()[1]
    config = (f'[hermes]\nurl = "http://127.0.0.1:{port}"\n'
              f'[pricing]\nsources = ["litellm_bundled", "litellm"]\nrefresh_interval = "1s"\n'
              f'fetch_timeout = "30s"\n[pricing.urls]\nlitellm = "http://127.0.0.1:{port}/prices.json"\n'
              f'[alerts]\n[[alerts.webhooks]]\nurl = "http://127.0.0.1:{port}/hook"\ntimeout = "30s"\n'
              '[[budgets]]\nname = "tiny"\nperiod = "daily"\nlimit_usd = 0.000001\npolicy = "warn"\n')
    d = Daemon(tmp, config, name="neighbours")
    d.start()
    slowest = 0.0
    violations = []
    with SyncBudgetClient(d.socket) as c:
        for i in range(records):  # every record crosses "tiny": an alert to the hanging webhook each time
            t = time.perf_counter()
            c.record(component=f"n{i % 5}", model="gpt-4o", input_tokens=100)
            slowest = max(slowest, time.perf_counter() - t)
    if slowest > 1.0:
        violations.append(f"a record took {slowest:.2f}s while neighbours hung")
    rss = rss_kb(d.proc.pid)  # type: ignore[union-attr]
    d.stop()
    hang.close()
    return {"case": "hanging webhook, Hermes, feed", "operations": records, "kills": 0,
            "records verified": records, "samples": 0, "max RSS MB": round(rss / 1024, 1),
            "slowest record ms": round(slowest * 1e3, 1), "violations": violations}


def table(rows: list[dict]) -> str:
    headers = ["case", "operations", "kills", "records verified", "holds verified", "max RSS MB", "violations"]
    lines = [" | ".join(headers), " | ".join("---" for _ in headers)]
    for r in rows:
        lines.append(" | ".join(str(len(r["violations"]) if h == "violations" else r.get(h, "")) for h in headers))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make soak")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="budgetd-soak-"))
    rows = [
        mixed_workload(work / "mixed", args.seconds, args.workers, args.kills),
        abandoned_connections(work / "conns", args.connections),
        hanging_neighbours(work / "hang", 2_000),
    ]
    print(table(rows))
    for r in rows:
        for v in r["violations"]:
            print(f"VIOLATION ({r['case']}): {v}")
    print(json.dumps(rows, indent=1, default=str))
    sys.exit(1 if any(r["violations"] for r in rows) else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
