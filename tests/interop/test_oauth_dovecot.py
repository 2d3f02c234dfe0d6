"""OAUTHBEARER and XOAUTH2: authbridge against the REAL Dovecot 2.3 oauth2 passdb.

Both servers validate tokens of the test provider (tests.support.oauth_provider) by
RFC 7662 introspection: Dovecot with ``passdb { driver = oauth2 }`` and
``introspection_mode = post``, authbridge with ``[oauth] introspection_url``. The same
client lines go to both auth-client sockets and the answers are compared line by line:
the handshake's MECH flags, OK, the error status CONT (its JSON byte for byte), the
FAIL after the client's dummy answer, malformed messages, CANCEL, an authzid that is
not the token's user, initial response or an empty CONT first.

A dedicated file rather than conformance transcripts: every exchange needs the provider
and tokens it issued at run time, which the corpus's fixtures cannot host.

Deliberate differences (protocol/SPEC.md §14), asserted here as such:
- Dovecot's OK carries ``token=<the bearer token>`` (for proxying); authbridge never
  hands a secret back to the client.
- OAUTHBEARER without ``a=`` (RFC 7628 makes it optional): Dovecot fails, authbridge
  takes the user from the token.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth
from tests.support.oauth_provider import CLIENT_ID, CLIENT_SECRET, OAuthProvider, provider_fixture

pytestmark = pytest.mark.interop

USER = "alice@example.org"
MECHANISMS = ("plain", "oauthbearer", "xoauth2")
# ``secured``: authbridge (outside --dovecot-compat) takes a bearer token, like a
# password, only on a TLS session; Dovecot's auth service does not check it.
PARAMS = "service=smtp\trip=192.0.2.7\tsecured"
TIMEOUT = 5.0


provider = provider_fixture("module")


@pytest.fixture(scope="module")
def dovecot(provider: OAuthProvider, interop_dir: Path, users_file: Path) -> Iterator[DovecotAuth]:
    base = runtime_dir(interop_dir, "dovecot-oauth2")
    conf = base / "dovecot-oauth2.conf.ext"
    port = urlsplit(provider.introspection_url).port
    # Dovecot 2.3 authenticates to the endpoint with the URL's user info (HTTP Basic).
    conf.write_text(
        "introspection_mode = post\n"
        f"introspection_url = http://{CLIENT_ID}:{CLIENT_SECRET}@127.0.0.1:{port}/introspect\n"
        "username_attribute = email\nactive_attribute = active\nactive_value = true\n"
    )
    conf.chmod(0o644)
    passdb = (
        f"passdb {{\n  driver = oauth2\n  mechanisms = oauthbearer xoauth2\n  args = {conf}\n}}\n"
    )
    server = DovecotAuth(
        users_file,
        base / "auth-client",
        mechanisms=MECHANISMS,
        extra_passdbs=passdb,
        workdir=base / "dovecot",
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def authbridge(
    provider: OAuthProvider, interop_dir: Path, users_file: Path
) -> Iterator[AuthbridgeServer]:
    base = runtime_dir(interop_dir, "authbridge-oauth2")
    config = base / "authbridge.toml"
    config.write_text(
        "[policy]\nfailure_delay = 0.0\n[penalty]\nenabled = false\n[oauth]\n"
        f'introspection_url = "{provider.introspection_url}"\n'
        f'client_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
        "cache_ttl = 0.0\nnegative_ttl = 0.0\n"
    )
    with AuthbridgeServer(
        users_file,
        base / "auth-client",
        mechanisms=MECHANISMS,
        extra_args=["--config", str(config)],
    ) as server:
        yield server


@dataclass(frozen=True)
class Tokens:
    active: str
    inactive: str


@pytest.fixture(scope="module")
def tokens(provider: OAuthProvider) -> Tokens:
    return Tokens(provider.opaque(USER), provider.opaque(USER, active=False))


# ---------------------------------------------------------------- the client side


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def oauthbearer(token: str, gs2: str = f"n,a={USER},") -> str:
    return b64(f"{gs2}\x01host=mx.example.org\x01port=587\x01auth=Bearer {token}\x01\x01".encode())


def xoauth2(token: str, user: str = USER) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


class Client:
    """One auth-client connection; :meth:`ask` sends a line and reads the reply line."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.buffer = b""
        self.sock.sendall(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid())
        self.handshake: list[str] = []
        while (line := self.line()) != "DONE":
            self.handshake.append(line)

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"server closed; pending {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.line()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def replay(path: Path, lines: Sequence[str]) -> list[str]:
    """Each line's answer (CANCEL has none), on one fresh connection."""
    client = Client(path)
    try:
        answers: list[str] = []
        for line in lines:
            if line.startswith("CANCEL\t"):
                client.send(line)
            else:
                answers.append(client.ask(line))
        return answers
    finally:
        client.close()


def without_token_field(answers: list[str], token: str) -> list[str]:
    """Dovecot's answers minus its ``token=`` field in a bearer OK (the one deliberate OK
    difference, asserted by test_difference_dovecot_returns_the_token_in_ok)."""
    return ["\t".join(f for f in a.split("\t") if f != f"token={token}") for a in answers]


def decoded(answers: list[str]) -> list[str]:
    """CONT payloads decoded, so a failing comparison shows the JSON."""
    out = []
    for answer in answers:
        kind, _, rest = answer.partition("\t")
        if kind == "CONT":
            rid, _, data = rest.partition("\t")
            answer = f"CONT\t{rid}\t{base64.b64decode(data).decode()!r}"
        out.append(answer)
    return out


# ---------------------------------------------------------------- the exchanges

OB_STATUS = '{"status":"invalid_token"}'
XO_STATUS = '{"status":"401","schemes":"bearer","scope":"mail"}'

PLAIN_RESP = b64(b"\0plainuser\0plainpass")
NO_AUTH_FIELD = b64(f"n,a={USER},\x01host=x\x01\x01".encode())
BASIC_NOT_BEARER = b64(f"n,a={USER},\x01auth=Basic x\x01\x01".encode())
NOT_KEY_VALUE = b64(b"hello")
OB_CONT = f"CONT\t1\t{b64(OB_STATUS.encode())}"
XO_CONT = f"CONT\t1\t{b64(XO_STATUS.encode())}"


def cases(t: Tokens) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (the client's lines, Dovecot 2.3.19's answers with ``token=`` taken out)."""
    ob, xo = f"AUTH\t1\tOAUTHBEARER\t{PARAMS}", f"AUTH\t1\tXOAUTH2\t{PARAMS}"
    ok = f"OK\t1\tuser={USER}"
    no_user = b64(f"auth=Bearer {t.active}\x01\x01".encode())
    return {
        "oauthbearer-active": ([f"{ob}\tresp={oauthbearer(t.active)}"], [ok]),
        "xoauth2-active": ([f"{xo}\tresp={xoauth2(t.active)}"], [ok]),
        "oauthbearer-empty-cont-first": (
            [ob, f"CONT\t1\t{oauthbearer(t.active)}"],
            ["CONT\t1\t", ok],
        ),
        "xoauth2-empty-cont-first": ([xo, f"CONT\t1\t{xoauth2(t.active)}"], ["CONT\t1\t", ok]),
        "oauthbearer-inactive-then-dummy": (
            [f"{ob}\tresp={oauthbearer(t.inactive)}", "CONT\t1\tAQ=="],
            [OB_CONT, f"FAIL\t1\tuser={USER}"],
        ),
        "xoauth2-inactive-then-empty-answer": (
            [f"{xo}\tresp={xoauth2(t.inactive)}", "CONT\t1\t"],
            [XO_CONT, f"FAIL\t1\tuser={USER}"],
        ),
        "oauthbearer-inactive-then-another-token": (
            [f"{ob}\tresp={oauthbearer(t.inactive)}", f"CONT\t1\t{oauthbearer(t.active)}"],
            [OB_CONT, f"FAIL\t1\tuser={USER}"],
        ),
        "oauthbearer-authzid-not-the-tokens-user": (
            [f"{ob}\tresp={oauthbearer(t.active, 'n,a=bob@example.org,')}", "CONT\t1\tAQ=="],
            [OB_CONT, "FAIL\t1\tuser=bob@example.org"],
        ),
        "xoauth2-user-not-the-tokens-user": (
            [f"{xo}\tresp={xoauth2(t.active, 'bob@example.org')}", "CONT\t1\t"],
            [XO_CONT, "FAIL\t1\tuser=bob@example.org"],
        ),
        "oauthbearer-no-auth-field": ([f"{ob}\tresp={NO_AUTH_FIELD}"], [f"FAIL\t1\tuser={USER}"]),
        "oauthbearer-not-a-bearer-token": ([f"{ob}\tresp={BASIC_NOT_BEARER}"], ["FAIL\t1"]),
        "oauthbearer-bad-gs2-flag": (
            [f"{ob}\tresp={oauthbearer(t.active, f'x,a={USER},')}"],
            ["FAIL\t1"],
        ),
        "oauthbearer-channel-binding": (
            [f"{ob}\tresp={oauthbearer(t.active, f'p=tls-unique,a={USER},')}"],
            ["FAIL\t1"],
        ),
        "xoauth2-without-user": (
            [f"{xo}\tresp={no_user}"],
            ["FAIL\t1"],
        ),
        "xoauth2-not-key-value": ([f"{xo}\tresp={NOT_KEY_VALUE}"], ["FAIL\t1"]),
        "cancel-after-the-error-status": (
            [
                f"{ob}\tresp={oauthbearer(t.inactive)}",
                "CANCEL\t1",
                f"AUTH\t2\tPLAIN\t{PARAMS}\tresp={PLAIN_RESP}",
            ],
            [OB_CONT, "OK\t2\tuser=plainuser"],
        ),
        "cancel-before-the-token": (
            [xo, "CANCEL\t1", f"AUTH\t2\tXOAUTH2\t{PARAMS}\tresp={xoauth2(t.active)}"],
            ["CONT\t1\t", f"OK\t2\tuser={USER}"],
        ),
    }


CASE_NAMES = list(cases(Tokens("a", "b")))


def test_handshake_mech_flags_are_dovecots(
    dovecot: DovecotAuth, authbridge: AuthbridgeServer
) -> None:
    mechs = {}
    for name, path in (("dovecot", dovecot.socket_path), ("authbridge", authbridge.socket_path)):
        client = Client(path)
        client.close()
        mechs[name] = [line for line in client.handshake if line.startswith("MECH\t")]
    assert mechs["dovecot"] == [
        "MECH\tPLAIN\tplaintext",
        "MECH\tOAUTHBEARER\tplaintext",
        "MECH\tXOAUTH2\tplaintext",
    ]
    assert mechs["authbridge"] == mechs["dovecot"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_same_answers_as_dovecot(
    case: str, dovecot: DovecotAuth, authbridge: AuthbridgeServer, tokens: Tokens
) -> None:
    lines, expected = cases(tokens)[case]
    theirs = without_token_field(replay(dovecot.socket_path, lines), tokens.active)
    assert decoded(theirs) == decoded(expected), dovecot.log_tail()
    ours = replay(authbridge.socket_path, lines)
    assert decoded(ours) == decoded(theirs), authbridge.stderr_text()[-3000:]


def test_difference_dovecot_returns_the_token_in_ok(
    dovecot: DovecotAuth, authbridge: AuthbridgeServer, tokens: Tokens
) -> None:
    """Dovecot's oauth2 passdb adds ``token=`` to OK; authbridge never echoes a secret."""
    line = f"AUTH\t1\tXOAUTH2\t{PARAMS}\tresp={xoauth2(tokens.active)}"
    (theirs,) = replay(dovecot.socket_path, [line])
    (ours,) = replay(authbridge.socket_path, [line])
    assert theirs == f"OK\t1\tuser={USER}\ttoken={tokens.active}"
    assert ours == f"OK\t1\tuser={USER}"


def test_difference_oauthbearer_without_authzid(
    dovecot: DovecotAuth, authbridge: AuthbridgeServer, tokens: Tokens
) -> None:
    """RFC 7628's ``a=`` is optional: authbridge takes the token's user; Dovecot 2.3 needs
    a name from the client and fails at once."""
    line = f"AUTH\t1\tOAUTHBEARER\t{PARAMS}\tresp={oauthbearer(tokens.active, 'n,,')}"
    assert replay(dovecot.socket_path, [line]) == ["FAIL\t1"]
    assert replay(authbridge.socket_path, [line]) == [f"OK\t1\tuser={USER}"]
