"""Operating budgetd: online backups while traffic runs, restores, a damaged ledger refused."""

import hashlib
import sqlite3
import threading
import time

import httpx

from budgetd.client import BudgetError, SyncBudgetClient
from tests.conftest import RawConn, run_cli


def test_backup_while_writing_then_restore(make_daemon, tmp_path):
    d = make_daemon(http=True)
    stop = threading.Event()
    acknowledged: list[int] = []

    def traffic() -> None:
        with SyncBudgetClient(d.socket) as c:
            while not stop.is_set():
                acknowledged.append(c.record(component="w", model="gpt-4o", input_tokens=10).record_id)

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        while len(acknowledged) < 200:
            pass
        out = run_cli("backup", str(tmp_path / "b1.db"), socket=d.socket)
        during = len(acknowledged)
    finally:
        stop.set()
        writer.join()
    assert out.returncode == 0, out.stderr
    assert "verified" in out.stdout and (tmp_path / "b1.db").is_file()
    assert not (tmp_path / "b1.db.partial").exists()
    copy = sqlite3.connect(tmp_path / "b1.db")
    ids = [r[0] for r in copy.execute("SELECT record_id FROM usage ORDER BY record_id")]
    copy.close()
    # A consistent snapshot: a prefix of the acknowledged records, no gap, at least what was there before.
    assert ids == list(range(1, len(ids) + 1)) and 200 <= len(ids) <= during + 1

    with SyncBudgetClient(d.socket) as c:
        total = c.status().totals.requests
        assert total == len(acknowledged)
        # Over HTTP the backup is an admin op, and it refuses bad paths with a reason.
    answer = httpx.post(f"{d.url}/api/v1/backup", json={"path": str(tmp_path / "b2.db")})
    assert answer.status_code == 200 and answer.json()["records"] == total
    with RawConn(d.socket) as conn:
        for path, why in (("relative.db", "absolute"), (str(tmp_path / "nodir" / "x.db"), "does not exist"),
                          (str(d.ledger), "data directory")):
            err = conn.call({"op": "backup", "id": 1, "path": path})["error"]
            assert err["code"] == "invalid" and why in err["message"] and err["field"] == "$.path"

    out = run_cli("restore", str(tmp_path / "b1.db"), "--data-dir", str(d.data_dir))
    assert out.returncode == 1 and "stop the daemon" in out.stderr
    d.stop()
    out = run_cli("restore", str(tmp_path / "b1.db"), "--data-dir", str(d.data_dir))
    assert out.returncode == 0, out.stderr
    assert f"restored {len(ids):,} records" in out.stdout and "before-restore" in out.stdout
    assert list(d.data_dir.glob("ledger.db.before-restore-*"))
    d.start()
    with SyncBudgetClient(d.socket) as c:
        assert c.status().totals.requests == len(ids)
        assert c.record(component="w", model="gpt-4o", input_tokens=1).record_id == len(ids) + 1


def test_restore_refuses_what_is_not_a_good_ledger(make_daemon, tmp_path):
    d = make_daemon(start=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"no database here" * 100)
    out = run_cli("restore", str(junk), "--data-dir", str(d.data_dir))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"budget: cannot restore: {junk} is not an SQLite file")
    assert out.stderr.endswith("name a file made by `budget backup` (nothing was changed)\n")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    out = run_cli("restore", str(empty), "--data-dir", str(d.data_dir))
    assert out.returncode == 1 and "is empty" in out.stderr and "ledger never shrinks" not in out.stderr
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    out = run_cli("restore", str(foreign), "--data-dir", str(d.data_dir))
    assert out.returncode == 1 and "did not create" in out.stderr
    out = run_cli("restore", str(tmp_path / "missing.db"), "--data-dir", str(d.data_dir))
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_a_damaged_ledger_is_refused_with_what_to_do(make_daemon):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        for i in range(300):
            c.record(component=f"c{i % 7}", model="gpt-4o", input_tokens=1000 + i, context_id=f"ctx-{i}")
    d.stop()
    data = bytearray(d.ledger.read_bytes())
    page = 4096
    for offset in range(page * 4, page * 8):  # scribble over b-tree pages, headers and all
        data[offset] = 0x5A
    d.ledger.write_bytes(bytes(data))
    before = hashlib.sha256(d.ledger.read_bytes()).hexdigest()
    d.start(wait=False)
    assert d.proc.wait(30) == 1
    log = d.log.read_text()
    assert "is damaged" in log and "budget restore" in log, log
    assert "Traceback" not in log
    assert hashlib.sha256(d.ledger.read_bytes()).hexdigest() == before  # never touched


def test_service_files_are_well_formed():
    import configparser
    import plistlib

    from tests.conftest import ROOT

    plist = plistlib.loads((ROOT / "contrib" / "com.budgetd.daemon.plist").read_bytes())
    assert plist["Label"] == "com.budgetd.daemon" and plist["ProgramArguments"][1] == "daemon"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read_string((ROOT / "contrib" / "budgetd.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].split()[1:3] == ["daemon", "--socket"]
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "1" and service["NoNewPrivileges"] == "yes"


def test_a_full_ledger_refuses_writes_and_recovers_by_itself(make_daemon):
    """At the size cap (standing in for a full disk) writes get `unavailable`, nothing acknowledged is
    lost, and writing resumes without a restart once space is freed (here: idempotency keys expire)."""
    d = make_daemon('[daemon]\nmax_ledger_mb = 0.4\nkeep_idempotency_keys = "3s"\n')
    pid = d.proc.pid
    acknowledged = []
    refusal = None
    refused_in_a_row = 0
    with SyncBudgetClient(d.socket, retries=0) as c:
        def filler(i: int) -> int:
            return c.record(component="filler", model="gpt-4o", input_tokens=i,
                            context_id=f"a-long-context-id-to-fill-pages-{i:08d}").record_id

        started = time.monotonic()
        i = 0
        # Full means full: a row with a fresh (random) idempotency key may still find room in some page,
        # so fill until many in a row are refused.
        while refused_in_a_row < 50 and i < 50_000:
            i += 1
            try:
                acknowledged.append(filler(i))
                refused_in_a_row = 0
            except BudgetError as exc:
                refusal = exc
                refused_in_a_row += 1
        assert refusal is not None and refusal.code == "unavailable" and "full" in refusal.message
        assert refused_in_a_row == 50
        assert c.ping() is not None  # still serving
        deadline = time.monotonic() + 30
        while True:  # the keys of the first writes expire and free their pages
            i += 1
            try:
                after_id = filler(i)
                break
            except BudgetError as exc:
                assert exc.code == "unavailable"
                assert time.monotonic() < deadline, "writes did not resume"
                time.sleep(0.5)
        assert after_id == acknowledged[-1] + 1
        assert time.monotonic() - started > 3  # it took the keys' expiry, not just a smaller row
    assert d.proc.pid == pid and d.proc.poll() is None  # no restart
    db = sqlite3.connect(f"file:{d.ledger}?mode=ro", uri=True)
    ids = {r[0] for r in db.execute("SELECT record_id FROM usage")}
    db.close()
    assert set(acknowledged) <= ids


def test_periodic_backups_keep_the_newest(make_daemon, tmp_path):
    backups = tmp_path / "backups"
    d = make_daemon(f'[backup]\ndir = "{backups}"\nevery = "0.5s"\nkeep = 2\n')
    with SyncBudgetClient(d.socket) as c:
        c.record(component="b", model="gpt-4o", input_tokens=1)
    deadline = time.monotonic() + 60
    while len(list(backups.glob("ledger-*.db"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # a few more rounds: old ones are deleted
    d.stop()  # a backup in flight is cut short: it must leave no partial file behind
    files = sorted(backups.glob("ledger-*.db"))
    assert 1 <= len(files) <= 2 and not list(backups.glob("*.partial")), list(backups.iterdir())
    db = sqlite3.connect(files[-1])
    assert db.execute("SELECT count(*) FROM usage").fetchone()[0] == 1
    db.close()


def test_old_records_are_compacted_and_reports_stay_exact(make_daemon):
    import datetime as dt

    d = make_daemon('[daemon]\nkeep_usage = "60d"\n')
    now = dt.datetime.now(dt.timezone.utc)
    old = now - dt.timedelta(days=90)
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="forever", scope={"component": "*"}, period="total", limit_usd=1000.0, policy="warn")
        for i in range(40):
            c.record(component=f"c{i % 3}", model="gpt-4o", input_tokens=100 + i, cost_usd=0.01 * (i + 1),
                     ts=old + dt.timedelta(minutes=7 * i), context_id=f"ctx{i}")
        last = c.record(component="c0", model="gpt-4o", input_tokens=5, cost_usd=0.5).record_id
        before = {
            "by component": c.report(["component"]).rows,
            "by month": c.report(["model"], bucket="month").rows,
            "totals": c.status().totals,
            "forever": sorted((s.key["component"], s.spent_usd) for s in c.status().budgets if s.budget == "forever"),
        }
    d.stop()
    d.start()  # compaction runs at start
    deadline = time.monotonic() + 20
    while "compacted 40 records" not in d.log.read_text():
        assert time.monotonic() < deadline, d.log.read_text()[-2000:]
        time.sleep(0.1)
    d.stop()
    d.start()  # and the counters are rebuilt from what is left (records plus rollups)
    with SyncBudgetClient(d.socket) as c:
        assert [r.record_id for r in c.usage_list().records] == [last]  # only the recent record is left
        assert c.report(["component"]).rows == before["by component"]
        assert c.report(["model"], bucket="month").rows == before["by month"]
        assert c.status().totals == before["totals"]
        assert sorted((s.key["component"], s.spent_usd) for s in c.status().budgets
                      if s.budget == "forever") == before["forever"]
        assert c.record(component="c1", model="gpt-4o", input_tokens=1).record_id == last + 1  # ids never reused
        try:
            c.report(["context_id"], since=old)
        except BudgetError as exc:
            assert exc.code == "invalid" and exc.field == "$.since" and "compacted" in exc.message
        else:
            raise AssertionError("a report by context over compacted time must say it cannot be exact")
        assert [r.group["context_id"] for r in c.report(["context_id"], since=now - dt.timedelta(days=1)).rows]
