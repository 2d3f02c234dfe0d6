"""A real Radicale (``[auth] type = dovecot``) against authbridge's policy per service.

Radicale never sends ``secured`` (it runs behind its own TLS or a proxy) and names its
service ``radicale``; it sends the HTTP client's address as ``rip``. authbridge's default
mode refuses plaintext on unsecured sessions, so the right password gets 401; the
README's recipe (``[policy.service.radicale]``: plaintext allowed from loopback) and
``--dovecot-compat`` give 207. A PROPFIND with basic auth through httpx, as a CalDAV
client sends it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import USERS
from tests.support import runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.radicale import RadicaleServer, require_radicale

pytestmark = pytest.mark.interop

#: The recipe of README.md ("Local HTTP and XMPP clients"), as a file would hold it.
RECIPE = """
[policy.service.radicale]
require_secured = false
allowed_networks = ["127.0.0.0/8", "::1/128"]
allow_no_rip = false
"""

USER = USERS["plainuser"]


@pytest.fixture(scope="module")
def radicale_available() -> None:
    require_radicale()


@contextlib.contextmanager
def _serve(base: Path, users_file: Path, config: str, args: list[str]) -> Iterator[RadicaleServer]:
    socket_path = base / "auth-client"
    extra = list(args)
    if config:
        (base / "authbridge.toml").write_text(config)
        extra = ["--config", str(base / "authbridge.toml"), *extra]
    with (
        AuthbridgeServer(users_file, socket_path, extra_args=extra),
        RadicaleServer(socket_path, base / "radicale") as radicale,
    ):
        yield radicale


@pytest.mark.parametrize(
    ("mode", "config", "args", "right"),
    [
        ("default", "", [], 401),
        ("recipe", RECIPE, [], 207),
        ("compat", "", ["--dovecot-compat"], 207),
    ],
)
def test_radicale_propfind_by_mode(
    radicale_available: None,
    interop_dir: Path,
    users_file: Path,
    mode: str,
    config: str,
    args: list[str],
    right: int,
) -> None:
    base = runtime_dir(interop_dir, f"radicale-{mode}")
    with _serve(base, users_file, config, ["--failure-delay", "0.2", *args]) as radicale:
        assert radicale.propfind(USER.name, USER.password) == right
        assert radicale.propfind(USER.name, "not-the-password") == 401
