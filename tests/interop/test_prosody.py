"""Prosody with ``mod_auth_dovecot`` against the auth server: real XMPP logins.

Prosody offers XMPP clients exactly the mechanisms the auth server lists (PLAIN, LOGIN,
CRAM-MD5, SCRAM-SHA-1 and SCRAM-SHA-256 here) and relays every SASL step over one
long-lived connection (``service=xmpp``, no ``secured``, no ``rip``). Each login is a
slixmpp client up to a bound session. The matrix runs against authbridge (one process
and workers, ``--dovecot-compat``) and the real Dovecot 2.3; the last tests run
authbridge's default mode, whose plaintext rule refuses PLAIN and LOGIN from Prosody.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.common import (
    AUTHBRIDGE_ARGS,
    INTERNAL_FAILURE_USER,
    USERS,
    AuthServer,
    hash_password,
    write_users_file,
)
from tests.interop.conftest import AUTH_SERVERS
from tests.support import runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth
from tests.support.prosody import ProsodyServer, VirtualHost
from tests.support.xmpp_client import (
    LoginResult,
    abandon_after_first_answer,
    offered_mechanisms,
    xmpp_login,
)

pytestmark = pytest.mark.interop

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
#: Logins by node name (user@XMPP_DOMAIN asks the auth server for "user").
XMPP_DOMAIN = "xmpp.test"
#: auth_append_host: alice@example.com asks for "alice@example.com" (PLAIN only).
MAIL_DOMAIN = "example.com"
#: Users stored as SCRAM keys (doveadm pw -s SCRAM-SHA-...), with SCRAM's special characters.
SCRAM_USERS = {"scram1user": "SCRAM-SHA-1", "scram256user": "SCRAM-SHA-256"}
SCRAM_PASSWORD = "scram pass, with = signs"


@dataclass(frozen=True)
class Chat:
    """An auth server and the Prosody that asks it."""

    server: AuthServer
    prosody: ProsodyServer

    def login(self, user: str, password: str, mechanism: str) -> LoginResult:
        domain = MAIL_DOMAIN if "@" in user else XMPP_DOMAIN
        jid = user if "@" in user else f"{user}@{domain}"
        return xmpp_login(self.prosody.port, jid, password, mechanism)


def _users_file(base: Path) -> Path:
    path = write_users_file(base / "users.passwd")
    with path.open("a") as users:
        for name, scheme in SCRAM_USERS.items():
            users.write(f"{name}:{hash_password(scheme, SCRAM_PASSWORD)}::::::\n")
    return path


def authentications(server: AuthServer) -> list[dict[str, Any]]:
    """authbridge's ``authentication`` log events so far."""
    return [
        json.loads(line)
        for line in server.log_text().splitlines()
        # (a line still being written does not end with "}" yet)
        if line.startswith("{") and line.endswith("}") and '"authentication"' in line
    ]


def _prosody(base: Path, socket_path: Path) -> ProsodyServer:
    hosts = (VirtualHost(XMPP_DOMAIN), VirtualHost(MAIL_DOMAIN, append_host=True))
    return ProsodyServer(socket_path, base / "prosody", hosts=hosts)


@pytest.fixture(scope="module", params=AUTH_SERVERS)
def chat(request: pytest.FixtureRequest, interop_dir: Path) -> Iterator[Chat]:
    kind: str = request.param
    base = runtime_dir(interop_dir, f"prosody-{kind}")
    users = _users_file(base)
    socket_path = base / "auth-client"
    mechanisms = [mech.lower() for mech in MECHANISMS]
    if kind == "dovecot":
        with (
            DovecotAuth(users, socket_path, mechanisms, workdir=base / "dovecot") as dovecot,
            _prosody(base, socket_path) as prosody,
        ):
            yield Chat(AuthServer(kind, socket_path, dovecot.log_text), prosody)
    else:
        args = [*AUTHBRIDGE_ARGS, "--workers", "2" if kind == "authbridge-workers" else "1"]
        with (
            AuthbridgeServer(users, socket_path, mechanisms, extra_args=args) as bridge,
            _prosody(base, socket_path) as prosody,
        ):
            yield Chat(AuthServer(kind, socket_path, bridge.stderr_text), prosody)


def test_prosody_offers_every_mechanism_the_server_lists(chat: Chat) -> None:
    offered = offered_mechanisms(chat.prosody.port, XMPP_DOMAIN)
    assert sorted(offered) == sorted(MECHANISMS), chat.prosody.log_tail()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_right_password_logs_in(chat: Chat, mechanism: str) -> None:
    result = chat.login("plainuser", USERS["plainuser"].password, mechanism)
    assert result.ok, (result, chat.prosody.log_tail())


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_is_not_authorized(chat: Chat, mechanism: str) -> None:
    result = chat.login("plainuser", "wrong password", mechanism)
    assert result == LoginResult(False, "not-authorized", ""), result


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_unknown_user_is_not_authorized(chat: Chat, mechanism: str) -> None:
    result = chat.login("nosuchuser", "whatever", mechanism)
    assert not result.ok and result.condition == "not-authorized", result


@pytest.mark.parametrize(
    ("user", "mechanism", "ok"),
    [
        # A crypt hash checks a plaintext password and nothing else.
        ("sha512user", "LOGIN", True),
        ("sha512user", "CRAM-MD5", False),
        ("sha512user", "SCRAM-SHA-256", False),
        # A CRAM-MD5 key serves CRAM-MD5 (and plaintext mechanisms), not SCRAM.
        ("cramuser", "CRAM-MD5", True),
        ("cramuser", "SCRAM-SHA-1", False),
        # SCRAM keys serve their own SCRAM and plaintext mechanisms only.
        ("scram256user", "SCRAM-SHA-256", True),
        ("scram256user", "PLAIN", True),
        ("scram256user", "SCRAM-SHA-1", False),
        ("scram1user", "SCRAM-SHA-1", True),
    ],
)
def test_stored_scheme_decides_which_mechanisms_work(
    chat: Chat, user: str, mechanism: str, ok: bool
) -> None:
    password = SCRAM_PASSWORD if user in SCRAM_USERS else USERS[user].password
    result = chat.login(user, password, mechanism)
    assert result.ok is ok, (result, chat.prosody.log_tail())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_password_with_spaces_and_quotes(chat: Chat, mechanism: str) -> None:
    result = chat.login("spaceuser", USERS["spaceuser"].password, mechanism)
    assert result.ok, result


def test_append_host_asks_for_the_full_address(chat: Chat) -> None:
    """``auth_append_host``: Prosody's own PLAIN, checked as ``alice@example.com``."""
    assert offered_mechanisms(chat.prosody.port, MAIL_DOMAIN) == ["PLAIN"]
    good = chat.login("alice@example.com", USERS["alice@example.com"].password, "PLAIN")
    assert good.ok, (good, chat.prosody.log_tail())
    assert not chat.login("alice@example.com", "wrong", "PLAIN").ok


def test_logins_share_one_connection_with_rising_ids(chat: Chat) -> None:
    """mod_auth_dovecot keeps one connection per host: FAILs in between must not break it."""
    for password in ("wrong", USERS["plainuser"].password, "wrong again"):
        chat.login("plainuser", password, "PLAIN")
    assert chat.login("plainuser", USERS["plainuser"].password, "SCRAM-SHA-1").ok
    if chat.server.kind == "dovecot":
        text = wait_for_text(chat.server.log_text, "PLAIN\tservice=xmpp\tresp=", count=3)
        # One connection for each virtual host's mod_auth_dovecot, none per login.
        assert text.count("auth client connected") <= 2, text
        return
    # A worker may log its event a moment after its reply went out.
    events = wait_for_value(
        lambda: authentications(chat.server),
        lambda found: sum(event["user"] == "plainuser" for event in found) >= 4,
        what="the four logins in the auth log",
    )
    mine = [event for event in events if event["user"] == "plainuser"]
    requests = [event["request"] for event in mine]
    assert requests == sorted(set(requests)), mine
    assert len({event["cuid"] for event in mine}) == 1, mine
    # One connection for each virtual host's mod_auth_dovecot, none per login.
    assert len({event["cuid"] for event in events}) <= 2, events


@pytest.mark.parametrize(
    ("mechanism", "initial"),
    [("SCRAM-SHA-256", b"n,,n=plainuser,r=abandonednonce0123"), ("LOGIN", b"")],
)
def test_abandoned_exchange_does_not_disturb_the_next_login(
    chat: Chat, mechanism: str, initial: bytes
) -> None:
    """A client that leaves mid-exchange: Prosody never tells the auth server, whose
    request stays open on the shared connection; the next login must not notice."""
    port = chat.prosody.port
    assert abandon_after_first_answer(port, XMPP_DOMAIN, mechanism, initial) == "challenge"
    assert chat.login("plainuser", USERS["plainuser"].password, mechanism).ok
    assert chat.login("plainuser", "wrong", "PLAIN") == LoginResult(False, "not-authorized", "")


def test_internal_failure_is_a_plain_refusal(chat: Chat) -> None:
    """``FAIL code=temp_fail`` (Dovecot 2.3, and authbridge in compat mode): Prosody
    looks for 2.2's ``temp`` flag only, so the client sees not-authorized."""
    result = chat.login(INTERNAL_FAILURE_USER, "whatever", "CRAM-MD5")
    assert result == LoginResult(False, "not-authorized", ""), result
    assert chat.login("plainuser", USERS["plainuser"].password, "CRAM-MD5").ok


# -- authbridge's default mode: the plaintext rule applies to Prosody -------------------


@pytest.fixture(scope="module")
def default_chat(interop_dir: Path) -> Iterator[Chat]:
    base = runtime_dir(interop_dir, "prosody-default")
    users = _users_file(base)
    socket_path = base / "auth-client"
    mechanisms = [mech.lower() for mech in MECHANISMS]
    with (
        AuthbridgeServer(users, socket_path, mechanisms, extra_args=["--failure-delay", "0"]) as ab,
        _prosody(base, socket_path) as prosody,
    ):
        yield Chat(AuthServer("authbridge", socket_path, ab.stderr_text), prosody)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_default_mode_refuses_plaintext_from_prosody(default_chat: Chat, mechanism: str) -> None:
    """mod_auth_dovecot never says ``secured``: Prosody shows our reason to the client."""
    result = default_chat.login("plainuser", USERS["plainuser"].password, mechanism)
    assert not result.ok and result.condition == "not-authorized", result
    assert result.text.startswith("Plaintext authentication disallowed"), result


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_default_mode_allows_challenge_response(default_chat: Chat, mechanism: str) -> None:
    result = default_chat.login("plainuser", USERS["plainuser"].password, mechanism)
    assert result.ok, (result, default_chat.prosody.log_tail())


def test_default_mode_internal_failure_closes_and_prosody_reconnects(default_chat: Chat) -> None:
    """tempfail_disconnects closes Prosody's shared connection; it reconnects at the next
    login (the failed one is refused, as with Dovecot's FAIL)."""
    result = default_chat.login(INTERNAL_FAILURE_USER, "whatever", "CRAM-MD5")
    assert not result.ok and result.condition == "not-authorized", result
    for mechanism in ("SCRAM-SHA-256", "CRAM-MD5"):
        good = default_chat.login("plainuser", USERS["plainuser"].password, mechanism)
        assert good.ok, (good, default_chat.prosody.log_tail())
    events = wait_for_value(
        lambda: authentications(default_chat.server),
        lambda found: sum(event["user"] == "plainuser" for event in found) >= 2,
        what="the logins after the internal failure",
    )
    (failed,) = [event for event in events if event["result"] == "tempfail"]
    after = {event["cuid"] for event in events if event["request"] > failed["request"]}
    assert after and failed["cuid"] not in after, events


# -- the README's recipe for a local XMPP server: [policy.service.xmpp] ------------------

XMPP_RECIPE = "[policy.service.xmpp]\nrequire_secured = false\n"


def test_the_readme_s_xmpp_recipe_lets_prosody_s_plaintext_in_and_keeps_smtp_strict(
    interop_dir: Path,
) -> None:
    from tests.policy.authclient import AuthClient

    assert XMPP_RECIPE in (Path(__file__).parents[2] / "README.md").read_text()
    base = runtime_dir(interop_dir, "prosody-recipe")
    users = _users_file(base)
    (base / "authbridge.toml").write_text(XMPP_RECIPE)
    socket_path = base / "auth-client"
    args = ["--config", str(base / "authbridge.toml"), "--failure-delay", "0"]
    mechanisms = [mech.lower() for mech in MECHANISMS]
    with (
        AuthbridgeServer(users, socket_path, mechanisms, extra_args=args) as bridge,
        _prosody(base, socket_path) as prosody,
    ):
        chat = Chat(AuthServer("authbridge", socket_path, bridge.stderr_text), prosody)
        for mechanism in ("PLAIN", "LOGIN"):
            result = chat.login("plainuser", USERS["plainuser"].password, mechanism)
            assert result.ok, (result, prosody.log_tail())
        with AuthClient(socket_path) as client:  # an MTA's unsecured PLAIN: still refused
            reply = client.plain(1, "plainuser", USERS["plainuser"].password)
        assert reply.startswith("FAIL\t1\t") and "Plaintext authentication" in reply
