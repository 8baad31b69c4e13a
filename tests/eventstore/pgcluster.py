"""A throwaway PostgreSQL cluster for the tests: `initdb` into a temp folder, started on a free
loopback port, stopped and removed at the end of the session.

Real over fake: the PostgreSQL recorder is tested against the server it runs on in a fleet.
initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (the
Debian packages create it), in a folder that user owns. Where no binaries are installed the
tests that need them are skipped with that reason (`.ci/test-env`, in the README's test command, installs them on a fresh machine).
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="selfheal-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: dict = {}
        if os.geteuid() == 0:  # initdb refuses root: the cluster runs as `postgres`
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            # the process switches user itself: runuser/su live in sbin, which a CI PATH may lack
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **self._as)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        # sockets in the cluster's folder (not /var/run/postgresql, which may not exist);
        # fsync stays on: the benchmarks compare durable commits
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster():
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries are absent (/usr/lib/postgresql/*/bin/initdb): .ci/test-env installs them")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """The URL of a fresh database on the session's cluster."""
    return pg_cluster.new_database()
