"""A real PostgreSQL server for the tests: initdb into a temporary folder as user postgres, pg_ctl on a free
loopback port, one database per test, stopped by PID."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port

SERVER_USER = "postgres"
APP_USER = "inspector"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.1


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing_reason() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "PostgreSQL is not installed (apt-get install postgresql; tools/bootstrap.sh --test does)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as user postgres needs root (CI runs as root)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    return None


@dataclass
class PostgresServer:
    """A running server in ``folder``; :meth:`database` makes a fresh database for one test."""

    folder: Path
    port: int
    password: str = "inspector-test-password"
    pid: int | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        """The cluster's data folder."""
        return self.folder / "data"

    def _as_server_user(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", SERVER_USER, "--", *args], capture_output=True, text=True, check=check,
            timeout=START_TIMEOUT_S, cwd="/",
        )  # fmt: skip

    def init(self) -> None:
        """initdb, with password (scram) authentication over TCP and trust on the private socket."""
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, SERVER_USER)
        initdb = _binary("initdb")
        assert initdb is not None
        self._as_server_user(initdb, "-D", str(self.data), "-U", SERVER_USER, "--auth-local=trust",
                             "--auth-host=scram-sha-256", "--no-sync")  # fmt: skip

    def start(self) -> None:
        """pg_ctl start on 127.0.0.1:port; waits until it accepts connections, records its PID."""
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_server_user(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                             "-w", "-t", str(int(START_TIMEOUT_S)), "start")  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def stop(self) -> None:
        """Stop the server by its PID (fast shutdown: SIGINT) and wait until it is gone."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(POLL_S)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; returns its output."""
        psql = _binary("psql")
        assert psql is not None
        done = self._as_server_user(psql, "-h", str(self.folder), "-p", str(self.port), "-d", database,
                                    "-v", "ON_ERROR_STOP=1", "-Atc", sql)  # fmt: skip
        return done.stdout

    def create_role(self) -> None:
        """The application's login role (password authentication)."""
        self.psql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{self.password}'")

    def database(self) -> str:
        """A fresh database owned by the application role; returns its SQLAlchemy URL (no password)."""
        name = f"parts_{len(self.databases) + 1}"
        self.psql(f"CREATE DATABASE {name} OWNER {APP_USER}")
        self.databases.append(name)
        return f"postgresql+psycopg://{APP_USER}@127.0.0.1:{self.port}/{name}"

    def password_file(self, folder: Path) -> Path:
        """The password in a private file, as ``[parts] password_file`` reads it."""
        path = folder / "db-password"
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path


def running_server(folder: Path) -> Iterator[PostgresServer]:
    """A started server for a fixture; stopped by PID at the end."""
    server = PostgresServer(folder, free_port())
    server.init()
    server.start()
    try:
        server.create_role()
        yield server
    finally:
        server.stop()
