"""Real ``authbridge serve`` processes with metrics and JSON logs, for the tests here.

Two flavours, each started once per module:

- ``compat``: ``--dovecot-compat`` (Dovecot 2.3 behaviour), no failure delay, debug
  log level so the redacted protocol trace is on;
- ``strict``: authbridge's own defaults (secured-only plaintext, penalty, internal
  failures close the connection) plus the auth cache, from a TOML config.

Everything lives in a 0755 directory under /tmp so Exim's unprivileged children can
reach the socket (pytest's own base directory is 0700).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.observability.helpers import (
    LogCursor,
    Scrape,
    http_get,
    scrape,
    users_file_text,
    wait_for,
)
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer


@dataclass
class Observed:
    """A running daemon plus where to scrape it and read its log."""

    server: AuthbridgeServer
    metrics_port: int
    users_file: Path
    base: Path
    workers: int = 1

    @property
    def socket_path(self) -> Path:
        return self.server.socket_path

    def scrape(self) -> Scrape:
        return scrape(self.metrics_port)

    def log(self) -> str:
        return self.server.stderr_text()

    def cursor(self) -> LogCursor:
        cursor = LogCursor(self.server.stderr_text)
        cursor.mark()
        return cursor


@pytest.fixture(scope="session")
def obs_dir() -> Iterator[Path]:
    base = runtime_dir(None, "authbridge-obs")
    yield base
    if not os.environ.get("AUTHBRIDGE_KEEP_OBS_DIR"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def users_text() -> str:
    require_binary("doveadm")
    return users_file_text()


def _start(base: Path, users_text: str, args: list[str], workers: int = 1) -> Observed:
    users = base / "users.passwd"
    users.write_text(users_text)
    users.chmod(0o644)
    port = free_tcp_port()
    server = AuthbridgeServer(
        users,
        base / "auth-client",
        extra_args=[*args, "--metrics-listen", f"127.0.0.1:{port}"],
        stderr_path=base / "authbridge.log",
    )
    server.start()
    # The socket accepts as soon as it is bound, before the daemon serves; /healthz
    # says 200 once listeners are being served and stores are loaded.
    if not wait_for(lambda: _healthy(port), timeout=20):
        server.kill()
        raise AssertionError(f"/healthz never became 200\n{server.stderr_text()}")
    return Observed(server, port, users, base, workers)


def _healthy(port: int) -> bool:
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def compat(obs_dir: Path, users_text: str, request: pytest.FixtureRequest) -> Iterator[Observed]:
    """Run twice: as one process, and as a supervisor with two workers whose metrics it
    sums (every count a test expects must come out the same)."""
    workers: int = request.param
    base = runtime_dir(obs_dir, f"compat-{workers}")
    observed = _start(
        base,
        users_text,
        [
            "--workers",
            str(workers),
            "--dovecot-compat",
            "--failure-delay",
            "0",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        workers,
    )
    try:
        yield observed
    finally:
        observed.server.stop()


STRICT_TOML = """\
[policy]
failure_delay = 0

[penalty]
steps = [1.0]
forget_after = 60

[cache]
enabled = true

[log]
format = "json"
"""


@pytest.fixture(scope="module")
def strict(obs_dir: Path, users_text: str) -> Iterator[Observed]:
    base = runtime_dir(obs_dir, "strict")
    config = base / "authbridge.toml"
    config.write_text(STRICT_TOML)
    observed = _start(base, users_text, ["--config", str(config)])
    try:
        yield observed
    finally:
        observed.server.stop()
