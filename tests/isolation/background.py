"""A real ``authbridge serve`` process with faults injected, and what the tests check.

The layers outside the connection path (metrics HTTP, reloads, the SQL pool, the
supervisor) are tested on the daemon as deployed: a subprocess on a UNIX socket, with
``/metrics`` on loopback. Faults come from ``inject/sitecustomize.py`` (named in
``AUTHBRIDGE_FAULTS``); each raises an exception whose message holds
:data:`SECRET`. After a fault a test proves three things: a real authentication over
the socket still gets OK, ``authbridge_internal_errors_total{where}`` moved, and the
log has the contained error once, with type and place and without the secret.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.observability.helpers import http_get, parse_exposition
from tests.policy.authclient import AuthClient
from tests.support import free_tcp_port, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

INJECT_DIR = Path(__file__).resolve().with_name("inject")
#: What every injected fault's message carries (see inject/sitecustomize.py).
SECRET = "hunter2-never-logged"

USER, PASSWORD = "alice@example.org", "wonderland"
USERS = f"{USER}:{{PLAIN}}{PASSWORD}\nbob@example.org:{{PLAIN}}builder\n"


class FaultyDaemon(AuthbridgeServer):
    """``authbridge serve`` with ``faults`` installed and metrics on a free port.

    With ``config`` (TOML text) the stores come from that file, not ``--passwd-file``.
    """

    def __init__(
        self,
        directory: Path,
        faults: Sequence[str],
        *,
        config: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users_path = directory / "users.passwd"
        self.users_path.write_text(USERS)
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = directory / "authbridge.toml"
            self.config_path.write_text(config)
        self.metrics_port = free_tcp_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(INJECT_DIR), env.get("PYTHONPATH")) if p
        )
        env["AUTHBRIDGE_FAULTS"] = ",".join(faults)
        super().__init__(
            self.users_path,
            directory / "auth-client",
            mechanisms=("plain", "login"),
            extra_args=(
                "--failure-delay",
                "0",
                "--log-format",
                "json",
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
                *extra_args,
            ),
            env=env,
        )

    def command(self) -> list[str]:
        if self.config_path is None:
            return super().command()
        return [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--config",
            str(self.config_path),
            "--socket",
            str(self.socket_path),
            "--socket-mode",
            "0666",
            *self.extra_args,
        ]

    def start(self) -> FaultyDaemon:
        """Up means the socket accepts and the metrics server answers (bound just after).

        ``/healthz`` is asked, not ``/metrics``: a scrape would meet a test's fault.
        """
        super().start()
        wait_for_value(self._health, lambda status: status == 200, what="/healthz")
        return self

    def _health(self) -> int | None:
        try:
            return http_get(self.metrics_port, "/healthz")[0]
        except OSError:
            return None

    # ------------------------------------------------------------------ checks

    def login(self, user: str = USER, password: str = PASSWORD) -> str:
        """One PLAIN login on a new connection: "OK", "FAIL" or "CLOSED"."""
        with AuthClient(self.socket_path, timeout=10) as client:
            client.auth_plain(1, user, password, "secured")
            try:
                return client.reply(1).split("\t")[0]
            except AssertionError:  # ConnectionClosed: an internal failure hangs up
                return "CLOSED"

    def scrape(self) -> tuple[int, str]:
        return http_get(self.metrics_port, "/metrics")

    def internal_errors(self, where: str) -> float:
        status, text = self.scrape()
        assert status == 200, text
        return parse_exposition(text).value("authbridge_internal_errors_total", where=where)

    def wait_internal_errors(self, where: str, at_least: float) -> float:
        return wait_for_value(
            lambda: self.internal_errors(where),
            lambda value: value >= at_least,
            what=f"authbridge_internal_errors_total{{where={where!r}}} >= {at_least}",
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def matching(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_event(self, event: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for_value(
            lambda: self.matching(event),
            lambda found: len(found) >= count,
            what=f"{count} log line(s) {event!r}",
        )


def assert_contained_once(daemon: FaultyDaemon, event: str, where: str) -> dict[str, Any]:
    """The contained-error line is there exactly once, names type and place, no secret."""
    found = daemon.wait_event(event)
    assert len(found) == 1, found
    line = found[0]
    assert line["where"] == where
    assert line["error"] == "InjectedFault"
    assert ":" in line["location"] and line["location"].split(":")[-1].isdigit(), line
    assert SECRET not in daemon.stderr_text()
    assert "Traceback" not in daemon.stderr_text()
    return line
