"""An exception in any layer of one client's request costs that client, nobody else.

For each layer a request passes through (wire parsing, session, mechanism,
authenticator, store lookup, scheme verification, authentication event, metrics) an
exception is injected that fires only for the victim's request, and whose message
carries the victim's password (as a real one could quote client data). Meanwhile a
bystander connection has a check in flight, held inside the store. Each test proves:

* the victim's connection ends (or, for bookkeeping after the reply, its reply is
  intact), and nothing else does: the bystander's held check completes with OK and a
  new connection logs in with OK;
* ``authbridge_internal_errors_total{where}`` moved by exactly one;
* exactly one log line reports it, by type and place, and no log line holds the
  password (plain or base64).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from authbridge import schemes
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.pipeline import CheckPipeline
from authbridge.core import wire
from authbridge.core.mechanisms.plain import Plain
from authbridge.core.session import Session
from authbridge.daemon.server import AuthServer, Connection
from authbridge.observability import events, logs
from authbridge.observability.metrics import Metrics
from tests.isolation.harness import (
    DEADLINE,
    PASSWORD,
    PLAIN_USER,
    USERS,
    Client,
    internal_errors,
    make_config,
    plain_auth,
    running_server,
)
from tests.support import root_logging_restored
from tests.support.memory_store import MemoryStore

VICTIM = "victim@example.org"
VICTIM_PASSWORD = b"Victim-Secret-8472"
BYSTANDER = "bystander@example.org"

LAYER_USERS = USERS + f"{VICTIM}:{{PLAIN}}{VICTIM_PASSWORD.decode()}\n{BYSTANDER}:{{PLAIN}}secret\n"
VICTIM_LINE = plain_auth(1, VICTIM, VICTIM_PASSWORD)
VICTIM_RESP = VICTIM_LINE.split(b"resp=")[1].strip()


class InjectedFault(RuntimeError):
    """The exception the tests inject; its message quotes the victim's password."""

    def __init__(self) -> None:
        super().__init__(f"injected, quoting client data: {VICTIM_PASSWORD.decode()}")


class HeldStore(MemoryStore):
    """Holds the bystander's lookup until released: a check in flight elsewhere."""

    def __init__(self) -> None:
        super().__init__(LAYER_USERS)
        self.entered = trio.Event()
        self.release = trio.Event()

    async def lookup(self, user: str, info: object = None) -> Any:
        if user == BYSTANDER:
            self.entered.set()
            await self.release.wait()
        return await super().lookup(user, info)


def _is_victim(value: object) -> bool:
    """Whether an argument is the victim's data, in any of the shapes layers see."""
    if isinstance(value, bytes | bytearray):
        return VICTIM.encode() in value or VICTIM_PASSWORD in value or VICTIM_RESP in value
    if isinstance(value, str):
        return value in (VICTIM, VICTIM_RESP.decode())
    user = getattr(value, "user", None) or getattr(value, "authcid", None)
    return user == VICTIM


def _faulty(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(_is_victim(a) for a in (*args, *kwargs.values())):
            raise InjectedFault()
        return original(*args, **kwargs)

    return wrapper


def _faulty_async(original: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(_is_victim(a) for a in (*args, *kwargs.values())):
            raise InjectedFault()
        return await original(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Layer:
    name: str
    #: The ``where`` label the failure is counted under.
    where: str
    inject: Callable[[pytest.MonkeyPatch], None]


def _patch(target: Any, attribute: str, asynchronous: bool = False) -> Callable[..., None]:
    def inject(monkeypatch: pytest.MonkeyPatch) -> None:
        original = getattr(target, attribute)
        wrap = _faulty_async if asynchronous else _faulty
        monkeypatch.setattr(target, attribute, wrap(original))

    return inject


LAYERS = [
    Layer("wire", "connection", _patch(wire, "b64decode_strict")),
    Layer("session", "connection", _patch(Session, "receive")),
    Layer("mechanism", "connection", _patch(Plain, "_step")),
    Layer("pipeline", "check", _patch(CheckPipeline, "run")),
    Layer("store", "check", _patch(MemoryStore, "lookup", asynchronous=True)),
    Layer("scheme", "check", _patch(schemes, "verify_password")),
    Layer("event", "bookkeeping", _patch(events, "authentication_finished")),
    Layer("metric", "bookkeeping", _patch(Metrics, "finished")),
]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    with root_logging_restored():
        logs.configure("json", "info", stream)
        yield stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
async def test_an_exception_in_one_layer_costs_only_that_client(
    layer: Layer, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    layer.inject(monkeypatch)
    store = HeldStore()
    async with running_server(store=store) as running:
        bystander = await running.connect()
        await bystander.send(plain_auth(5, BYSTANDER, PASSWORD))
        with trio.fail_after(DEADLINE):
            await store.entered.wait()

        victim = await running.connect()
        await victim.send(VICTIM_LINE)
        reply = await victim.reply_to(1)
        if layer.where in ("connection", "check"):
            # A failed check is a TEMPFAIL, which in the default mode closes the
            # connection too (so the MTA answers 4xx): no answer either way.
            assert reply is None, "the victim's connection must end without an answer"
        else:  # bookkeeping runs after the reply went out: the reply is intact
            assert reply == b"OK\t1\tuser=" + VICTIM.encode()
        await victim.aclose()

        store.release.set()
        assert await bystander.reply_to(5) == b"OK\t5\tuser=" + BYSTANDER.encode()
        assert await running.good_login() == b"OK\t77\tuser=" + PLAIN_USER.encode()
        await bystander.aclose()

        counts = internal_errors(running.metrics)
        assert counts == {**dict.fromkeys(counts, 0), layer.where: 1}

    reported = [line for line in _lines(log_stream) if line.get("where") == layer.where]
    assert len(reported) == 1, reported
    assert reported[0]["level"] == "error"
    assert "InjectedFault" in json.dumps(reported[0])
    assert "test_layers.py:" in reported[0]["location"]
    text = log_stream.getvalue()
    # A request the victim had pending is aborted by our error, not by the client.
    assert '"reason": "client_disconnected"' not in text
    for secret in (VICTIM_PASSWORD, base64.b64encode(VICTIM_PASSWORD), VICTIM_RESP):
        assert secret.decode() not in text
    assert "Traceback" not in text


async def test_a_failed_check_in_compat_mode_is_dovecots_temp_fail_and_the_connection_stays(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    """``--dovecot-compat`` (no disconnect on TEMPFAIL): the answer Dovecot gives for an
    internal failure, and the same connection goes on serving."""
    _patch(MemoryStore, "lookup", asynchronous=True)(monkeypatch)
    config = make_config(tempfail_disconnects=False)
    async with running_server(config, HeldStore()) as running:
        client = await running.connect()
        await client.send(VICTIM_LINE)
        reply = await client.reply_to(1)
        assert reply is not None and reply.startswith(b"FAIL\t1\t"), reply
        assert b"code=temp_fail" in reply.split(b"\t")
        await client.send(plain_auth(2, PLAIN_USER, PASSWORD))
        assert await client.reply_to(2) == b"OK\t2\tuser=" + PLAIN_USER.encode()
        await client.aclose()
        assert internal_errors(running.metrics)["check"] == 1
    assert VICTIM_PASSWORD.decode() not in log_stream.getvalue()


async def test_a_delayed_fail_that_cannot_be_sent_ends_only_its_connection(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    """Delayed FAILs of every connection go out from one shared task: an exception while
    sending one ends that connection, and the others' delayed FAILs still go out."""
    original = Connection.push

    def push(self: Connection, data: bytes) -> None:
        if VICTIM.encode() in data:
            raise InjectedFault()
        original(self, data)

    monkeypatch.setattr(Connection, "push", push)
    async with running_server(make_config(failure_delay=0.05), HeldStore()) as running:
        victim = await running.connect()
        await victim.send(plain_auth(1, VICTIM, b"wrong"))
        assert await victim.reply_to(1) is None
        other = await running.connect()
        await other.send(plain_auth(2, PLAIN_USER, b"wrong"))
        assert await other.reply_to(2) == b"FAIL\t2\tuser=" + PLAIN_USER.encode()
        await other.aclose()
        await victim.aclose()
        assert await running.good_login() == b"OK\t77\tuser=" + PLAIN_USER.encode()
        assert internal_errors(running.metrics)["connection"] == 1
    reported = [line for line in _lines(log_stream) if line.get("where") == "connection"]
    assert len(reported) == 1, reported
    assert VICTIM_PASSWORD.decode() not in log_stream.getvalue()


async def test_an_expiry_sweep_error_ends_only_that_connection(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO, autojump_clock: trio.abc.Clock
) -> None:
    """The request-expiry sweep visits every connection from one shared task: a session
    that raises there ends its own connection; the sweep and the others go on.
    (The clock jumps to the sweep's next round as soon as everything waits.)"""
    original = Session.expire
    other_swept = 0
    swept_again = trio.Event()

    def expire(self: Session, now: float) -> Any:
        nonlocal other_swept
        if self.cuid == 1:
            raise InjectedFault()
        other_swept += 1
        if other_swept >= 2:
            swept_again.set()
        return original(self, now)

    monkeypatch.setattr(Session, "expire", expire)
    server = AuthServer(make_config(), Authenticator([HeldStore()], Hasher(workers=1)), Metrics())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_background)
        clients = []
        for _ in range(2):
            ours, theirs = trio.socket.socketpair()
            nursery.start_soon(server.handle, trio.SocketStream(ours))
            client = Client(trio.SocketStream(theirs))
            await client.handshake()
            clients.append(client)
        victim, other = clients
        await victim.wait_closed()  # the first sweep ends it
        await other.send(plain_auth(2, PLAIN_USER, PASSWORD))
        assert await other.reply_to(2) == b"OK\t2\tuser=" + PLAIN_USER.encode()
        with trio.fail_after(60):  # virtual time
            await swept_again.wait()  # a later round of the sweep ran
        await other.send(plain_auth(3, PLAIN_USER, PASSWORD))
        assert await other.reply_to(3) == b"OK\t3\tuser=" + PLAIN_USER.encode()
        assert internal_errors(server.metrics)["connection"] == 1
        nursery.cancel_scope.cancel()
    reported = [line for line in _lines(log_stream) if line.get("where") == "connection"]
    assert len(reported) == 1, reported
