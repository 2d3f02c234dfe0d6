"""A real AuthServer on a real UNIX socket, in-process, wired like ``authbridge serve``.

Connections are spawned by ``trio.serve_listeners`` into one shared handler nursery,
exactly as the daemon does: an exception that escaped one connection would end the
listener and every other connection here too, which is what these tests must rule out.
Clients talk to it with :class:`Client` over the socket; everything waits for a
condition (a reply line, end of file) with a deadline, never for a fixed time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings
from authbridge.config import Config, PolicyConfig, ServerConfig
from authbridge.daemon.listeners import unix_listener
from authbridge.daemon.server import AuthServer
from authbridge.observability.metrics import INTERNAL_ERROR_PLACES, Metrics
from authbridge.schemes import cram_md5
from tests.support.memory_store import MemoryStore

#: Seconds any single wait of a test may take before it fails (a hang is a failure).
DEADLINE = 10.0

PLAIN_USER = "plainuser@example.org"
CRAM_USER = "cramuser@example.org"
#: Its extra fields expand client text (service, addresses, session) into the OK line.
FIELDS_USER = "fielduser@example.org"
PASSWORD = b"secret"

USERS = (
    f"{PLAIN_USER}:{{PLAIN}}secret\n"
    f"{CRAM_USER}:{{CRAM-MD5}}{cram_md5.context_from_password(PASSWORD).hex()}\n"
    f"{FIELDS_USER}:{{PLAIN}}secret::::::svc=%s rip=%r lip=%l who=%u\n"
)

ALL_MECHANISMS = ("plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256")


class InlineMemoryStore(MemoryStore):
    """The same users with ``get``: cheap checks are answered inline, without a task
    (the path the CRAM-MD5 crash of issue 15 took)."""

    def get(self, user: str) -> Any:
        return self.entries.get(user)


def make_config(**policy: Any) -> Config:
    settings = {"failure_delay": 0.0, "require_secured": False, **policy}
    return Config(
        server=ServerConfig(mechanisms=ALL_MECHANISMS),
        policy=PolicyConfig(**settings),
        penalty=PenaltySettings(enabled=False),
    )


def internal_errors(metrics: Metrics) -> dict[str, float]:
    """``authbridge_internal_errors_total`` by ``where``."""
    return {
        where: metrics.internal_errors.labels(where=where)._value.get()
        for where in INTERNAL_ERROR_PLACES
    }


class Client:
    """One auth-client connection: send lines, read reply lines, notice end of file."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self.closed = False

    async def send(self, data: bytes) -> None:
        """Send ``data``; a server that has hung up already (as it does right away after
        a protocol violation, like Dovecot) is noted, not an error: read_line says so."""
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            self.closed = True

    async def read_line(self) -> bytes | None:
        """The next line without its newline, or ``None`` once the server hung up."""
        with trio.fail_after(DEADLINE):
            while b"\n" not in self._buffer:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    self.closed = True
                    return None
                self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line

    async def handshake(self) -> None:
        await self.send(b"VERSION\t1\t2\nCPID\t4242\n")
        while (line := await self.read_line()) != b"DONE":
            assert line is not None, "the server hung up during the handshake"

    async def reply_to(self, request_id: int) -> bytes | None:
        """The next OK/FAIL/CONT line for ``request_id`` (``None``: the server hung up)."""
        prefix = str(request_id).encode()
        while True:
            line = await self.read_line()
            if line is None:
                return None
            fields = line.split(b"\t")
            if len(fields) >= 2 and fields[0] in (b"OK", b"FAIL", b"CONT") and fields[1] == prefix:
                return line

    async def wait_closed(self) -> None:
        """Read until the server hangs up."""
        while await self.read_line() is not None:
            pass

    async def aclose(self) -> None:
        await self.stream.aclose()


def plain_auth(request_id: int, user: str, password: bytes, service: str = "smtp") -> bytes:
    resp = base64.b64encode(b"\0" + user.encode() + b"\0" + password).decode()
    return f"AUTH\t{request_id}\tPLAIN\tservice={service}\tresp={resp}\n".encode()


def cram_md5_answer(user: bytes, password: bytes, challenge: bytes) -> bytes:
    digest = hmac.new(password, challenge, hashlib.md5).hexdigest().encode()
    return user + b" " + digest


@dataclass
class RunningServer:
    server: AuthServer
    path: str

    @property
    def metrics(self) -> Metrics:
        return self.server.metrics

    async def connect(self) -> Client:
        client = Client(await trio.open_unix_socket(self.path))
        await client.handshake()
        return client

    async def good_login(self, request_id: int = 77) -> bytes | None:
        """A valid PLAIN login on a new connection; its reply line."""
        client = await self.connect()
        try:
            await client.send(plain_auth(request_id, PLAIN_USER, PASSWORD))
            return await client.reply_to(request_id)
        finally:
            await client.aclose()


@asynccontextmanager
async def running_server(
    config: Config | None = None, store: MemoryStore | None = None
) -> AsyncIterator[RunningServer]:
    """Start the server on a fresh socket; stop it (cancel everything) on exit."""
    config = config or make_config()
    authenticator = Authenticator([store or MemoryStore(USERS)], Hasher(workers=1))
    server = AuthServer(config, authenticator, Metrics())
    with tempfile.TemporaryDirectory(prefix="ab-iso-") as directory:
        path = str(Path(directory) / "auth-client")
        listener = unix_listener(path, 0o600, None, None)
        try:
            async with trio.open_nursery() as connections:
                await connections.start(server.run_background)
                async with trio.open_nursery() as acceptors:
                    acceptors.start_soon(
                        partial(
                            trio.serve_listeners,
                            server.handle,
                            [listener.trio_listener()],
                            handler_nursery=connections,
                        )
                    )
                    yield RunningServer(server, path)
                    acceptors.cancel_scope.cancel()
                connections.cancel_scope.cancel()
        finally:
            listener.remove()
            listener.sock.close()
