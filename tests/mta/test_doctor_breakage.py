"""``authbridge doctor`` finds each classic mistake when it is made on purpose, and says
how to fix it: a key that does not match the certificate, an unreadable or broken store,
an invalid config, a socket the MTA user cannot reach, and the light Exim daemon."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.mta.conftest import AuthSocket
from tests.mta.test_doctor import _doctor, _exim_conf
from tests.support import require_binary, runtime_dir
from tests.support.tls import TlsFiles


def _config(base: Path, socket_path: Path, users: Path, extra: str = "") -> Path:
    path = base / "authbridge.toml"
    path.write_text(
        f'[server]\nsocket = "{socket_path}"\n\n[[store]]\ntype = "passwd-file"\n'
        f'path = "{users}"\n{extra}'
    )
    return path


def test_a_key_that_does_not_match_the_certificate(
    tmp_path: Path, auth_socket: AuthSocket, tls_files: TlsFiles, exim_bin: str
) -> None:
    base = runtime_dir(tmp_path, "keys")
    other_key = base / "other.key"
    subprocess.run(
        [require_binary("openssl"), "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", str(other_key)],
        check=True, capture_output=True,
    )  # fmt: skip
    os.chown(other_key, 0, __import__("grp").getgrnam("Debian-exim").gr_gid)
    other_key.chmod(0o640)
    mismatched = TlsFiles(cert=tls_files.cert, key=other_key)
    conf = _exim_conf(base, auth_socket.path, mismatched)
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(conf))
    assert code == 1
    assert any(
        line.startswith("FAIL")
        and "does not belong to the certificate" in line
        and "at a matching pair" in line
        for line in lines
    ), lines
    good = _exim_conf(runtime_dir(tmp_path, "good"), auth_socket.path, tls_files)
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(good))
    assert any("the TLS key matches the certificate" in line for line in lines), lines


def test_unreadable_and_broken_stores_and_a_bad_config(
    tmp_path: Path, auth_socket: AuthSocket
) -> None:
    base = runtime_dir(tmp_path, "stores")
    missing = _config(base, auth_socket.path, base / "no-such-users")
    code, lines = _doctor("--config", str(missing), "--no-exim")
    assert code == 1
    assert any(line.startswith("FAIL  store: cannot read") and "Fix:" in line for line in lines)

    broken_users = base / "users"
    broken_users.write_text("ok:{PLAIN}x\nbad:\x00\n")
    broken = _config(base, auth_socket.path, broken_users)
    code, lines = _doctor("--config", str(broken), "--no-exim")
    assert code == 1
    assert any(f"{broken_users}:2" in line and line.startswith("FAIL") for line in lines), lines

    bad = base / "bad.toml"
    bad.write_text("[policy]\nfailure_delay = 'soon'\n")
    code, lines = _doctor("--config", str(bad), "--no-exim")
    assert code == 1
    assert any(f"{bad}:2: policy.failure_delay" in line for line in lines), lines


def test_a_socket_the_exim_user_cannot_reach(
    tmp_path: Path, auth_socket: AuthSocket, tls_files: TlsFiles, exim_bin: str
) -> None:
    conf = _exim_conf(runtime_dir(tmp_path, "perm"), auth_socket.path, tls_files)
    mode = stat.S_IMODE(auth_socket.path.stat().st_mode)
    auth_socket.path.chmod(0o600)
    try:
        code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(conf))
    finally:
        auth_socket.path.chmod(mode)
    assert code == 1
    assert any(line.startswith("FAIL  exim:") and "cannot reach" in line for line in lines), lines


def test_the_light_exim_daemon_is_named_with_its_fix(
    tmp_path: Path, auth_socket: AuthSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exim4-daemon-light cannot be installed beside -heavy, so its `-bV` answer is
    # replayed by a script standing in for the binary: only this parse is under test.
    fake_bin = runtime_dir(tmp_path, "bin")
    fake = fake_bin / "exim"
    fake.write_text(
        "#!/bin/sh\necho 'Exim version 4.96 #2 built 01-Jan-2024'\n"
        "echo 'Authenticators: cram_md5 plaintext'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    code, lines = _doctor("--socket", str(auth_socket.path))
    assert code == 1
    assert any("apt-get install exim4-daemon-heavy" in line for line in lines), lines
