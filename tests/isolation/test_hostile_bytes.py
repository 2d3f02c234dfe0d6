"""Any bytes in any field of any command are data: a reply or a hang-up, never a crash.

Issue 15: a CRAM-MD5 digest holding one byte that is not UTF-8 (client text keeps such
bytes as surrogates) raised ``UnicodeEncodeError`` in the server, which ended the
listener and the daemon. Here every field of the AUTH line and every CONT payload of
every mechanism (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/256), after base64 decoding, gets
arbitrary bytes, through a real :class:`AuthServer` on a real socket. Each example must
end in an answer for the request (or the server hanging up on a protocol violation),
count no internal error at all (bytes are data, not an exception to contain), and leave
the server answering a good login on a new connection with OK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from authbridge.config import Config, LogConfig
from tests.fuzz.settings import EXAMPLES, FUZZ
from tests.isolation.harness import (
    CRAM_USER,
    FIELDS_USER,
    PASSWORD,
    PLAIN_USER,
    USERS,
    Client,
    InlineMemoryStore,
    RunningServer,
    cram_md5_answer,
    internal_errors,
    make_config,
    running_server,
)
from tests.support.memory_store import MemoryStore

#: Each store makes the checks take one of the server's two paths: inline (the store
#: has ``get``) or a check task.
STORES: dict[str, Callable[[], MemoryStore]] = {
    "inline": lambda: InlineMemoryStore(USERS),
    "task": lambda: MemoryStore(USERS),
}

#: Every example starts a server and runs a whole conversation over a socket (~10 ms):
#: a third of the session fuzzers' examples keeps this module under 20 s by default.
HOSTILE = settings(FUZZ, max_examples=max(20, EXAMPLES // 3))

NON_UTF8 = st.sampled_from([b"\xae", b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90"])


@st.composite
def spoiled(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with bytes that are not UTF-8 put in, or a byte replaced by one."""
    if not valid:
        return draw(NON_UTF8)
    at = draw(st.integers(0, len(valid) - 1))
    bad = draw(NON_UTF8)
    if draw(st.booleans()):
        return valid[:at] + bad + valid[at + 1 :]
    return valid[:at] + bad + valid[at:]


def field_bytes(*valid: bytes) -> st.SearchStrategy[bytes]:
    """What a client might put where one of ``valid`` belongs: anything at all."""
    options = [st.binary(max_size=48)]
    if valid:
        options += [st.sampled_from(valid), *(spoiled(v) for v in valid)]
    return st.one_of(options)


def no_newline(data: bytes) -> bytes:
    """A field cannot hold the line end (that would be another line, not a field)."""
    return data.replace(b"\n", b"")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


async def _still_serving(running: RunningServer) -> None:
    assert internal_errors(running.metrics) == dict.fromkeys(internal_errors(running.metrics), 0)
    reply = await running.good_login()
    assert reply is not None and reply.startswith(b"OK\t77\tuser=" + PLAIN_USER.encode()), reply


def _run(
    store: str, conversation: Callable[[Client], Awaitable[object]], config: Config | None = None
) -> None:
    """Run ``conversation`` on one connection, then prove the server is unharmed."""

    async def main() -> None:
        async with running_server(config, STORES[store]()) as running:
            client = await running.connect()
            try:
                await conversation(client)
            finally:
                await client.aclose()
            await _still_serving(running)

    trio.run(main)


# ---------------------------------------------------------------------- the case


@pytest.mark.parametrize("store", STORES)
async def test_cram_md5_digest_with_a_byte_that_is_not_utf8_fails(store: str) -> None:
    async with running_server(store=STORES[store]()) as running:
        client = await running.connect()
        await client.send(b"AUTH\t2\tCRAM-MD5\tservice=smtp\n")
        cont = await client.reply_to(2)
        assert cont is not None and cont.startswith(b"CONT\t2\t")
        digest = b"0123456789abcdef012\xae456789abcdef0123"
        await client.send(b"CONT\t2\t" + b64(CRAM_USER.encode() + b" " + digest) + b"\n")
        assert await client.reply_to(2) == b"FAIL\t2\tuser=" + CRAM_USER.encode()
        await client.aclose()
        await _still_serving(running)


@pytest.mark.parametrize("store", STORES)
async def test_cram_md5_good_digest_still_succeeds(store: str) -> None:
    async with running_server(store=STORES[store]()) as running:
        client = await running.connect()
        await client.send(b"AUTH\t2\tCRAM-MD5\tservice=smtp\n")
        cont = await client.reply_to(2)
        assert cont is not None
        challenge = base64.b64decode(cont.split(b"\t")[2])
        answer = cram_md5_answer(CRAM_USER.encode(), PASSWORD, challenge)
        await client.send(b"CONT\t2\t" + b64(answer) + b"\n")
        assert await client.reply_to(2) == b"OK\t2\tuser=" + CRAM_USER.encode()
        await client.aclose()


# ---------------------------------------------------------------------- the AUTH line

MECHANISM = field_bytes(b"PLAIN", b"LOGIN", b"CRAM-MD5", b"SCRAM-SHA-1", b"SCRAM-SHA-256")
PARAMS = st.lists(
    field_bytes(b"rip=192.0.2.1", b"lip=::1", b"session=abc", b"secured", b"rport=25"),
    max_size=3,
)
RESP = st.one_of(
    st.none(),
    field_bytes(b64(b"\0" + PLAIN_USER.encode() + b"\0secret")),
    field_bytes(b"\0" + PLAIN_USER.encode() + b"\0secret").map(b64),
    field_bytes(b"\0" + FIELDS_USER.encode() + b"\0secret").map(b64),
)


#: At debug level every line in and out is traced too: client bytes reach the log code.
TRACED = replace(make_config(), log=LogConfig(level="debug"))


@pytest.mark.parametrize(("store", "traced"), [("inline", False), ("task", False), ("task", True)])
@HOSTILE
@given(mechanism=MECHANISM, service=field_bytes(b"smtp", b"imap"), params=PARAMS, resp=RESP)
def test_any_bytes_in_the_fields_of_an_auth_line(
    store: str,
    traced: bool,
    mechanism: bytes,
    service: bytes,
    params: list[bytes],
    resp: bytes | None,
) -> None:
    line = [b"AUTH", b"1", mechanism, b"service=" + service, *params]
    if resp is not None:
        line.append(b"resp=" + resp)

    async def conversation(client: Client) -> None:
        await client.send(no_newline(b"\t".join(line)) + b"\n")
        await client.reply_to(1)  # an answer, or the server hung up (a violation)

    _run(store, conversation, TRACED if traced else None)


@HOSTILE
@given(request_id=st.binary(max_size=12), handshake=field_bytes(b"VERSION\t1\t2", b"CPID\t1"))
def test_any_bytes_in_the_request_id_and_handshake(request_id: bytes, handshake: bytes) -> None:
    async def conversation(client: Client) -> None:
        await client.send(no_newline(handshake) + b"\n")
        await client.send(no_newline(b"AUTH\t" + request_id + b"\tPLAIN\tservice=smtp") + b"\n")
        # Whatever the id, the server answers a well-formed request that follows it
        # or has hung up: a marker request tells when the first line was dealt with.
        await client.send(b"CANCEL\t9\n" + b"AUTH\t9\tLOGIN\tservice=smtp\n")
        await client.reply_to(9)

    _run("inline", conversation)


# ---------------------------------------------------------------------- CONT payloads


async def _exchange(client: Client, mechanism: bytes, payloads: list[bytes]) -> None:
    """AUTH without an initial response, then one CONT per CONT the server sends."""
    await client.send(b"AUTH\t3\t" + mechanism + b"\tservice=smtp\n")
    for payload in payloads:
        reply = await client.reply_to(3)
        if reply is None or not reply.startswith(b"CONT\t"):
            return
        await client.send(b"CONT\t3\t" + b64(payload) + b"\n")
    await client.reply_to(3)


USER = field_bytes(PLAIN_USER.encode(), CRAM_USER.encode(), FIELDS_USER.encode())
SECRET = field_bytes(PASSWORD)


@pytest.mark.parametrize("store", STORES)
@HOSTILE
@given(authzid=USER, authcid=USER, password=SECRET, whole=st.none() | st.binary(max_size=64))
def test_plain_payload(
    store: str, authzid: bytes, authcid: bytes, password: bytes, whole: bytes | None
) -> None:
    payload = whole if whole is not None else authzid + b"\0" + authcid + b"\0" + password
    _run(store, lambda client: _exchange(client, b"PLAIN", [payload]))


@pytest.mark.parametrize("store", STORES)
@HOSTILE
@given(username=USER, password=SECRET)
def test_login_payloads(store: str, username: bytes, password: bytes) -> None:
    _run(store, lambda client: _exchange(client, b"LOGIN", [username, password]))


@pytest.mark.parametrize("store", STORES)
@HOSTILE
@given(username=USER, digest=field_bytes(b"0123456789abcdef0123456789abcdef"), data=st.data())
def test_cram_md5_payload(store: str, username: bytes, digest: bytes, data: st.DataObject) -> None:
    separator = data.draw(st.sampled_from([b" ", b"  ", b"", b"\t", b"\0 "]))

    async def conversation(client: Client) -> None:
        await client.send(b"AUTH\t3\tCRAM-MD5\tservice=smtp\n")
        cont = await client.reply_to(3)
        if cont is None or not cont.startswith(b"CONT\t"):
            return
        challenge = base64.b64decode(cont.split(b"\t")[2])
        good = cram_md5_answer(CRAM_USER.encode(), PASSWORD, challenge).split(b" ")[1]
        chosen = data.draw(st.sampled_from([digest, good]))
        answer = data.draw(st.sampled_from([chosen, data.draw(spoiled(good))]))
        await client.send(b"CONT\t3\t" + b64(username + separator + answer) + b"\n")
        await client.reply_to(3)

    _run(store, conversation)


def _scram_proof(digest: str, server_first: bytes, bare: bytes, without_proof: bytes) -> bytes:
    fields = dict(part.split(b"=", 1) for part in server_first.split(b",") if b"=" in part)
    salt, iterations = base64.b64decode(fields[b"s"]), int(fields[b"i"])
    salted = hashlib.pbkdf2_hmac(digest, PASSWORD, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    message = bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(stored_key, message, digest).digest()
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


async def _scram(
    client: Client, mechanism: str, first: tuple[bytes, bytes], final: Callable[[bytes], bytes]
) -> bytes | None:
    """A SCRAM exchange with client-first ``gs2 + bare``; ``final`` may spoil the
    client-final message. The last reply (``None``: the server hung up)."""
    gs2, bare = first
    digest = "sha1" if mechanism == "SCRAM-SHA-1" else "sha256"
    await client.send(f"AUTH\t3\t{mechanism}\tservice=smtp\n".encode())
    reply = await client.reply_to(3)
    if reply is None or not reply.startswith(b"CONT\t"):
        return reply
    await client.send(b"CONT\t3\t" + b64(gs2 + bare) + b"\n")
    reply = await client.reply_to(3)
    if reply is None or not reply.startswith(b"CONT\t"):
        return reply  # the first message was refused (or the user unknown)
    server_first = base64.b64decode(reply.split(b"\t")[2])
    combined = dict(p.split(b"=", 1) for p in server_first.split(b",") if b"=" in p)[b"r"]
    without_proof = b"c=" + b64(gs2) + b",r=" + combined
    proof = _scram_proof(digest, server_first, bare, without_proof)
    await client.send(b"CONT\t3\t" + b64(final(without_proof + b",p=" + b64(proof))) + b"\n")
    reply = await client.reply_to(3)
    if reply is not None and reply.startswith(b"CONT\t"):
        await client.send(b"CONT\t3\t\n")  # acknowledge the server signature
        reply = await client.reply_to(3)
    return reply


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_good_exchange_still_succeeds(mechanism: str) -> None:
    async with running_server() as running:
        client = await running.connect()
        first = (b"n,,", b"n=" + PLAIN_USER.encode() + b",r=fyko+d2lbbFgONRv9qkxdawL")
        reply = await _scram(client, mechanism, first, lambda final: final)
        assert reply == b"OK\t3\tuser=" + PLAIN_USER.encode()
        await client.aclose()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@HOSTILE
@given(
    gs2=field_bytes(b"n,,", b"y,,", b"n,a=" + PLAIN_USER.encode() + b","),
    username=USER,
    nonce=field_bytes(b"fyko+d2lbbFgONRv9qkxdawL"),
    data=st.data(),
)
def test_scram_payloads(
    mechanism: str, gs2: bytes, username: bytes, nonce: bytes, data: st.DataObject
) -> None:
    def final(valid: bytes) -> bytes:
        return data.draw(st.sampled_from([valid, data.draw(spoiled(valid))]))

    async def conversation(client: Client) -> None:
        await _scram(client, mechanism, (gs2, b"n=" + username + b",r=" + nonce), final)

    _run("task", conversation)
