"""A throwaway PostgreSQL cluster from Debian's binaries, for the tests of the shared ledger.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user
that Debian's package creates. The cluster lives in a temporary directory, listens on a free
loopback port, trusts local connections, and is deleted when stopped.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg

from router_service.embedded_broker import free_port

ALLOW_MISSING = "BUDGET_ROUTER_TEST_ALLOW_NO_POSTGRES"
SERVER_USER = "postgres"


def postgres_bin(name: str) -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<version>/bin/<name>``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1] if found else None


class PostgresCluster:
    """One PostgreSQL server; ``new_database()`` hands each test an empty database."""

    def __init__(self) -> None:
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError(
                "PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/initdb): "
                "`make test` installs Debian's postgresql package when run as root"
            )
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="budget-router-pg-"))
        self.port = free_port()
        self._names = itertools.count()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.user = SERVER_USER if self._as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *command: str | Path) -> None:
        argv = [str(part) for part in command]
        if self._as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresCluster:
        data = self.root / "data"
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        try:
            self._run(self._initdb, "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8")
            self._run(self._pg_ctl, "-D", data, "-l", self.root / "server.log", "-o", options,
                      "-w", "-t", "60", "start")  # fmt: skip
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URI."""
        name = f"ledger_{next(self._names)}"
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.uri(name)

    def stop(self) -> None:
        try:
            self._run(self._pg_ctl, "-D", self.root / "data", "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    """``python -m tests.postgres_cluster``: a throwaway server for benchmarks; Ctrl-C stops it."""
    cluster = PostgresCluster().start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        print(cluster.new_database(), flush=True)
        stop.wait()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
