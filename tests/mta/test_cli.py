"""The emit commands as an admin meets them: inputs, refusals, files, --force, --diff."""

from __future__ import annotations

import grp
import os
import socket
from pathlib import Path

import pytest

from tests.mta.conftest import emit
from tests.support import runtime_dir
from tests.support.tls import TlsFiles

SOCKET = "/run/authbridge/auth-client"


def _split(confdir: Path, tls: TlsFiles, *extra: str) -> tuple[int, str, str]:
    marker = confdir / "update-exim4.conf.conf"  # what makes DIR Debian's exim4 directory
    if not marker.exists():
        marker.write_text("dc_use_split_config='true'\n")
    result = emit(
        "emit-exim-config", "--debian-split", str(confdir), "--socket", SOCKET,
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), *extra,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "update-exim4.conf.conf"
    }


def test_second_run_is_idempotent(tmp_path: Path, tls_files: TlsFiles) -> None:
    code, _, err = _split(tmp_path, tls_files, "--allow-sender", "alice=a@example.org")
    assert code == 0, err
    assert err.count("wrote: ") == 4  # main, acl, auth snippets + sender map
    first = _snapshot(tmp_path)
    code, _, err = _split(tmp_path, tls_files, "--allow-sender", "alice=a@example.org")
    assert code == 0
    assert "wrote: " not in err and err.count("unchanged: ") == 4
    assert _snapshot(tmp_path) == first
    assert sorted(first) == [
        "authbridge-senders",
        "conf.d/acl/25_authbridge_check_mail",
        "conf.d/auth/35_authbridge_dovecot",
        "conf.d/main/00_authbridge",
    ]


def test_different_existing_file_is_kept_without_force(tmp_path: Path, tls_files: TlsFiles) -> None:
    assert _split(tmp_path, tls_files)[0] == 0
    auth = tmp_path / "conf.d/auth/35_authbridge_dovecot"
    auth.write_text("# hand edited\n")
    before = _snapshot(tmp_path)
    code, _, err = _split(tmp_path, tls_files, "--mechanisms", "cram-md5")
    assert code == 2
    assert str(auth) in err and "--force" in err
    assert _snapshot(tmp_path) == before  # nothing written, not even the unchanged-ness


def test_force_replaces_and_diff_shows_changes(tmp_path: Path, tls_files: TlsFiles) -> None:
    assert _split(tmp_path, tls_files)[0] == 0
    auth = tmp_path / "conf.d/auth/35_authbridge_dovecot"
    code, out, _ = _split(tmp_path, tls_files, "--mechanisms", "cram-md5", "--diff")
    assert code == 1
    assert f"+++ {auth}" in out
    assert "-authbridge_plain:" in out and "-authbridge_login:" in out
    assert "authbridge_plain:" in auth.read_text()  # --diff wrote nothing
    code, _, err = _split(tmp_path, tls_files, "--mechanisms", "cram-md5", "--force")
    assert code == 0, err
    assert f"replaced: {auth}" in err
    assert "authbridge_plain:" not in auth.read_text()
    code, out, _ = _split(tmp_path, tls_files, "--mechanisms", "cram-md5", "--diff")
    assert (code, out) == (0, "")


def test_diff_against_nothing_installed(tmp_path: Path, tls_files: TlsFiles) -> None:
    code, out, _ = _split(tmp_path, tls_files, "--diff")
    assert code == 1
    assert "--- /dev/null" in out
    assert not (tmp_path / "conf.d").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--section", "auth"], "pass --socket PATH or --config FILE"),
        (["--section", "auth", "--socket", "relative/sock"], "must be an absolute path"),
        (["--section", "auth", "--socket", "/run/a$b"], "must be an absolute path"),
        (["--section", "main", "--socket", SOCKET, "--networks", "10.0.0.1/8"], "host bits"),
        (["--section", "auth", "--socket", SOCKET, "--mechanisms", "ntlm"], "unknown mechanism"),
        (["--section", "acl", "--socket", SOCKET, "--domains", "exa mple.org"], "not a domain"),
        (["--standalone", "/tmp/x.conf", "--socket", SOCKET], "needs --tls-cert and --tls-key"),
        (["--section", "main", "--socket", SOCKET, "--tls-cert", "/a.pem"], "go together"),
        (
            ["--section", "acl", "--socket", SOCKET, "--allow-sender", "alice=not-an-address"],
            "not a plain envelope address",
        ),
        (
            ["--section", "acl", "--socket", SOCKET, "--allow-sender", "alice=a@b.org"],
            "need --sender-map",
        ),
        (
            ["--section", "acl", "--socket", SOCKET, "--sender-map", "/nonexistent/map"],
            "does not exist",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(argv: list[str], message: str) -> None:
    result = emit("emit-exim-config", *argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_values_come_from_the_inputs_only() -> None:
    """Nothing site-specific is hard-coded: two different inputs, no trace of the other."""
    texts = []
    for domain, net, sock in (
        ("one.test", "10.1.0.0/16", "/run/one/sock"),
        ("two.test", "172.16.0.0/12", "/run/two/sock"),
    ):
        parts = []
        for section in ("main", "acl", "auth"):
            result = emit(
                "emit-exim-config", "--section", section, "--socket", sock,
                "--domains", domain, "--networks", net,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            parts.append(result.stdout)
        texts.append("".join(parts))
    assert "one.test" in texts[0] and "10.1.0.0/16" in texts[0] and "/run/one/sock" in texts[0]
    for token in ("one.test", "10.1.0.0/16", "/run/one/sock", "example"):
        assert token not in texts[1]


def test_config_file_supplies_socket_mechanisms_networks(tmp_path: Path) -> None:
    config = tmp_path / "authbridge.toml"
    config.write_text(
        '[server]\nsocket = "/run/from-config/auth"\nmechanisms = ["plain", "cram-md5"]\n'
        '[policy]\nallowed_networks = ["192.0.2.0/24"]\n'
        '[[store]]\ntype = "passwd-file"\npath = "users"\n'
    )
    auth = emit("emit-exim-config", "--section", "auth", "--config", str(config))
    assert auth.returncode == 0, auth.stderr
    assert "server_socket = /run/from-config/auth" in auth.stdout
    assert "public_name = PLAIN" in auth.stdout and "public_name = CRAM-MD5" in auth.stdout
    assert "public_name = LOGIN" not in auth.stdout
    main = emit("emit-exim-config", "--section", "main", "--config", str(config))
    assert "{<; 192.0.2.0/24}" in main.stdout
    overridden = emit(
        "emit-exim-config", "--section", "main", "--config", str(config),
        "--networks", "198.51.100.0/24",
    )  # fmt: skip
    assert "{<; 198.51.100.0/24}" in overridden.stdout and "192.0.2.0" not in overridden.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text('[server]\nmechanisms = ["nope"]\n')
    refused = emit("emit-exim-config", "--section", "auth", "--config", str(broken))
    assert refused.returncode == 2 and "nope" in refused.stderr


def test_unreadable_key_gets_the_chgrp_advice(tmp_path: Path, tls_files: TlsFiles) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a root-only key")
    hidden = runtime_dir(tmp_path, "open") / "hidden"
    hidden.mkdir(mode=0o700)
    buried = hidden / "exim.key"
    buried.write_bytes(tls_files.key.read_bytes())
    os.chown(buried, 0, grp.getgrnam("Debian-exim").gr_gid)
    buried.chmod(0o640)
    result = emit(
        "emit-exim-config", "--section", "main", "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(buried),
    )  # fmt: skip
    assert f"search (x) permission on {hidden}" in result.stderr
    key = runtime_dir(tmp_path, "keys") / "root-only.key"
    key.write_bytes(tls_files.key.read_bytes())
    os.chown(key, 0, 0)
    key.chmod(0o600)
    result = emit(
        "emit-exim-config", "--section", "main", "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(key),
    )  # fmt: skip
    assert result.returncode == 0
    assert f"chgrp Debian-exim {key} && chmod 0640 {key}" in result.stderr
    # the fix it suggests does make the warning go away
    os.chown(key, 0, grp.getgrnam("Debian-exim").gr_gid)
    key.chmod(0o640)
    fixed = emit(
        "emit-exim-config", "--section", "main", "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(key),
    )  # fmt: skip
    assert "warnings:" not in fixed.stderr
    key.chmod(0o644)
    world = emit(
        "emit-exim-config", "--section", "main", "--socket", SOCKET,
        "--tls-cert", str(tls_files.cert), "--tls-key", str(key),
    )  # fmt: skip
    assert "world-readable" in world.stderr


def test_diff_against_the_real_etc_exim4_writes_nothing() -> None:
    result = emit(
        "emit-exim-config", "--debian-split", "/etc/exim4", "--socket", SOCKET, "--diff",
    )  # fmt: skip
    # --diff never writes; it shows what would be installed into /etc/exim4
    assert result.returncode == 1
    assert "+++ /etc/exim4/conf.d/main/00_authbridge" in result.stdout
    assert not Path("/etc/exim4/conf.d/main/00_authbridge").exists()


def test_postfix_sender_map_requires_entries(tmp_path: Path) -> None:
    result = emit(
        "emit-postfix-config", "--socket", SOCKET, "--map-dir", str(tmp_path),
        "--sender-map", str(tmp_path / "senders"),
    )  # fmt: skip
    assert result.returncode == 2 and "--allow-sender" in result.stderr


def test_postfix_chroot_follows_the_socket_location(tmp_path: Path) -> None:
    inside = emit(
        "emit-postfix-config", "--socket", "/var/spool/postfix/private/authbridge",
        "--map-dir", str(tmp_path), "--diff",
    )  # fmt: skip
    assert "smtpd_sasl_path = private/authbridge\n" in inside.stdout
    assert "submission inet n - y - - smtpd" in inside.stdout
    outside = emit(
        "emit-postfix-config", "--socket", SOCKET, "--map-dir", str(tmp_path), "--diff",
    )  # fmt: skip
    assert f"smtpd_sasl_path = {SOCKET}\n" in outside.stdout
    assert "submission inet n - n - - smtpd" in outside.stdout
    assert "must not be chrooted" in outside.stderr


def test_split_mode_off_is_reported(tmp_path: Path, tls_files: TlsFiles) -> None:
    confdir = tmp_path / "exim4"
    confdir.mkdir()
    conf = confdir / "update-exim4.conf.conf"
    conf.write_text("dc_eximconfig_configtype='local'\ndc_use_split_config='false'\n")
    code, _, err = _split(confdir, tls_files)
    assert code == 0
    assert "does not set dc_use_split_config='true'" in err
    conf.write_text("dc_eximconfig_configtype='local'\ndc_use_split_config='true'\n")
    code, _, err = _split(confdir, tls_files)
    assert "dc_use_split_config" not in err


def test_socket_the_mta_user_cannot_reach_is_reported(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a root-only socket")
    directory = runtime_dir(tmp_path, "sock")
    path = directory / "auth-client"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        os.chown(path, 0, 0)
        path.chmod(0o600)
        exim = emit("emit-exim-config", "--section", "auth", "--socket", str(path))
        assert f"Debian-exim cannot connect to {path}" in exim.stderr
        postfix = emit(
            "emit-postfix-config", "--socket", str(path), "--map-dir", str(tmp_path), "--diff"
        )
        assert f"postfix cannot connect to {path}" in postfix.stderr
        os.chown(path, 0, grp.getgrnam("Debian-exim").gr_gid)
        path.chmod(0o660)
        fixed = emit("emit-exim-config", "--section", "auth", "--socket", str(path))
        assert "cannot connect" not in fixed.stderr


def test_senders_file_is_converted_and_an_existing_map_used_as_is(tmp_path: Path) -> None:
    source = tmp_path / "senders.txt"
    source.write_text("# who may send as whom\nAlice: sales@example.org info@example.org\n")
    target = tmp_path / "exim-senders"
    written = emit(
        "emit-exim-config", "--section", "acl", "--socket", SOCKET,
        "--senders-from", str(source), "--allow-sender", "bob=b@example.org",
        "--sender-map", str(target),
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    lines = target.read_text().splitlines()
    assert lines[-2:] == ["alice: info@example.org, sales@example.org", "bob: b@example.org"]
    reused = emit(
        "emit-exim-config", "--section", "acl", "--socket", SOCKET, "--sender-map", str(target)
    )
    assert reused.returncode == 0
    assert f"lsearch{{{target}}}" in reused.stdout
    assert "wrote" not in reused.stderr
    target.write_text("alice sales@example.org\n")  # broken: no colon
    broken = emit(
        "emit-exim-config", "--section", "acl", "--socket", SOCKET, "--sender-map", str(target)
    )
    assert broken.returncode == 2 and f"{target}:1:" in broken.stderr
