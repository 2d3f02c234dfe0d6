"""A throwaway PostgreSQL cluster for tests: initdb + postgres on a private UNIX socket.

Runs the Debian postgresql binaries as the ``postgres`` user in its own directory,
listening on no TCP address at all (``listen_addresses=''``), only on a socket in a
fresh directory; ``log_statement=all`` records every statement as the server saw it.
Stopped by the postmaster's PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.support import free_tcp_port, require_binary

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_binary(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    return require_binary(name)  # skips, or fails when CI=true


class PgCluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sockdir = base / "sock"
        self.log = base / "postgres.log"
        self.port = free_tcp_port()  # only names the socket file; no TCP listener
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            require_binary("postgres-account-missing")  # skips, or fails when CI=true
            raise
        self._uid, self._gid = account.pw_uid, account.pw_gid

    def _as_postgres(self) -> dict[str, Any]:
        return {"user": self._uid, "group": self._gid, "extra_groups": []}

    def init(self) -> PgCluster:
        initdb = pg_binary("initdb")
        for path in (self.base, self.sockdir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self._uid, self._gid)
        self.base.chmod(0o755)
        self.sockdir.chmod(0o755)
        subprocess.run(
            [
                initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            cwd=self.base,
            **self._as_postgres(),
        )
        return self

    def start(self) -> PgCluster:
        postgres = pg_binary("postgres")
        with open(self.log, "ab") as log:
            os.chown(self.log, self._uid, self._gid)
            self.proc = subprocess.Popen(
                [
                    postgres,
                    "-D",
                    str(self.data),
                    "-k",
                    str(self.sockdir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "log_statement=all",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "max_connections=60",
                    "-c",
                    "logging_collector=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.base,
                start_new_session=True,
                **self._as_postgres(),
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.dsn("postgres", "postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT = PostgreSQL's fast shutdown: every session is cut off at once."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def dsn(self, user: str = "authbridge", dbname: str = "mail") -> str:
        return f"host={self.sockdir} port={self.port} dbname={dbname} user={user}"

    def admin(self, dbname: str = "mail") -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn("postgres", dbname), autocommit=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
