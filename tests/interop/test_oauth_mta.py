"""OAUTHBEARER and XOAUTH2 through the REAL Exim and Postfix (issue 21).

An SMTP client (smtplib, after STARTTLS) sends bearer tokens that a provider of the
test suite (tests.support.oauth_provider: keys generated here, served as JWKS over
HTTP; RFC 7662 introspection) issued; authbridge with ``[oauth]`` validates them
behind each MTA. Exim's authenticators are the ones ``authbridge emit-exim-config``
writes for that configuration. Good tokens get 235; expired, wrong-audience,
wrong-issuer, unknown-kid and tampered ones get RFC 7628's error status (334 with the
JSON) and, after the client's dummy answer, 535; the provider down gives 435 (Exim) and
454 (Postfix); a key rotated in during a load of logins loses none of them. No token
ever shows in authbridge's log.
"""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest

from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximDaemon, check_exim_config, write_exim_config
from tests.support.oauth_provider import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    OAuthProvider,
    provider_fixture,
)
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

USER = "alice@example.org"


provider = provider_fixture("module")


@pytest.fixture(scope="module")
def config_file(provider: OAuthProvider, interop_dir: Path) -> Path:
    base = runtime_dir(interop_dir, "authbridge-oauth")
    path = base / "authbridge.toml"
    path.write_text(
        f'[server]\nsocket = "{base / "auth-client"}"\n'
        "[policy]\nfailure_delay = 0.0\n[penalty]\nenabled = false\n"
        "[oauth]\n"
        f'jwks_url = "{provider.jwks_url}"\n'
        f'introspection_url = "{provider.introspection_url}"\n'
        f'client_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
        f'issuer = "{ISSUER}"\naudience = ["{AUDIENCE}"]\n'
        "jwks_min_refresh = 0.2\ncache_ttl = 0.0\nnegative_ttl = 0.0\n"
    )
    return path


@pytest.fixture(scope="module")
def authbridge(
    config_file: Path, interop_dir: Path, users_file: Path
) -> Iterator[AuthbridgeServer]:
    socket = config_file.parent / "auth-client"
    with AuthbridgeServer(
        users_file,
        socket,
        mechanisms=("plain", "login", "oauthbearer", "xoauth2"),
        extra_args=["--config", str(config_file)],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def exim(
    authbridge: AuthbridgeServer, config_file: Path, interop_dir: Path, tls_files: TlsFiles
) -> Iterator[EximDaemon]:
    require_binary("exim")
    base = runtime_dir(interop_dir, "exim-oauth")
    config = write_exim_config(
        base, auth_socket=authbridge.socket_path, port=free_tcp_port(), tls=tls_files
    )
    # The authenticators emit-exim-config writes for this authbridge configuration.
    emitted = subprocess.run(
        [
            *(sys.executable, "-m", "authbridge", "emit-exim-config"),
            *("--config", str(config_file), "--section", "auth"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "public_name = OAUTHBEARER" in emitted and "public_name = XOAUTH2" in emitted
    text = config.path.read_text()
    head = text[: text.index("begin authenticators")]
    config.path.write_text(head + "begin authenticators\n\n" + emitted)
    check_exim_config(config)
    with EximDaemon(config) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def postfix(
    authbridge: AuthbridgeServer, interop_dir: Path, tls_files: TlsFiles
) -> Iterator[PostfixMaster]:
    base = runtime_dir(interop_dir, "postfix-oauth")
    config = write_postfix_config(
        base, auth_socket=authbridge.socket_path, port=free_tcp_port(), tls=tls_files
    )
    with PostfixMaster(config) as master:
        yield master


@dataclass
class Attempt:
    code: int
    text: str
    #: The server's challenges (decoded), e.g. RFC 7628's error status.
    challenges: list[bytes] = field(default_factory=list)


def oauthbearer(token: str, authzid: str = USER) -> Callable[[bytes | None], str]:
    def answer(challenge: bytes | None = None) -> str:
        if challenge is None:
            pairs = f"host=mx.interop.test\x01port=25\x01auth=Bearer {token}"
            return f"n,a={authzid},\x01{pairs}\x01\x01"
        return "\x01"  # RFC 7628's dummy answer to the error status

    return answer


def xoauth2(token: str, user: str = USER) -> Callable[[bytes | None], str]:
    def answer(challenge: bytes | None = None) -> str:
        if challenge is None:
            return f"user={user}\x01auth=Bearer {token}\x01\x01"
        return ""  # what XOAUTH2 clients answer to the error status

    return answer


def login(server: str, mechanism: str, answer: Callable[[bytes | None], str]) -> Attempt:
    host, port = server.rsplit(":", 1)
    challenges: list[bytes] = []

    def recording(challenge: bytes | None = None) -> str:
        if challenge is not None:
            challenges.append(challenge)
        return answer(challenge)

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(host, int(port), timeout=20) as smtp:
        smtp.ehlo("client.interop.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.interop.test")
        assert mechanism in smtp.esmtp_features.get("auth", ""), smtp.esmtp_features
        text: bytes | str
        try:
            code, text = smtp.auth(mechanism, recording, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        except smtplib.SMTPServerDisconnected:
            return Attempt(0, "disconnected", challenges)
    shown = text.decode(errors="replace") if isinstance(text, bytes) else text
    return Attempt(code, shown, challenges)


MTAS = ["exim", "postfix"]


#: What each MTA answers when authbridge closes for a temporary failure.
TEMPFAIL = {"exim": 435, "postfix": 454}


@pytest.fixture(params=MTAS)
def mta(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, host:port) of a running MTA in front of authbridge."""
    daemon = request.getfixturevalue(request.param)
    return request.param, str(daemon.server)


@pytest.fixture
def server(mta: tuple[str, str]) -> str:
    return mta[1]


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("kid", ["k1", "k2"])
def test_good_jwt_logs_in(server: str, provider: OAuthProvider, mechanism: str, kid: str) -> None:
    make = oauthbearer if mechanism == "OAUTHBEARER" else xoauth2
    attempt = login(server, mechanism, make(provider.token(USER, kid=kid)))
    assert attempt.code == 235, attempt
    assert attempt.challenges == []


def test_opaque_token_logs_in_by_introspection(server: str, provider: OAuthProvider) -> None:
    before = provider.introspection_requests
    attempt = login(server, "OAUTHBEARER", oauthbearer(provider.opaque(USER)))
    assert attempt.code == 235, attempt
    assert provider.introspection_requests == before + 1


def _bad_tokens(provider: OAuthProvider) -> dict[str, str]:
    header, payload, signature = provider.token(USER).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "mallory@example.org"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return {
        "expired": provider.token(USER, exp=int(time.time()) - 3600),
        "wrong-audience": provider.token(USER, aud="imap"),
        "wrong-issuer": provider.token(USER, iss="https://evil.example.net/"),
        "unknown-kid": jwt.encode(
            provider.claims(USER),
            provider.keys["k1"].private,
            algorithm="RS256",
            headers={"kid": "nobody-knows"},
        ),
        "tampered": f"{header}.{forged}.{signature}",
        "inactive-opaque": provider.opaque(USER, active=False),
    }


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_bad_tokens_get_the_error_status_then_535(
    server: str, provider: OAuthProvider, authbridge: AuthbridgeServer, mechanism: str
) -> None:
    make = oauthbearer if mechanism == "OAUTHBEARER" else xoauth2
    for name, token in _bad_tokens(provider).items():
        attempt = login(server, mechanism, make(token))
        assert attempt.code == 535, (name, attempt)
        (status,) = attempt.challenges
        expected = "invalid_token" if mechanism == "OAUTHBEARER" else "401"
        assert json.loads(status)["status"] == expected, (name, status)
    log = authbridge.stderr_text()
    for token in _bad_tokens(provider).values():
        for part in token.split("."):
            assert part not in log


def test_token_of_another_user_than_the_authzid_is_refused(
    server: str, provider: OAuthProvider
) -> None:
    attempt = login(server, "OAUTHBEARER", oauthbearer(provider.token("bob@example.org")))
    assert attempt.code == 535, attempt
    assert len(attempt.challenges) == 1


def test_provider_down_is_a_temporary_failure(
    mta: tuple[str, str], provider: OAuthProvider
) -> None:
    name, server = mta
    with provider.down():
        # A kid not cached yet needs the JWKS; an opaque token needs introspection.
        provider.rotate(f"down-{time.monotonic_ns()}")
        new_kid = provider.published[-1]
        for token in (provider.token(USER, kid=new_kid), provider.opaque(USER)):
            # Within jwks_min_refresh of another test's unknown kid, the kid is just
            # unknown (535): the rate limit's window passes within the deadline.
            attempt = wait_for_value(
                lambda t=token: login(server, "OAUTHBEARER", oauthbearer(t)),  # type: ignore[misc]
                lambda a: a.code != 535,
                timeout=5,
                what="the rate limit's window to pass",
            )
            assert attempt.code == TEMPFAIL[name], attempt
            assert attempt.challenges == []


def test_key_rotation_during_load_loses_no_login(server: str, provider: OAuthProvider) -> None:
    old = [provider.token(f"user{i}@example.org", kid="k1") for i in range(30)]
    provider.rotate(f"rot-{time.monotonic_ns()}")
    new_kid = provider.published[-1]
    new = [provider.token(f"user{i}@example.org", kid=new_kid) for i in range(30)]
    tokens = [t for pair in zip(old, new, strict=True) for t in pair]
    users = [f"user{i // 2}@example.org" for i in range(len(tokens))]
    before = provider.jwks_requests
    with ThreadPoolExecutor(max_workers=8) as pool:
        attempts = list(
            pool.map(
                lambda pair: login(server, "XOAUTH2", xoauth2(pair[0], pair[1])),
                zip(tokens, users, strict=True),
            )
        )
    assert [a.code for a in attempts] == [235] * len(tokens), attempts
    # The new key was fetched once or a few times (rate limited), not per login.
    assert provider.jwks_requests - before <= 3
