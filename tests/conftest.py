"""Test harness: real daemons in real processes, talked to through their real doors."""

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def anyio_backend():
    return "asyncio"


def pytest_configure(config):
    """The default paths (socket, config, data) point into this run's own directory, so a daemon of
    the machine's own (`make run`) or a second suite running at once is never touched."""
    config.budgetd_home = home = Path(tempfile.mkdtemp(prefix="budgetd-tests-"))
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        os.environ[name] = str(home / name.lower())


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "budgetd_home", ""), ignore_errors=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_") and k != "BUDGET_PORT"}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Daemon:
    """A budgetd subprocess with its own socket, data dir and config."""

    def __init__(self, tmp: Path, config: str = "", name: str = "d", http: bool | str = False,
                 clock: str | dt.datetime | None = None) -> None:
        """`http`: False = --no-http, True = HTTP on a free loopback port, "config" = as the config says.
        `clock`: the instant the daemon's wall clock starts at (each start), through its clock seam."""
        self.http_mode = http
        self.clock = None if clock is None else (
            dt.datetime.fromisoformat(clock.replace("Z", "+00:00")) if isinstance(clock, str) else clock)
        self._origin: float | None = None
        self.http_port = free_port() if http is True else None
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "budgetd.sock"
        self.data_dir = self.dir / "data"
        self.config_file = self.dir / "budgetd.toml"
        # Offline by default: only the bundled source, read from the fixture file.
        base = f'[pricing]\nbundled_file = "{FIXTURES / "litellm_prices.json"}"\n'
        if "sources =" not in config:
            base += 'sources = ["litellm_bundled"]\n'
        if "[pricing]" in config:
            config = config.replace("[pricing]\n", base, 1)
        else:
            config = base + config
        self.config_file.write_text(config)
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None

    @property
    def ledger(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def fleet_dsn(self) -> str | None:
        """The PostgreSQL database the ledger is in, when the config names one."""
        for line in self.config_file.read_text().splitlines():
            if line.startswith("dsn = "):
                return json.loads(line.split("=", 1)[1])
        return None

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of `sql` (with `?` parameters) read from the ledger itself, whichever database it is in."""
        dsn = self.fleet_dsn
        if dsn is None:
            import sqlite3

            db = sqlite3.connect(self.ledger)
            try:
                return [tuple(r) for r in db.execute(sql, args)]
            finally:
                db.close()
        import asyncio

        import asyncpg

        numbered, n = "", 0
        for part in sql.split("?")[:-1]:
            n += 1
            numbered += f"{part}${n}"
        numbered += sql.split("?")[-1]

        async def fetch() -> list[tuple]:
            conn = await asyncpg.connect(dsn)
            try:
                return [tuple(int(v) if type(v).__name__ == "Decimal" else v for v in r)
                        for r in await conn.fetch(numbered, *args)]
            finally:
                await conn.close()

        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, even under an async test
            return pool.submit(asyncio.run, fetch()).result()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        if self.http_mode == "config":
            http = []
        else:
            http = ["--http", f"127.0.0.1:{self.http_port}"] if self.http_port else ["--no-http"]
        return [sys.executable, "-m", "budgetd", "daemon", "--config", str(self.config_file),
                "--socket", str(self.socket), "--data-dir", str(self.data_dir), *http]

    def env(self) -> dict[str, str]:
        env = _env()
        if self.clock is not None:
            env["BUDGETD_CLOCK_START"] = self.now().isoformat()
        return env

    def now(self) -> dt.datetime:
        """The daemon's wall clock as this process sees it: `clock` at the first start, running on from there
        across restarts, like a real machine's. Once the daemon answers it is anchored to the daemon's own
        `now`, so it may lag the daemon by one round trip but is never ahead of it (the daemon's clock starts
        when its process has imported, seconds after the spawn on a loaded machine)."""
        if self.clock is None:
            return dt.datetime.now(dt.timezone.utc)
        if self._origin is None:
            self._origin = time.monotonic()
        return self.clock + dt.timedelta(seconds=time.monotonic() - self._origin)

    def start(self, wait: bool = True) -> "Daemon":
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, env=self.env())
        if wait:
            try:
                self.wait_ready()
            except BaseException:  # a daemon that never became ready is not left running
                self.proc.kill()
                self.proc.wait(30)
                raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if self.request({"op": "ping", "id": 0})["ok"] and self._http_up():
                    self._anchor_clock()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready in {timeout}s:\n{self.log.read_text()}")

    def _anchor_clock(self) -> None:
        if self.clock is None:
            return
        answer = self.request({"op": "status", "id": 0})
        self.clock = dt.datetime.fromisoformat(answer["result"]["daemon"]["now"].replace("Z", "+00:00"))
        self._origin = time.monotonic()

    def _http_up(self) -> bool:
        if self.http_port is None:
            return True
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.http_port)) == 0

    def request(self, obj: dict) -> dict:
        with RawConn(self.socket) as conn:
            conn.send(obj)
            return conn.recv()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log_file.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class RawConn:
    """A blocking Unix-socket connection speaking raw lines, for protocol-level tests."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, obj: dict | bytes) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"
        self.sock.sendall(data)

    def recv(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj: dict) -> dict:
        self.send(obj)
        return self.recv()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_generate_tests(metafunc):
    """A test marked `both_ledgers` runs twice: on the SQLite ledger, and on a PostgreSQL one (`fleet.dsn`)."""
    if metafunc.definition.get_closest_marker("both_ledgers") and "ledger_backend" in metafunc.fixturenames:
        metafunc.parametrize("ledger_backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def ledger_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def make_daemon(tmp_path, request, ledger_backend):
    started: list[Daemon] = []

    def make(config: str = "", name: str | None = None, start: bool = True, http: bool | str = False,
             clock: str | dt.datetime | None = None) -> Daemon:
        if ledger_backend == "postgres" and "[fleet]" not in config:
            import secrets

            dsn = request.getfixturevalue("postgres").create_database(f"both_{secrets.token_hex(6)}")
            config += f'\n[fleet]\ndsn = "{dsn}"\n'
        d = Daemon(tmp_path, config, name or f"d{len(started)}", http=http, clock=clock)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    """One daemon for a module of read-mostly tests."""
    d = Daemon(tmp_path_factory.mktemp("shared"))
    d.start()
    yield d
    if d.proc.poll() is None:
        d.stop()


def run_cli(*args: str, socket: Path | None = None, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "budgetd", *args]
    if socket is not None:
        cmd += ["--socket", str(socket)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**_env(), **(env or {})})


@pytest.fixture
def feeds():
    """Every price feed served on 127.0.0.1 from the fixtures (tests/feeds.py)."""
    from feeds import FeedServer

    with FeedServer() as server:
        yield server


@pytest.fixture
def priced(make_daemon, feeds):
    """A daemon on those feeds, refreshed once from all of them."""
    from budgetd.client import SyncBudgetClient

    d = make_daemon(feeds.config())
    with SyncBudgetClient(d.socket) as c:
        first = c.prices_refresh(timeout=60)
    assert {s.source for s in first.sources if s.fetched and not s.error} >= {"litellm", "llm_prices", "openrouter"}
    return d



@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this test process's own (tests/postgres.py), for the fleet's tests."""
    from postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def fleet_dsn(postgres) -> str:
    """A new, empty database on that server."""
    import secrets

    return postgres.create_database(f"fleet_{secrets.token_hex(6)}")
