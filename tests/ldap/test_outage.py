"""An LDAP directory that hangs (SIGSTOP) or dies is an internal failure, which the real
Exim answers with 435 and the real Postfix with 454, bounded by the store timeout; when
it is back, authbridge serves again by itself, without a restart. ``authbridge check``
reports the store (connect, bind as dn, one search) and never prints dnpass.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.schemes import generate
from tests.ldap.slapd import (
    BASE_LDIF,
    READER_DN,
    READER_PW,
    SUFFIX,
    Slapd,
    make_slapd,
    person_ldif,
)
from tests.policy.mta import exim_for, exim_session, postfix_for, postfix_session
from tests.sql.daemon import SqlBridge, auth, start_bridge
from tests.support import free_tcp_port, require_binary, wait_for_text, wait_for_value
from tests.support.exim import EximConfig
from tests.support.postfix import PostfixMaster
from tests.support.tls import make_self_signed

pytestmark = pytest.mark.interop

LAN = "192.168.0.10"
USER, PASSWORD = "mx", "outage-pass"
TIMEOUT = 1.0


def ldap_config(server: Slapd, dnpass: str = READER_PW, uris: str = "") -> str:
    return (
        '[[store]]\ntype = "ldap"\n'
        f'uris = "{uris or server.uri}"\ndn = "{READER_DN}"\ndnpass = "{dnpass}"\n'
        f'base = "{SUFFIX}"\npass_filter = "(&(objectClass=inetOrgPerson)(uid=%n))"\n'
        f'pass_attrs = "uid=user"\nauth_bind = true\ntimeout = {TIMEOUT}\npool_size = 2\n'
        "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n"
    )


class Site:
    def __init__(
        self, slapd: Slapd, bridge: SqlBridge, exim: EximConfig, postfix: PostfixMaster
    ) -> None:
        self.slapd, self.bridge, self.exim, self.postfix = slapd, bridge, exim, postfix


@pytest.fixture(scope="module")
def site(ldap_dir: Path) -> Iterator[Site]:
    require_binary("openssl")
    base = ldap_dir / "outage"
    slapd = make_slapd(base / "slapd")
    try:
        slapd.add(person_ldif(USER, generate("SSHA", PASSWORD.encode(), USER)))
        bridge = start_bridge(base / "bridge", ldap_config(slapd))
        try:
            tls = make_self_signed(base / "tls")
            exim = exim_for(bridge.socket_path, base, "exim", tls)
            with PostfixMaster(postfix_for(bridge.socket_path, base, "postfix", tls)) as postfix:
                yield Site(slapd, bridge, exim, postfix)
        finally:
            bridge.stop()
    finally:
        slapd.remove()


def exim_code(site: Site) -> int | None:
    result = exim_session(site.exim, USER, client_ip=LAN, tls=True, password=PASSWORD, timeout=15)
    return result.auth_code


def postfix_code(site: Site) -> int | None:
    return postfix_session(site.postfix.server, USER, password=PASSWORD, timeout=15).auth_code


def back_by_itself(site: Site, what: str = "authbridge serving again by itself") -> None:
    wait_for_value(
        lambda: auth(site.bridge, USER, PASSWORD), lambda r: r == "OK", 15, what, interval=0.2
    )


def test_the_daemon_reuses_its_connections(site: Site) -> None:
    assert auth(site.bridge, USER, PASSWORD) == "OK"  # the pool is warm: one of each kind
    before = site.slapd.accepted()
    for _ in range(30):
        assert auth(site.bridge, USER, PASSWORD) == "OK"
    assert auth(site.bridge, USER, "wrong") == "FAIL"
    assert auth(site.bridge, "nobody", PASSWORD) == "FAIL"
    assert site.slapd.accepted() == before


def test_directory_paused_then_back(site: Site) -> None:
    assert exim_code(site) == 235
    assert postfix_code(site) == 235
    site.slapd.pause()  # SIGSTOP: connections open, nobody answers
    try:
        started = time.monotonic()
        assert auth(site.bridge, USER, PASSWORD) == "CLOSED"
        assert time.monotonic() - started < TIMEOUT + 1.0
        assert exim_code(site) == 435
        assert postfix_code(site) == 454
        wait_for_text(site.bridge.stderr_text, "store unavailable")
    finally:
        site.slapd.resume()
    back_by_itself(site)
    assert exim_code(site) == 235
    assert postfix_code(site) == 235


def test_directory_killed_then_restarted(site: Site) -> None:
    assert auth(site.bridge, USER, PASSWORD) == "OK"
    site.slapd.stop()  # by PID; the pooled connections die with it
    try:
        started = time.monotonic()
        assert auth(site.bridge, USER, PASSWORD) == "CLOSED"
        assert time.monotonic() - started < TIMEOUT + 1.0
        assert exim_code(site) == 435
        assert postfix_code(site) == 454
    finally:
        site.slapd.start()
    back_by_itself(site)
    assert postfix_code(site) == 235


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_reports_the_store_without_its_password(site: Site, tmp_path: Path) -> None:
    config = tmp_path / "authbridge.toml"
    config.write_text(ldap_config(site.slapd))
    result = check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"store ldap:{site.slapd.uri} (auth_bind): connected;" in result.stdout
    wrong = "not-the-" + READER_PW
    refusing = f"ldap://127.0.0.1:{free_tcp_port()}"
    for text, said in (
        (ldap_config(site.slapd, dnpass=wrong), "Invalid credentials"),
        (ldap_config(site.slapd, dnpass=wrong, uris=refusing), "Can't contact LDAP server"),
    ):
        config.write_text(text)
        result = check(config)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert said in output and "Traceback" not in output
        assert READER_PW not in output


def test_daemon_starts_while_the_directory_is_down(ldap_dir: Path) -> None:
    base = ldap_dir / "late"
    slapd = Slapd(base / "slapd").configure()  # configured, not started
    try:
        bridge = start_bridge(base / "bridge", ldap_config(slapd))
        try:
            assert auth(bridge, USER, PASSWORD) == "CLOSED"
            slapd.start()
            slapd.add(
                BASE_LDIF + "\n" + person_ldif(USER, generate("SSHA", PASSWORD.encode(), USER))
            )
            assert auth(bridge, USER, PASSWORD) == "OK"
        finally:
            bridge.stop()
    finally:
        slapd.remove()


def test_sighup_swaps_the_ldap_store(site: Site) -> None:
    """A reload builds the new store (here: another filter) and closes the old pool."""
    config = site.bridge.socket_path.parent / "authbridge.toml"
    original = config.read_text()
    assert auth(site.bridge, USER, PASSWORD) == "OK"
    reloads = site.bridge.stderr_text().count('"event": "reloaded"')
    try:
        config.write_text(original.replace("(uid=%n)", "(uid=%n-nobody)"))
        site.bridge.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        needle = '"event": "reloaded"'
        wait_for_text(site.bridge.stderr_text, needle, count=reloads + 1, timeout=15)
        assert auth(site.bridge, USER, PASSWORD) == "FAIL"
    finally:
        config.write_text(original)
        site.bridge.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    back_by_itself(site, "the reload back to the first filter")
