"""What the observability tests share: users, scraping, log parsing, real clients.

Counters are compared as deltas between two scrapes of the live ``/metrics`` of a real
``authbridge serve``, so a test sees exactly what its own authentications moved.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support import require_binary

#: The client address every test passes as ``rip`` (TEST-NET-2, never routed).
RIP = "198.51.100.7"

DOVEADM_AUTH_FAILED = 77


@dataclass(frozen=True)
class User:
    name: str
    password: str
    scheme: str


#: Distinctive passwords, so that finding one (or its base64) in a log is unambiguous.
USERS = {
    u.name: u
    for u in (
        User("alice", "Alice-0bs-Pa55word", "PLAIN"),
        User("bob", "B0b-0bs-secret-phrase", "SHA512-CRYPT"),
        User("carol", "Car0l-0bs-cram-key", "CRAM-MD5"),
    )
}
#: A user whose lookup is an internal failure (an extra field names an unknown variable;
#: a malformed hash would be a plain failure since issue #17).
BROKEN_USER = "broken"


def hash_password(scheme: str, password: str) -> str:
    if scheme == "PLAIN":
        return "{PLAIN}" + password
    proc = subprocess.run(
        [require_binary("doveadm"), "pw", "-s", scheme, "-p", password],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout.strip()


def users_file_text() -> str:
    lines = [f"{u.name}:{hash_password(u.scheme, u.password)}::::::\n" for u in USERS.values()]
    return "".join(lines) + f"{BROKEN_USER}:{{PLAIN}}x::::::quota=%{{nosuchvariable}}\n"


# ---------------------------------------------------------------------- /metrics

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One parsed scrape: sample (name, labels) -> value, plus family metadata."""

    text: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def parse_exposition(text: str) -> Scrape:
    scrape = Scrape(text)
    for family in text_string_to_metric_families(text):
        scrape.families[family.name] = family.type
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            scrape.samples[(sample.name, labels)] = sample.value
    return scrape


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Scrape:
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return parse_exposition(text)


def deltas(before: Scrape, after: Scrape, name: str) -> dict[Labels, float]:
    """The series of ``name`` that changed between two scrapes, by how much."""
    out: dict[Labels, float] = {}
    for labels in set(before.series(name)) | set(after.series(name)):
        change = after.series(name).get(labels, 0.0) - before.series(name).get(labels, 0.0)
        if change:
            out[labels] = change
    return out


def by_mech_result(changes: dict[Labels, float]) -> dict[tuple[str, str], float]:
    return {(dict(k)["mechanism"], dict(k)["result"]): v for k, v in changes.items()}


def settled(
    scrape_now: Callable[[], Scrape],
    before: Scrape,
    name: str,
    total: float,
    timeout: float = 10.0,
) -> Scrape:
    """The first scrape in which the series of ``name`` moved by ``total`` in all since
    ``before``; after ``timeout`` seconds, the last scrape taken.

    The daemon counts a request just after its reply has gone out (after_batch), and
    /metrics is served by another thread, so a scrape taken the moment a client has
    its reply can miss it. Waiting for the total (not the split) lets the test's own
    assertions report a wrong split, or a total that never arrived, with the values.
    """
    deadline = time.monotonic() + timeout
    while True:
        after = scrape_now()
        if sum(deltas(before, after, name).values()) == total or time.monotonic() >= deadline:
            return after
        time.sleep(0.02)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ---------------------------------------------------------------------- logs


def json_events(text: str) -> list[dict[str, Any]]:
    """Every JSON line of a daemon log (non-JSON lines would be a bug: none expected)."""
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip():
            events.append(json.loads(line))
    return events


class LogCursor:
    """The part of a growing log written after :meth:`mark`."""

    def __init__(self, read: Callable[[], str]) -> None:
        self._read = read
        self._offset = 0

    def mark(self) -> None:
        self._offset = len(self._read())

    def text(self) -> str:
        return self._read()[self._offset :]

    def events(self) -> list[dict[str, Any]]:
        return json_events(self.text())

    def events_once(self, event: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """All events since :meth:`mark`, read once ``count`` of kind ``event`` are there.

        The authentication event is written just after the reply (after_batch), so a
        client can have its reply before the line is in the log. After ``timeout``
        seconds the events so far are returned for the test's assertions to report.
        """
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            seen = sum(1 for e in events if e.get("event") == event)
            if seen >= count or time.monotonic() >= deadline:
                return events
            time.sleep(0.02)


# ---------------------------------------------------------------------- clients


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def base64_forms(secret: str) -> set[str]:
    """Strings that appear in any base64 text that encodes ``secret`` somewhere inside.

    Whatever the bytes before it, the password starts at one of three offsets within
    a base64 quantum; for each, the characters that depend on the password alone are
    a fixed string. Finding none of them proves the password is not there in base64.
    """
    raw = secret.encode()
    forms: set[str] = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode().rstrip("=")
        start = (pad * 4 + 2) // 3  # first character not touched by the padding bytes
        end = (len(raw) + pad) * 8 // 6  # end of the last character inside the secret
        forms.add(encoded[start:end])
    return {f for f in forms if len(f) >= 8}


class RawAuthClient:
    """A bare auth-client connection, for what no real client does on purpose.

    Used only to provoke outcomes (a client vanishing mid-exchange, malformed input)
    that real MTAs produce on faults; every counted outcome is the daemon's own.
    """

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(socket_path))
        self._buffer = b""
        self.handshake = list(self._until("DONE"))
        self.send("VERSION\t1\t2", "CPID\t4242")

    def _lines(self) -> Iterator[str]:
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line.decode()
            data = self.sock.recv(65536)
            if not data:
                return
            self._buffer += data

    def _until(self, last: str) -> Iterator[str]:
        for line in self._lines():
            yield line
            if line == last:
                return

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def reply(self) -> str | None:
        """The next line from the server, or None once it closed the connection."""
        return next(self._lines(), None)

    def close(self) -> None:
        self.sock.close()


#: The closed set of ``result`` labels the issue asks for.
RESULTS_SET = {"ok", "fail", "tempfail", "aborted", "protocol_error", "rejected_policy"}
