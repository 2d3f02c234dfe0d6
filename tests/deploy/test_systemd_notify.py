"""authbridge.daemon.systemd.Notifier against a real AF_UNIX datagram socket standing in for
systemd."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.daemon.systemd import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound SOCK_DGRAM socket playing the service manager's notification socket."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield path, sock


def _datagram(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_disabled_without_notify_socket() -> None:
    notifier = Notifier({})
    assert notifier.enabled is False
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "relative/path", "@", "vsock:2:1"])
def test_unusable_address_disables(value: str) -> None:
    assert Notifier({"NOTIFY_SOCKET": value}).enabled is False


def test_ready_with_status_is_one_datagram(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.notify("READY=1", "STATUS=serving") is True
    assert _datagram(sock) == ["READY=1", "STATUS=serving"]
    assert notifier.ready("up") is True
    assert _datagram(sock) == ["READY=1", "STATUS=up"]


def test_reload_stop_and_watchdog_messages(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = _datagram(sock)
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert before <= int(fields[1].split("=", 1)[1]) <= after
    notifier.stopping()
    assert _datagram(sock) == ["STOPPING=1"]
    notifier.watchdog()
    assert _datagram(sock) == ["WATCHDOG=1"]


def test_abstract_namespace_address() -> None:
    name = f"authbridge-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1") is True
        assert _datagram(sock) == ["READY=1"]


def test_send_error_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.enabled
    assert notifier.notify("READY=1") is False


def test_full_manager_queue_does_not_block(manager: tuple[str, socket.socket]) -> None:
    path, _sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    started = time.monotonic()
    results = [notifier.notify("WATCHDOG=1") for _ in range(2000)]
    assert time.monotonic() - started < 5
    assert results[0] is True
    assert False in results  # the receive queue filled up and we were told, not blocked


def test_reads_os_environ_by_default(
    manager: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().notify("READY=1")
    assert _datagram(sock) == ["READY=1"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: (str(os.getpid()) if v == "<self>" else v) for k, v in env.items()}
    env["NOTIFY_SOCKET"] = "/run/systemd/notify"
    assert Notifier(env).watchdog_interval() == expected


def test_repr_does_not_leak_environment() -> None:
    assert repr(Notifier({"NOTIFY_SOCKET": "/x"})) == "Notifier(enabled=True)"
