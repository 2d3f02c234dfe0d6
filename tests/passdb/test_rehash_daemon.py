"""Rehash on login in a real ``authbridge serve``: a {PLAIN-MD5} user logs in, the file then
holds {ARGON2ID}, the next login works, and Dovecot's own ``doveadm pw -t`` accepts the
new hash. The daemon's reload of its own write is quiet: no reload logged or counted.
Every wait is for the file, a log line or a metric, with a deadline.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.observability.helpers import Scrape, scrape
from tests.policy.authclient import AuthClient
from tests.support import free_tcp_port, require_binary, runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

MD5_OF_PASSWORD = "5f4dcc3b5aa765d61d8327deb882cf99"  # MD5("password")
REHASHES = "authbridge_rehashes_total"
RELOADS = "authbridge_store_reloads_total"


@pytest.fixture
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "rehash")


def _config(rundir: Path, mechanisms: str = '"plain", "login"') -> Path:
    config = rundir / "authbridge.toml"
    config.write_text(
        f'[server]\nmechanisms = [{mechanisms}]\n[rehash]\nenabled = true\nscheme = "ARGON2ID"\n'
    )
    return config


def _scrape_or_none(port: int) -> Scrape | None:
    try:
        return scrape(port)
    except OSError:  # not listening yet (urllib's URLError is an OSError)
        return None


def _argon2id(users: Path, user: str) -> str:
    match = re.search(rf"^{re.escape(user)}:(\{{ARGON2ID\}}[^:\s]+)", users.read_text(), re.M)
    assert match is not None
    return match.group(1)


def test_a_plain_md5_user_is_rehashed_to_argon2id_and_logs_in_again(rundir: Path) -> None:
    doveadm = require_binary("doveadm")
    users = rundir / "users"
    untouched = b"# mail users\r\nbob:{PLAIN}bobpass::::::\n"
    users.write_bytes(
        untouched + f"alice:{{PLAIN-MD5}}{MD5_OF_PASSWORD}:1000:1000::/home/a::\n".encode()
    )
    users.chmod(0o640)  # kept by the rewrite, whatever the umask
    port = free_tcp_port()
    args = ["--config", str(_config(rundir)), "--failure-delay", "0"]
    args += ["--metrics-listen", f"127.0.0.1:{port}"]
    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        # /metrics starts serving a moment after the auth socket is there.
        first = wait_for_value(lambda: _scrape_or_none(port), bool, what="/metrics answering")
        assert first is not None
        reloads = first.value(RELOADS, result="success")
        with AuthClient(server.socket_path) as client:
            assert client.plain(1, "alice", "password", "secured").startswith("OK\t1\t")
        data = wait_for_value(
            users.read_bytes, lambda d: b"{ARGON2ID}" in d, what="the ARGON2ID hash in the file"
        )
        assert data.startswith(untouched)  # CRLF and comment kept
        assert data.endswith(b":1000:1000::/home/a::\n")
        log = wait_for_text(server.stderr_text, "password rehashed")
        with AuthClient(server.socket_path) as client:  # the new hash serves at once
            assert client.plain(2, "alice", "password", "secured").startswith("OK\t2\t")
            assert client.plain(3, "alice", "wrong", "secured").startswith("FAIL\t3\t")
            assert client.plain(4, "bob", "bobpass", "secured").startswith("OK\t4\t")
        after = wait_for_value(
            lambda: scrape(port),
            lambda s: s.value(REHASHES, result="written") == 1,
            what="authbridge_rehashes_total{result=written} at 1",
        )
        log = server.stderr_text()
    assert after.value(RELOADS, result="success") == reloads  # its own write: no reload
    assert after.value(RELOADS, result="failure") == 0
    assert "store reloaded" not in log
    assert MD5_OF_PASSWORD not in log and "ARGON2ID}$" not in log and '"password"' not in log
    assert (users.stat().st_mode & 0o777) == 0o640
    new_hash = _argon2id(users, "alice")
    verified = subprocess.run(
        [doveadm, "pw", "-t", new_hash, "-p", "password"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "(verified)" in verified.stdout


def test_an_exim_file_user_is_rehashed(rundir: Path) -> None:
    users = rundir / "users"
    users.write_text("nobody:{PLAIN}x\n")
    exim = rundir / "exim-passwd"
    exim.write_text(f"# login:md5hash\nCarol@Example.org:{MD5_OF_PASSWORD}\n")
    args = ["--config", str(_config(rundir)), "--exim-file", str(exim)]
    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        with AuthClient(server.socket_path) as client:
            assert client.plain(1, "carol@example.org", "password", "secured").startswith("OK")
        text = wait_for_value(
            exim.read_text, lambda t: "{ARGON2ID}" in t, what="the ARGON2ID hash in the file"
        )
        assert text.startswith("# login:md5hash\nCarol@Example.org:{ARGON2ID}$argon2id$")
        with AuthClient(server.socket_path) as client:
            assert client.plain(2, "carol@example.org", "password", "secured").startswith("OK")


def test_a_plain_user_is_kept_while_cram_md5_is_enabled(rundir: Path) -> None:
    users = rundir / "users"
    users.write_text("dave:{PLAIN}davepass\n")
    args = ["--config", str(_config(rundir, '"plain", "login", "cram-md5"'))]
    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        with AuthClient(server.socket_path) as client:
            for request in (1, 2):
                assert client.plain(request, "dave", "davepass", "secured").startswith("OK")
        log = wait_for_text(server.stderr_text, "weak password kept")
    assert log.count("weak password kept") == 1
    assert "CRAM-MD5" in log
    assert users.read_text() == "dave:{PLAIN}davepass\n"
