"""Differential: the auth-policy requests of authbridge against those of the REAL Dovecot 2.3.

Both servers point at the same policy server (tests/support/policy_server.py) with the
same nonce and settings; each login is done through both, and what the policy server
received (command, body byte for byte, pwhash included) and the reply on the socket
must be the same. Run with Dovecot's default request attributes and with a custom set
(other variables, nested keys, another hash and no truncation).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth
from tests.support.policy_server import ALLOW, Answer, PolicyServer, delay, reject
from tests.support.raw_auth import Reply, login

pytestmark = pytest.mark.interop

NONCE = "differential-nonce-7Qz"
USERS = "alice:{PLAIN}secret\ncram@example.org:{PLAIN}crampass\n"
_SESSIONS = itertools.count(1)

SETTINGS = {
    "default": {},
    "custom": {
        "request_attributes": (
            "login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} "
            "local/ip=%{lip} local/port=%{lport} who/user=%u who/domain=%d who/name=%n "
            "mech=%{mech} svc=%s session_id=%{session}"
        ),
        "hash_mech": "sha1",
        "hash_truncate": "0",
    },
}


@dataclass
class Pair:
    policy: PolicyServer
    sockets: dict[str, Path]


@pytest.fixture(scope="module", params=list(SETTINGS))
def pair(request: pytest.FixtureRequest, interop_dir: Path) -> Iterator[Pair]:
    settings: dict[str, str] = SETTINGS[request.param]
    base = runtime_dir(interop_dir, f"authpolicy-{request.param}")
    users = base / "users.passwd"
    users.write_text(USERS)
    users.chmod(0o644)
    with PolicyServer() as policy:
        dovecot_settings = [
            f"auth_policy_server_url = {policy.url}",
            f"auth_policy_hash_nonce = {NONCE}",
            *(f"auth_policy_{key} = {value}" for key, value in settings.items()),
        ]
        toml = "".join(
            f"{key} = {value if value.isdigit() else repr(value)}\n"
            for key, value in settings.items()
        ).replace("'", '"')
        config = base / "authbridge.toml"
        config.write_text(
            "[policy]\nfailure_delay = 0.0\n"
            f'[auth_policy]\nserver_url = "{policy.url}"\nhash_nonce = "{NONCE}"\n{toml}'
        )
        dovecot = DovecotAuth(
            users,
            base / "dovecot-auth",
            extra_settings=dovecot_settings,
            workdir=base / "dovecot",
        )
        authbridge = AuthbridgeServer(
            users,
            base / "authbridge-auth",
            extra_args=["--config", str(config), "--dovecot-compat"],
        )
        with dovecot, authbridge:
            yield Pair(
                policy, {"dovecot": dovecot.socket_path, "authbridge": base / "authbridge-auth"}
            )


@dataclass
class Seen:
    reply: str
    requests: list[tuple[str, bytes]]
    seconds: float


def _through(
    pair: Pair,
    server: str,
    answers: tuple[Answer, ...],
    user: str,
    password: str,
    mech: str,
    params: tuple[str, ...],
) -> Seen:
    session = f"d{next(_SESSIONS)}"
    pair.policy.answer(*answers, default=ALLOW)
    reply: Reply = login(
        pair.sockets[server], user, password, mech=mech, params=(*params, f"session={session}")
    )
    marker = f'"session_id":"{session}"'.encode()

    def mine() -> list[tuple[str, bytes]]:
        return [(r.command, r.raw) for r in pair.policy.requests if marker in r.raw]

    requests = wait_for_value(
        mine, lambda seen: any(c == "report" for c, _ in seen), what=f"{server}'s report"
    )
    # The session id differs between the two runs by design; everything else must not.
    normalised = [(c, raw.replace(session.encode(), b"SESSION")) for c, raw in requests]
    return Seen(reply.line, normalised, reply.seconds)


CASES = {
    "allow": ((), "alice", "secret", "PLAIN", ("service=smtp", "rip=192.0.2.7")),
    "allow-tls-uppercase": (
        (),
        "ALICE",
        "secret",
        "PLAIN",
        ("service=smtp", "rip=2001:db8::7", "lip=192.0.2.1", "lport=587", "secured=tls"),
    ),
    "wrong-password": ((), "alice", "wrong", "PLAIN", ("service=smtp", "rip=192.0.2.7")),
    "unknown-user": ((), "bob@example.org", "x", "PLAIN", ("service=smtp", "rip=192.0.2.7")),
    "reject": ((reject("Go away"),), "alice", "secret", "PLAIN", ("service=smtp", "rip=192.0.2.8")),
    "reject-no-msg": ((reject(""),), "alice", "secret", "PLAIN", ("service=smtp",)),
    "reject-after": (
        (ALLOW, reject("Not now")),
        "alice",
        "secret",
        "PLAIN",
        ("service=smtp", "rip=192.0.2.9"),
    ),
    "delay": ((delay(1),), "alice", "secret", "PLAIN", ("service=smtp", "rip=192.0.2.7")),
    "http-500": (
        (Answer(http=500), Answer(http=500)),
        "alice",
        "secret",
        "PLAIN",
        ("service=imap", "rip=192.0.2.7"),
    ),
    "garbage": (
        (Answer(raw=b"garbage"), Answer(raw=b"garbage")),
        "alice",
        "secret",
        "PLAIN",
        ("service=smtp", "rip=192.0.2.7"),
    ),
    "cram-wrong": ((), "cram@example.org", "nope", "CRAM-MD5", ("service=smtp", "rip=192.0.2.7")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_policy_requests_and_reply_as_dovecot(pair: Pair, case: str) -> None:
    answers, user, password, mech, params = CASES[case]
    dovecot = _through(pair, "dovecot", answers, user, password, mech, params)
    ours = _through(pair, "authbridge", answers, user, password, mech, params)
    assert ours.reply == dovecot.reply
    assert ours.requests == dovecot.requests
    if case == "delay":
        assert min(ours.seconds, dovecot.seconds) >= 1.0


def test_cram_md5_success_differs_only_by_dovecots_second_check(pair: Pair) -> None:
    """A documented difference: CRAM-MD5 compares the digest after authbridge's check
    pipeline, so authbridge asks before authentication only; Dovecot also asks after
    the success. The check before and the report are the same."""
    args = ((), "cram@example.org", "crampass", "CRAM-MD5", ("service=smtp", "rip=192.0.2.7"))
    dovecot = _through(pair, "dovecot", *args)
    ours = _through(pair, "authbridge", *args)
    assert ours.reply == dovecot.reply and ours.reply.startswith("OK\t")
    assert [c for c, _ in dovecot.requests] == ["allow", "allow", "report"]
    assert ours.requests == [dovecot.requests[0], dovecot.requests[2]]
