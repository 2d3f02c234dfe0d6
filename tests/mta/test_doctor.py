"""``doctor`` against a live authbridge and configs read back by the real exim/postconf."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from authbridge.mta import doctor
from tests.mta.conftest import AuthSocket, emit
from tests.mta.exim_helpers import exim_owned_dirs
from tests.mta.postfix_helpers import emit_postfix
from tests.support import free_tcp_port, runtime_dir
from tests.support.postfix import LIB_DIR, POSTCONF, require_postfix
from tests.support.tls import TlsFiles


def _doctor(*argv: str) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = doctor.run(parser.parse_args(list(argv)))
    return code, out.getvalue().splitlines()


def _exim_conf(base: Path, socket_path: Path, tls: TlsFiles, *extra: str) -> Path:
    exim_owned_dirs(base / "spool")
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf), "--socket", str(socket_path),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--spool-dir", str(base / "spool"), *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return conf


def test_healthy_setup_is_all_ok(
    tmp_path: Path,
    auth_socket: AuthSocket,
    tls_files: TlsFiles,
    exim_bin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_postfix()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(LIB_DIR))
    conf = _exim_conf(runtime_dir(tmp_path, "exim"), auth_socket.path, tls_files)
    postfix = emit_postfix(
        runtime_dir(tmp_path, "postfix"), auth_socket.path, tls_files, free_tcp_port(),
        "--socket", str(auth_socket.path),
    )  # fmt: skip
    code, lines = _doctor(
        "--socket", str(auth_socket.path), "--exim-config", str(conf),
        "--postfix-dir", str(postfix.config.conf_dir), "--postconf", str(POSTCONF),
    )  # fmt: skip
    assert code == 0, lines
    assert all(line.startswith("ok") for line in lines), lines
    assert (
        f"ok    authbridge socket {auth_socket.path}: protocol 1.2, mechanisms PLAIN" in (lines[0])
    )
    assert any("exim: authbridge_cram_md5 (CRAM-MD5)" in line for line in lines)
    assert any("Debian-exim can read the TLS key" in line for line in lines)
    assert any(line.startswith("ok    postfix: smtpd_sasl_path") for line in lines)


def test_mismatches_are_failures(
    tmp_path: Path, auth_socket: AuthSocket, tls_files: TlsFiles, exim_bin: str
) -> None:
    elsewhere = _exim_conf(runtime_dir(tmp_path, "a"), Path("/run/elsewhere/sock"), tls_files)
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(elsewhere))
    assert code == 1
    assert any("FAIL  exim: authbridge_plain talks to /run/elsewhere/sock" in x for x in lines)
    scram = _exim_conf(
        runtime_dir(tmp_path, "b"), auth_socket.path, tls_files, "--mechanisms", "scram-sha-256"
    )
    code, lines = _doctor("--socket", str(auth_socket.path), "--exim-config", str(scram))
    assert code == 1
    assert any("offers SCRAM-SHA-256, which authbridge does not" in line for line in lines)


def test_dead_socket_is_a_failure(tmp_path: Path) -> None:
    code, lines = _doctor("--socket", str(tmp_path / "nothing-here"), "--no-exim")
    assert code == 1
    assert lines == [
        f"FAIL  authbridge socket {tmp_path / 'nothing-here'}: No such file or directory"
    ]
