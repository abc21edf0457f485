"""A throwaway PostgreSQL server for the suite, started from the server binaries on this machine.

`initdb` makes a cluster in a directory of its own, the server listens on a free loopback port (and a
socket in that directory), trusts local connections, and is stopped and deleted at the end. PostgreSQL
refuses to run as root: when the suite runs as root the server runs as the `postgres` user.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_binaries() -> Path:
    """The directory of the newest PostgreSQL server binaries here (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("no PostgreSQL server binaries (looked in /usr/lib/postgresql/*/bin and on PATH): "
                       "install the postgresql package (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1:`port`; `dsn(name)` for a database made by `create_database`."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="budgetd-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self._as = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = user

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=True, capture_output=True, text=True, user=self._as and self._as.pw_uid,
                              group=self._as and self._as.pw_gid, extra_groups=[] if self._as else None, **kw)

    def start(self) -> "PostgresServer":
        if not self.data.exists():
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "budgetd", "--auth=trust",
                       "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, user=self._as and self._as.pw_uid,
            group=self._as and self._as.pw_gid, extra_groups=[] if self._as else None)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            if self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready in 60 s:\n{self.log()}")

    def _ready(self) -> bool:
        done = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "budgetd"],
                              capture_output=True)
        return done.returncode == 0

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run([str(self.bin / "psql"),
                          "-h", "127.0.0.1", "-p", str(self.port), "-U", "budgetd", "-d", database, "-At",
                          "-v", "ON_ERROR_STOP=1", "-c", sql]).stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def dsn(self, name: str) -> str:
        return f"postgresql://budgetd@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: sessions are cut; `immediate`: as a crash would)."""
        if self.proc is not None and self.proc.poll() is None:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
            self.proc.wait(60)
        self.proc = None

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
