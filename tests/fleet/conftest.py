"""Fixtures for the fleet tests (issue 18): one real redis-server, authbridge instances
naming it, 200 users with plaintext-scheme passwords (cheap checks: the timing here is
the penalty's, not the hash's)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.redis import RedisServer

USERS = 200
Start = Callable[..., AuthbridgeServer]


def password(n: int) -> str:
    return f"right-{n}-horse"


def user(n: int) -> str:
    return f"user{n}@example.org"


@pytest.fixture(scope="module")
def fleet_dir() -> Iterator[Path]:
    base = runtime_dir(None, "authbridge-fleet")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet_users(fleet_dir: Path) -> Path:
    path = fleet_dir / "users.passwd"
    path.write_text("".join(f"{user(n)}:{{PLAIN}}{password(n)}::::::\n" for n in range(USERS)))
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def fleet_key(fleet_dir: Path) -> Path:
    path = fleet_dir / "fingerprint.key"
    path.write_text("a fleet secret, the same on every host\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def redis_server(fleet_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(runtime_dir(fleet_dir, "redis")) as server:
        yield server


def fleet_config(redis: RedisServer, key: Path, extra: str = "", backend: str = "redis") -> str:
    return f"""\
[policy]
failure_delay = 0
[penalty]
backend = "{backend}"
redis_url = "{redis.url}"
key_prefix = "test:"
password_fingerprint_key_file = "{key}"
{extra}
"""


@pytest.fixture
def start(fleet_dir: Path, fleet_users: Path) -> Iterator[Start]:
    """``start(name, config_toml, extra_args)``: an authbridge, stopped after the test."""
    started: list[AuthbridgeServer] = []

    def _start(name: str, config: str, extra_args: Sequence[str] = ()) -> AuthbridgeServer:
        run = runtime_dir(fleet_dir, name)
        (run / "authbridge.toml").write_text(config)
        args = ["--config", str(run / "authbridge.toml"), *extra_args]
        server = AuthbridgeServer(fleet_users, run / "auth-client", extra_args=args).start()
        started.append(server)
        return server

    try:
        yield _start
    finally:
        with contextlib.ExitStack() as stops:  # every server stops even if one stop fails
            for server in started:
                stops.callback(server.stop)
