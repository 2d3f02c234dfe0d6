"""Every shape of emitted Exim config is loaded by the real Exim (and Debian's generator)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.mta.conftest import emit
from tests.mta.exim_helpers import (
    debian_copy,
    exim_check,
    exim_option,
    exim_owned_dirs,
    update_exim4_conf,
)
from tests.support import runtime_dir
from tests.support.tls import TlsFiles

SOCKET = "/run/authbridge/auth-client"


def _standalone(tmp: Path, tls: TlsFiles | None, *extra: str) -> tuple[Path, str]:
    conf = tmp / "exim.conf"
    spool, logs = tmp / "spool", tmp / "log"
    exim_owned_dirs(spool, logs)
    argv = [
        "emit-exim-config", "--standalone", str(conf), "--socket", SOCKET,
        "--spool-dir", str(spool), "--log-file-path", f"{logs}/%slog",
    ]  # fmt: skip
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    result = emit(*argv, *extra)
    assert result.returncode == 0, result.stderr
    return conf, result.stderr


# (extra flags, expected auth_advertise_hosts, expected authenticators)
VARIANTS = {
    "defaults": (
        (),
        "${if eq{$tls_in_cipher}{}{}{*}}",
        "authbridge_plain authbridge_login authbridge_cram_md5",
    ),
    "networks-v4-v6": (
        ("--networks", "192.168.0.0/24,2001:db8::/32", "--networks", "10.1.0.0/16"),
        "${if eq{$tls_in_cipher}{}{}{<; 192.168.0.0/24 ; 2001:db8::/32 ; 10.1.0.0/16}}",
        "authbridge_plain authbridge_login authbridge_cram_md5",
    ),
    "auth-without-tls": (
        ("--allow-auth-without-tls", "--networks", "192.168.0.0/24"),
        "<; 192.168.0.0/24",
        "authbridge_plain authbridge_login authbridge_cram_md5",
    ),
    "scram-and-plain": (
        ("--mechanisms", "plain,scram-sha-1,scram-sha-256"),
        "${if eq{$tls_in_cipher}{}{}{*}}",
        "authbridge_plain authbridge_scram_sha_1 authbridge_scram_sha_256",
    ),
    "domains-and-map": (
        (
            "--domains", "example.org,example.net", "--allow-sender",
            "alice=postmaster@example.org,abuse@example.net", "--hostname", "mx.example.org",
        ),
        "${if eq{$tls_in_cipher}{}{}{*}}",
        "authbridge_plain authbridge_login authbridge_cram_md5",
    ),
    "client-cert-verify": (
        (
            "--tls-verify-certificates", "/etc/ssl/certs/ca-certificates.crt",
            "--tls-try-verify-hosts", "192.168.0.0/24",
        ),
        "${if eq{$tls_in_cipher}{}{}{*}}",
        "authbridge_plain authbridge_login authbridge_cram_md5",
    ),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_standalone_variants_load_in_real_exim(
    variant: str, tmp_path: Path, tls_files: TlsFiles, exim_bin: str
) -> None:
    extra, advertise, drivers = VARIANTS[variant]
    conf, _ = _standalone(runtime_dir(tmp_path, variant), tls_files, *extra)
    exim_check(conf)
    assert exim_option(conf, "auth_advertise_hosts") == f"auth_advertise_hosts = {advertise}"
    server_drivers = [
        name for name in exim_option(conf, "authenticator_list").split() if name.startswith("auth")
    ]
    assert " ".join(server_drivers) == drivers
    assert exim_option(conf, "acl_smtp_mail") == "acl_smtp_mail = acl_authbridge_check_mail"


def test_standalone_without_tls_and_allow_auth_without_tls_loads(
    tmp_path: Path, exim_bin: str
) -> None:
    conf, _ = _standalone(tmp_path, None, "--allow-auth-without-tls")
    exim_check(conf)
    assert "tls_certificate" not in conf.read_text()


def test_sections_paste_into_a_hand_written_config(
    tmp_path: Path, tls_files: TlsFiles, exim_bin: str
) -> None:
    sections = {}
    for name in ("main", "acl", "auth"):
        result = emit(
            "emit-exim-config", "--section", name, "--socket", SOCKET,
            "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
            "--domains", "example.org", "--networks", "192.168.0.0/24",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        sections[name] = result.stdout
    spool = tmp_path / "spool"
    exim_owned_dirs(spool)
    conf = tmp_path / "exim.conf"
    conf.write_text(
        f"spool_directory = {spool}\nkeep_environment =\n"
        + sections["main"]
        + "\nbegin acl\n"
        + sections["acl"]
        + "\nbegin authenticators\n"
        + sections["auth"]
    )
    exim_check(conf)
    assert "begin" not in "".join(sections.values())


def test_debian_split_is_assembled_by_update_exim4_conf(
    tmp_path: Path, tls_files: TlsFiles, exim_bin: str
) -> None:
    confdir = debian_copy(tmp_path / "exim4", spool=tmp_path / "spool", log_dir=tmp_path / "log")
    result = emit(
        "emit-exim-config", "--debian-split", str(confdir), "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
        "--networks", "192.168.0.0/24", "--domains", "example.org",
        "--allow-sender", "alice=postmaster@example.org", "--hostname", "mx.example.org",
        "--tls-verify-certificates", str(tls_files.cert),
        "--tls-try-verify-hosts", "192.168.0.0/24",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "exim4.conf"
    generated = update_exim4_conf(confdir, out)
    # nothing we wrote was skipped by Debian's run-parts emulation (names without dots)
    assert "ignoring file" not in generated.stderr
    exim_check(out)
    assert exim_option(out, "acl_smtp_mail") == "acl_smtp_mail = acl_authbridge_check_mail"
    assert exim_option(out, "tls_certificate") == f"tls_certificate = {tls_files.cert}"
    assert exim_option(out, "tls_privatekey") == f"tls_privatekey = {tls_files.key}"
    assert exim_option(out, "primary_hostname") == "primary_hostname = mx.example.org"
    verify = exim_option(out, "tls_verify_certificates", "tls_try_verify_hosts").splitlines()
    assert verify == [
        f"tls_verify_certificates = {tls_files.cert}",
        "tls_try_verify_hosts = <; 192.168.0.0/24",
    ]
    assert "{<; 192.168.0.0/24}" in exim_option(out, "auth_advertise_hosts")
    drivers = exim_option(out, "authenticator_list").split()
    assert {"authbridge_plain", "authbridge_login", "authbridge_cram_md5"} <= set(drivers)
    plain = exim_option(out, "authenticator", "authbridge_plain")
    assert f"server_socket = {SOCKET}" in plain
    assert "server_advertise_condition = ${if def:tls_in_cipher}" in plain
    assert (confdir / "authbridge-senders").read_text().endswith("alice: postmaster@example.org\n")


def test_debian_notls_passwords_macro_is_honoured(
    tmp_path: Path, tls_files: TlsFiles, exim_bin: str
) -> None:
    confdir = debian_copy(tmp_path / "exim4", spool=tmp_path / "spool", log_dir=tmp_path / "log")
    with (confdir / "conf.d/main/000_localmacros").open("a") as macros:
        macros.write("AUTH_SERVER_ALLOW_NOTLS_PASSWORDS = yes\n")
    result = emit(
        "emit-exim-config", "--debian-split", str(confdir), "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "exim4.conf"
    update_exim4_conf(confdir, out)
    exim_check(out)
    plain = exim_option(out, "authenticator", "authbridge_plain").splitlines()
    assert "server_advertise_condition = " in plain  # the admin's macro lifts the TLS rule


def test_debian_macro_clash_is_reported_and_refused_by_exim(
    tmp_path: Path, tls_files: TlsFiles, exim_bin: str
) -> None:
    confdir = debian_copy(tmp_path / "exim4", spool=tmp_path / "spool", log_dir=tmp_path / "log")
    with (confdir / "conf.d/main/000_localmacros").open("a") as macros:
        macros.write("MAIN_TLS_PRIVATEKEY = /etc/exim4/old.key\n")
    result = emit(
        "emit-exim-config", "--debian-split", str(confdir), "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
    )  # fmt: skip
    assert result.returncode == 0
    assert "000_localmacros already defines MAIN_TLS_PRIVATEKEY" in result.stderr
    out = tmp_path / "exim4.conf"
    update_exim4_conf(confdir, out)
    proc = subprocess.run(
        [exim_bin, "-C", str(out), "-bV"], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert 'macro "MAIN_TLS_PRIVATEKEY" is already defined' in proc.stdout + proc.stderr
