"""A daemon that cannot start says why in one line and exits at once; "ready" means every door listens."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_LIMIT_S = 5.0


def refused(d, *extra: str) -> tuple[str, float]:
    """Start `d`, expect it to exit non-zero within START_LIMIT_S; its log and how long it took."""
    started = time.monotonic()
    d.start(wait=False)
    try:
        code = d.proc.wait(START_LIMIT_S)
    except subprocess.TimeoutExpired:
        d.kill()
        raise AssertionError(f"the daemon neither served nor exited:\n{d.log.read_text()}") from None
    took = time.monotonic() - started
    log = d.log.read_text()
    assert code == 1, log
    assert "Traceback" not in log and "budgetd ready" not in log, log
    lines = [line for line in log.splitlines() if line.startswith("budget:")]
    assert len(lines) == 1, log
    return lines[0], took


def test_a_busy_http_port_is_named_with_the_ways_out(make_daemon):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = make_daemon(start=False, http=True)
        d.http_port = port
        line, _ = refused(d)
    assert f"127.0.0.1:{port}" in line and "already in use" in line
    assert "--http" in line and "BUDGET_PORT" in line and "--no-http" in line
    assert not d.socket.exists(), "the socket of a daemon that did not start is gone"


def test_an_unwritable_data_directory(make_daemon, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere but into sysfs
        data = Path("/sys/budgetd-test") / str(os.getpid())
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        data = locked / "data"
    d = make_daemon(start=False)
    d.data_dir = data
    line, _ = refused(d)
    assert "cannot write" in line and "--data-dir" in line


def test_a_data_directory_that_is_a_file(make_daemon, tmp_path):
    (tmp_path / "plain-file").write_text("not a directory")
    d = make_daemon(start=False)
    d.data_dir = tmp_path / "plain-file" / "data"
    line, _ = refused(d)
    assert "Not a directory" in line and "--data-dir" in line


def test_a_foreign_ledger_file(make_daemon):
    d = make_daemon(start=False)
    d.data_dir.mkdir(parents=True)
    d.ledger.write_bytes(os.urandom(8192))
    line, _ = refused(d)
    assert "not a usable budgetd ledger" in line and "Move it aside" in line


def test_a_full_disk_at_start(make_daemon, tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {made.stderr.decode().strip()}")
    try:
        d = make_daemon(start=False)
        d.data_dir = mount / "data"
        line, _ = refused(d)
        assert "the disk holding" in line and "is full" in line and "free some space" in line
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_ready_is_logged_once_every_door_listens(make_daemon):
    d = make_daemon(start=False, http=True)
    d.start(wait=False)
    deadline = time.monotonic() + 30
    while "budgetd ready" not in d.log.read_text():
        assert time.monotonic() < deadline and d.proc.poll() is None, d.log.read_text()
        time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=1):
        pass  # HTTP accepts the moment "ready" is written
    assert d.request({"op": "ping", "id": 1})["ok"]
    assert f"HTTP on http://127.0.0.1:{d.http_port}/api/v1" in d.log.read_text()
    d.wait_ready()


def test_a_bad_test_clock_is_refused(make_daemon):
    d = make_daemon(start=False)
    d.env = lambda: {**type(d).env(d), "BUDGETD_CLOCK_START": "next tuesday"}
    line, _ = refused(d)
    assert "BUDGETD_CLOCK_START" in line
