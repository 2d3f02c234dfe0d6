"""Rehash on login behind the real MTAs: Exim 4 and Postfix in front of one authbridge.

A user stored as ``{PLAIN-MD5}`` in a passwd-file and a user of an Exim ``login:md5hash``
file (the seed article's format) log in through SMTP AUTH; the files then hold
``{ARGON2ID}`` hashes (waited for with a deadline), and a second SMTP login with the
same password works. A missing Exim, Postfix or swaks fails the test under CI=true.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.common import AUTHBRIDGE_ARGS
from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximDaemon, write_exim_config
from tests.support.postfix import PostfixMaster, write_postfix_config
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

MD5_OF_PASSWORD = "5f4dcc3b5aa765d61d8327deb882cf99"  # MD5("password"), as Exim's {md5}


@dataclass(frozen=True)
class Rig:
    server: AuthbridgeServer
    passwd: Path
    exim_file: Path
    exim: EximDaemon
    postfix: PostfixMaster


@pytest.fixture(scope="module")
def rig(interop_dir: Path, tls_files: TlsFiles) -> Iterator[Rig]:
    require_binary("exim")
    require_binary("swaks")
    base = runtime_dir(interop_dir, "rehash")
    passwd = base / "users"
    passwd.write_text(
        "# passwd-file users\n"
        f"exim-md5:{{PLAIN-MD5}}{MD5_OF_PASSWORD}::::::\n"
        f"postfix-md5:{{PLAIN-MD5}}{MD5_OF_PASSWORD}::::::\n"
    )
    exim_file = base / "exim-passwd"
    exim_file.write_text(
        f"# /etc/exim4/passwd, login:md5hash\nEve@Example.org:{MD5_OF_PASSWORD}\n"
        f"frank@example.org:{{md5}}{MD5_OF_PASSWORD}\n"
    )
    config = base / "authbridge.toml"
    config.write_text('[rehash]\nenabled = true\nscheme = "ARGON2ID"\n')
    args = [*AUTHBRIDGE_ARGS, "--config", str(config), "--exim-file", str(exim_file)]
    with AuthbridgeServer(passwd, base / "auth-client", extra_args=args) as server:
        exim_config = write_exim_config(
            base / "exim", auth_socket=server.socket_path, port=free_tcp_port(), tls=tls_files
        )
        postfix_config = write_postfix_config(
            base / "postfix", auth_socket=server.socket_path, port=free_tcp_port(), tls=tls_files
        )
        with EximDaemon(exim_config) as exim, PostfixMaster(postfix_config) as postfix:
            yield Rig(server, passwd, exim_file, exim, postfix)


def _argon2id_of(path: Path, key: str) -> str:
    """``key``'s {ARGON2ID} value once the daemon wrote it (deadline: 20 s)."""
    pattern = re.compile(rf"^{re.escape(key)}:(\{{ARGON2ID\}}[^:\s]+)", re.M)
    text = wait_for_value(
        path.read_text,
        lambda t: pattern.search(t) is not None,
        timeout=20.0,
        what=f"an ARGON2ID hash for {key} in {path.name}",
    )
    match = pattern.search(text)
    assert match is not None
    return match.group(1)


def _login(server: str, mech: str, user: str) -> None:
    result = run_swaks(server=server, auth=mech, user=user, password="password")
    assert result.auth_code == 235, result.transcript


@pytest.mark.parametrize("mta", ["exim", "postfix"])
def test_a_plain_md5_user_is_rehashed_through_smtp_auth(rig: Rig, mta: str) -> None:
    server = rig.exim.server if mta == "exim" else rig.postfix.server
    user = f"{mta}-md5"
    _login(server, "PLAIN", user)
    new_hash = _argon2id_of(rig.passwd, user)
    _login(server, "LOGIN", user)  # the new hash serves the next login
    assert _doveadm_verifies(new_hash)
    assert rig.passwd.read_text().startswith("# passwd-file users\n")


@pytest.mark.parametrize(("mta", "user", "key"), [
    ("exim", "eve@example.org", "Eve@Example.org"),
    ("postfix", "frank@example.org", "frank@example.org"),
])  # fmt: skip
def test_an_exim_md5_file_user_is_rehashed_through_smtp_auth(
    rig: Rig, mta: str, user: str, key: str
) -> None:
    server = rig.exim.server if mta == "exim" else rig.postfix.server
    _login(server, "LOGIN", user)
    new_hash = _argon2id_of(rig.exim_file, key)
    _login(server, "PLAIN", user)
    assert _doveadm_verifies(new_hash)
    assert rig.exim_file.read_text().startswith("# /etc/exim4/passwd, login:md5hash\n")


def test_the_daemon_logged_no_hash_and_no_reload(rig: Rig) -> None:
    _login(rig.exim.server, "PLAIN", "exim-md5")  # at least one rehash has happened
    log = rig.server.stderr_text()
    assert "password rehashed" in log
    assert "store reloaded" not in log
    assert MD5_OF_PASSWORD not in log and "$argon2id$" not in log


def _doveadm_verifies(stored: str) -> bool:
    doveadm = require_binary("doveadm")
    result = subprocess.run(
        [doveadm, "pw", "-t", stored, "-p", "password"], capture_output=True, text=True, timeout=60
    )
    return result.returncode == 0 and "(verified)" in result.stdout
