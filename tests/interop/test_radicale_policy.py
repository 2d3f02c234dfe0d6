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
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.interop.common import USERS
from tests.support import free_tcp_port, missing_peer, read_text_or_empty, runtime_dir, wait_until
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import stop_process

pytestmark = pytest.mark.interop

#: The recipe of README.md ("Local HTTP and XMPP clients"), as a file would hold it.
RECIPE = """
[policy.service.radicale]
require_secured = false
allowed_networks = ["127.0.0.0/8", "::1/128"]
allow_no_rip = false
"""

USER = USERS["plainuser"]


class Radicale:
    """``python -m radicale`` on 127.0.0.1:``port``, authenticating through ``socket``."""

    def __init__(self, base: Path, socket_path: Path) -> None:
        self.port = free_tcp_port()
        self.log = base / "radicale.log"
        config = base / "radicale.conf"
        config.write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{self.port}\n"
            "[auth]\n"
            "type = dovecot\n"
            f"dovecot_socket = {socket_path}\n"
            "[storage]\n"
            f"filesystem_folder = {base / 'collections'}\n"
            "[rights]\n"
            "type = owner_only\n"
            "[web]\n"
            "type = none\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        wait_until(self._answers, timeout=30, what="Radicale answering HTTP")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{USER.name}/"

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Radicale exited: {read_text_or_empty(self.log)}")
        try:
            httpx.request("OPTIONS", f"http://127.0.0.1:{self.port}/", timeout=2)
        except httpx.TransportError:
            return False
        return True

    def propfind(self, password: str) -> int:
        response = httpx.request(
            "PROPFIND",
            self.url,
            auth=(USER.name, password),
            headers={"Depth": "0"},
            timeout=20,
        )
        return response.status_code

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def radicale_available() -> None:
    if importlib.util.find_spec("radicale") is None:
        missing_peer("Radicale is not installed (pip install radicale)")


@contextlib.contextmanager
def _serve(base: Path, users_file: Path, config: str, args: list[str]) -> Iterator[Radicale]:
    socket_path = base / "auth-client"
    extra = list(args)
    if config:
        (base / "authbridge.toml").write_text(config)
        extra = ["--config", str(base / "authbridge.toml"), *extra]
    with AuthbridgeServer(users_file, socket_path, extra_args=extra):
        radicale = Radicale(base, socket_path)
        try:
            yield radicale
        finally:
            radicale.stop()


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
        assert radicale.propfind(USER.password) == right
        assert radicale.propfind("not-the-password") == 401
