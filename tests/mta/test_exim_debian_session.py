"""SMTP sessions through the config Debian's update-exim4.conf builds from our snippets.

The split snippets ride on Debian's own files (ACLs, routers, TLS macros), so beyond
``exim -bV`` this checks that the assembled result behaves: AUTH only over TLS and only
from the configured network, through the real auth socket, and the sender ACL wired in
through MAIN_ACL_CHECK_MAIL. Clients are simulated with ``exim -bs -oMa IP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.mta.conftest import USERS, AuthSocket, emit
from tests.mta.exim_helpers import bs_pipe, debian_copy, exim_check, update_exim4_conf
from tests.support import require_binary, runtime_dir
from tests.support.swaks import SwaksResult, run_swaks
from tests.support.tls import TlsFiles

LAN_CLIENT = "192.168.0.10"
OUTSIDE_CLIENT = "198.51.100.7"
ADMIN_RULE = "refused by the admin's acl_check_mail"


@pytest.fixture(scope="module")
def debian_conf(
    tmp_path_factory: pytest.TempPathFactory, auth_socket: AuthSocket, tls_files: TlsFiles
) -> Path:
    require_binary("update-exim4.conf")
    require_binary("swaks")
    base = runtime_dir(tmp_path_factory, "exim-debian")
    confdir = debian_copy(base / "exim4", spool=base / "spool", log_dir=base / "log")
    # an admin's own rule in Debian's MAIL ACL, which ours must keep applying
    check_mail = confdir / "conf.d/acl/30_exim4-config_check_mail"
    check_mail.write_text(
        check_mail.read_text().replace(
            "\n  accept",
            "\n  deny senders = blocked@example.org\n       message = " + ADMIN_RULE + "\n  accept",
            1,
        )
    )
    result = emit(
        "emit-exim-config", "--debian-split", str(confdir), "--socket", str(auth_socket.path),
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key),
        "--networks", "192.168.0.0/24", "--domains", "example.org",
        "--allow-sender", "alice=postmaster@example.org", "--hostname", "mx.example.org",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = base / "exim4.conf"
    update_exim4_conf(confdir, out)
    exim_check(out)
    return out


def _session(conf: Path, client: str, *, tls: bool, **kwargs: Any) -> SwaksResult:
    return run_swaks(pipe=bs_pipe(conf, client, tls=tls), tls=tls, **kwargs)


def _offered(result: SwaksResult) -> bool:
    last_ehlo = result.transcript.rsplit("EHLO", 1)[-1]
    return any(line.lstrip("<-~* ")[4:9] == "AUTH " for line in last_ehlo.splitlines())


def test_lan_client_with_tls_authenticates(debian_conf: Path) -> None:
    result = _session(
        debian_conf, LAN_CLIENT, tls=True, auth="LOGIN", user="bob", password=USERS["bob"]
    )
    assert result.auth_code == 235, result.transcript


def test_lan_client_without_tls_is_not_offered_auth(debian_conf: Path) -> None:
    result = _session(debian_conf, LAN_CLIENT, tls=False, stop_after="EHLO")
    assert result.last_code == 250, result.transcript
    assert not _offered(result)


def test_outside_client_is_not_offered_auth_even_with_tls(debian_conf: Path) -> None:
    result = _session(debian_conf, OUTSIDE_CLIENT, tls=True, stop_after="EHLO")
    assert "<~  250 HELP" in result.transcript, result.transcript
    assert not _offered(result)


@pytest.mark.parametrize(
    ("sender", "expected"),
    [("bob@example.org", 553), ("alice@example.org", 250), ("postmaster@example.org", 250)],
)
def test_sender_acl_is_wired_into_debians_mail_acl(
    debian_conf: Path, sender: str, expected: int
) -> None:
    result = _session(
        debian_conf,
        LAN_CLIENT,
        tls=True,
        auth="PLAIN",
        user="alice",
        password=USERS["alice"],
        stop_after="MAIL",
        extra_args=["--from", sender],
    )
    after_auth = result.codes[result.codes.index(235) + 1 :]
    assert after_auth[0] == expected, result.transcript


@pytest.mark.parametrize(
    ("sender", "expected"), [("blocked@example.org", 550), ("x@example.org", 250)]
)
def test_debians_own_mail_acl_still_applies(debian_conf: Path, sender: str, expected: int) -> None:
    result = _session(
        debian_conf, LAN_CLIENT, tls=False, stop_after="MAIL", extra_args=["--from", sender]
    )
    assert result.codes[2] == expected, result.transcript  # banner, EHLO, MAIL
    assert (ADMIN_RULE in result.transcript) == (expected == 550)
