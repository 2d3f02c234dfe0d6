"""``authbridge auth test -m OAUTHBEARER|XOAUTH2``: a token through a running authbridge
with ``[oauth]`` (provider: tests.support.oauth_provider), and the mechanisms absent
without it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.test_auth_test import auth_test
from tests.support import runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.oauth_provider import AUDIENCE, ISSUER, OAuthProvider, provider_fixture

USER = "alice@example.org"


provider = provider_fixture("module")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = runtime_dir(tmp_path_factory, "authtest-oauth")
    (made / "users.passwd").write_text("demo:{PLAIN}demopass::::::\n")
    return made


@pytest.fixture(scope="module")
def authbridge(base: Path, provider: OAuthProvider) -> Iterator[AuthbridgeServer]:
    config = base / "authbridge.toml"
    config.write_text(
        "[policy]\nfailure_delay = 0.0\n"
        f'[oauth]\njwks_url = "{provider.jwks_url}"\nissuer = "{ISSUER}"\n'
        f'audience = ["{AUDIENCE}"]\njwks_min_refresh = 0.0\n'
    )
    with AuthbridgeServer(
        base / "users.passwd",
        base / "ab.sock",
        mechanisms=("plain", "oauthbearer", "xoauth2"),
        extra_args=("--config", str(config)),
    ) as server:
        yield server


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_a_good_token_read_from_a_pipe_succeeds(
    authbridge: AuthbridgeServer, provider: OAuthProvider, mechanism: str
) -> None:
    token = provider.token(USER)
    done = auth_test("-a", str(authbridge.socket_path), "-m", mechanism, USER, stdin=token)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"passdb: {USER} auth succeeded\nextra fields:\n  user={USER}\n"
    assert token not in authbridge.stderr_text()


def test_an_expired_token_shows_the_error_status_and_exits_77(
    authbridge: AuthbridgeServer, provider: OAuthProvider
) -> None:
    token = provider.token(USER, exp=int(time.time()) - 3600)
    done = auth_test("-a", str(authbridge.socket_path), "-m", "OAUTHBEARER", USER, token)
    assert done.returncode == 77, done.stdout + done.stderr
    assert 'oauth error status: {"status":"invalid_token"}' in done.stdout
    assert f"passdb: {USER} auth failed" in done.stdout


def test_provider_down_exits_75(authbridge: AuthbridgeServer, provider: OAuthProvider) -> None:
    provider.rotate(f"k-{time.monotonic_ns()}")
    token = provider.token(USER, kid=provider.published[-1])
    with provider.down():
        done = auth_test("-a", str(authbridge.socket_path), "-m", "XOAUTH2", USER, token)
    assert done.returncode == 75, done.stdout + done.stderr


def test_without_oauth_the_mechanisms_are_not_offered(base: Path) -> None:
    with AuthbridgeServer(base / "users.passwd", base / "plain.sock") as server:
        done = auth_test("-a", str(server.socket_path), "-m", "OAUTHBEARER", USER, "tok")
    assert done.returncode == 75
    assert "does not offer OAUTHBEARER" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_reload_switches_to_the_new_provider(base: Path) -> None:
    """SIGHUP with another [oauth]: a new validator (new keys); the old one is closed."""
    first, second = OAuthProvider().start(), OAuthProvider().start()
    config = base / "reload.toml"

    def write(p: OAuthProvider) -> None:
        config.write_text(
            "[policy]\nfailure_delay = 0.0\n"
            f'[oauth]\njwks_url = "{p.jwks_url}"\nissuer = "{ISSUER}"\n'
        )

    try:
        write(first)
        with AuthbridgeServer(
            base / "users.passwd",
            base / "reload.sock",
            mechanisms=("oauthbearer",),
            extra_args=("--config", str(config)),
        ) as server:
            socket = str(server.socket_path)
            assert auth_test("-a", socket, "-m", "OAUTHBEARER", USER, first.token()).returncode == 0
            assert (
                auth_test("-a", socket, "-m", "OAUTHBEARER", USER, second.token()).returncode == 77
            )
            write(second)
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGHUP)
            wait_for_value(
                lambda: auth_test("-a", socket, "-m", "OAUTHBEARER", USER, second.token()),
                lambda done: done.returncode == 0,
                what="the reloaded [oauth] to accept the new provider's token",
            )
            assert (
                auth_test("-a", socket, "-m", "OAUTHBEARER", USER, first.token()).returncode == 77
            )
    finally:
        first.stop()
        second.stop()
