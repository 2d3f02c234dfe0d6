"""``metrics listening`` names the address actually bound, not the one typed.

``--metrics-listen :9723`` binds loopback and used to be logged as ``:9723``; a port of
0 was logged as 0. The log line now says ``127.0.0.1:9723`` (``[::1]:9723`` for IPv6)
with the kernel's port, for one process and for a supervisor of workers.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.observability.metrics import Metrics, MetricsHTTP, MetricsListenError, host_port
from tests.observability.helpers import http_get
from tests.support import runtime_dir, wait_for_text, wait_until
from tests.support.authbridge_proc import AuthbridgeServer


@pytest.fixture
def loopback_any_port() -> Iterator[MetricsHTTP]:
    http = MetricsHTTP(Metrics(), ":0", lambda: True)
    try:
        yield http
    finally:
        http.server.server_close()


def test_no_host_is_loopback_and_the_real_port(loopback_any_port: MetricsHTTP) -> None:
    host, port = loopback_any_port.address
    assert host == "127.0.0.1"
    assert port != 0
    assert loopback_any_port.bound == f"127.0.0.1:{port}"


def test_ipv6_is_bracketed() -> None:
    assert host_port("::1", 9723) == "[::1]:9723"
    assert host_port("0.0.0.0", 9723) == "0.0.0.0:9723"
    if not socket.has_ipv6:
        return
    try:
        http = MetricsHTTP(Metrics(), "[::1]:0", lambda: True)
    except MetricsListenError:
        return  # no ::1 on this host: the formatting above is what matters
    try:
        assert re.fullmatch(r"\[::1\]:[1-9]\d*", http.bound), http.bound
    finally:
        http.server.server_close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_daemon_logs_the_bound_address(
    tmp_path_factory: pytest.TempPathFactory, workers: str
) -> None:
    base: Path = runtime_dir(tmp_path_factory, f"mbound{workers}")
    users = base / "users.passwd"
    users.write_text("demo:{PLAIN}demopass::::::\n")
    users.chmod(0o644)
    args = ("--metrics-listen", ":0", "--log-format", "json", "--workers", workers)
    with AuthbridgeServer(users, base / "ab.sock", extra_args=args) as server:
        text = wait_for_text(server.stderr_text, '"metrics listening"')
        event = next(
            json.loads(line) for line in text.splitlines() if '"metrics listening"' in line
        )
        match = re.fullmatch(r"127\.0\.0\.1:([1-9]\d*)", event["address"])
        assert match, event
        port = int(match.group(1))
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, what="/healthz ready")
