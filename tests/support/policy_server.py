"""A small, real auth-policy server (what weakforced and Nauthilus implement) for tests.

It speaks the protocol Dovecot documents for ``auth_policy_server_url``: a POST with a
JSON body to ``...?command=allow`` is answered ``{"status": N, "msg": "..."}``, one to
``...?command=report`` with an empty object. It listens on 127.0.0.1 (a free port) in
a thread of the test process, records every request, and is driven by the test: what
the next allow checks get (allow, reject, delay, an HTTP error, garbage, or no answer
until released).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Answer:
    """How to answer one allow check."""

    status: int = 0
    msg: str = ""
    #: Another HTTP status than 200 (its body is still the JSON answer).
    http: int = 200
    #: A body sent instead of the JSON answer.
    raw: bytes | None = None
    #: Hold the request until :meth:`PolicyServer.release` (or the server stops).
    hang: bool = False

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps({"status": self.status, "msg": self.msg}).encode()


ALLOW = Answer()


def reject(msg: str = "") -> Answer:
    return Answer(status=-1, msg=msg)


def delay(seconds: int) -> Answer:
    return Answer(status=seconds)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    path: str
    command: str
    headers: dict[str, str]
    raw: bytes
    received: float = field(default_factory=time.monotonic)

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    @property
    def keys(self) -> list[str]:
        """The body's keys in the order they were sent."""
        return list(self.body)


class PolicyServer:
    """Use as a context manager; ``url`` is what ``[auth_policy] server_url`` takes."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.default = ALLOW
        #: Reports wait for :meth:`release` too (a slow policy server at shutdown).
        self.hang_reports = False
        self._queued: collections.deque[Answer] = collections.deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ driving

    def answer(self, *answers: Answer, default: Answer | None = None) -> None:
        """The next allow checks get ``answers`` in order, then ``default`` (if given)."""
        with self._lock:
            self._queued.extend(answers)
            if default is not None:
                self.default = default
            self._released.clear()

    def release(self) -> None:
        """Let hanging requests go (they answer allow)."""
        self._released.set()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def of(self, command: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.command == command]

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> PolicyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                query = parse_qs(urlsplit(self.path).query)
                command = (query.get("command") or [""])[0]
                record = Recorded(self.path, command, dict(self.headers.items()), raw)
                with server._lock:
                    server.requests.append(record)
                    answer = ALLOW
                    if command == "allow":
                        answer = server._queued.popleft() if server._queued else server.default
                if command != "allow":
                    if server.hang_reports:
                        server._released.wait(30)
                    self._send(200, b"{}")
                    return
                if answer.hang:
                    server._released.wait(30)
                    self._send(200, ALLOW.body())
                    return
                self._send(answer.http, answer.body())

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client that closed its keep-alive connection is not an error."""

        httpd = Server(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running() -> Iterator[PolicyServer]:
    """For fixtures: ``yield from running()``."""
    with PolicyServer() as server:
        yield server
