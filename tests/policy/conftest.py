"""Fixtures for the policy and abuse-resistance tests (issue 4).

Everything runs on loopback under one 0755 directory in /tmp (Exim's and Postfix's
unprivileged children must reach the sockets). authbridge runs in its own default mode,
not ``--dovecot-compat``: the policy gates are what these tests are about.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.interop.common import write_users_file
from tests.policy.users import EXTRA_USERS
from tests.support import require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.tls import TlsFiles, make_self_signed

StartBridge = Callable[..., AuthbridgeServer]


@pytest.fixture(scope="session")
def policy_dir() -> Iterator[Path]:
    base = runtime_dir(None, "authbridge-policy")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def policy_tls(policy_dir: Path) -> TlsFiles:
    require_binary("openssl")
    return make_self_signed(policy_dir / "tls")


@pytest.fixture(scope="session")
def policy_users(policy_dir: Path) -> Path:
    require_binary("doveadm")
    path = write_users_file(policy_dir / "users.passwd")
    with path.open("a") as handle:
        handle.write(EXTRA_USERS)
    return path


def start_bridge(
    base: Path,
    users: Path,
    name: str,
    config: str = "",
    extra_args: Sequence[str] = (),
) -> AuthbridgeServer:
    """Start ``authbridge serve`` with ``config`` (TOML text) in ``base/name``."""
    run = runtime_dir(base, name)
    args = list(extra_args)
    if config:
        config_path = run / "authbridge.toml"
        config_path.write_text(config)
        args = ["--config", str(config_path), *args]
    return AuthbridgeServer(users, run / "auth-client", extra_args=args).start()


@pytest.fixture
def bridge(policy_dir: Path, policy_users: Path) -> Iterator[StartBridge]:
    """A factory: ``bridge(name, config_toml, extra_args, users)``; all are stopped after."""
    started: list[AuthbridgeServer] = []

    def _start(
        name: str, config: str = "", extra_args: Sequence[str] = (), users: Path | None = None
    ) -> AuthbridgeServer:
        server = start_bridge(policy_dir, users or policy_users, name, config, extra_args)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()
