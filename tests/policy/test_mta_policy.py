"""Issue 4, items 1, 2 and 6 through the REAL Exim and Postfix (and doveadm).

tests/interop/test_secured_policy.py already shows the default secured-only rule
(refused without TLS, accepted with STARTTLS, Exim's loopback daemon counts as secured);
here: that the setting is what refuses (off = accepted), client networks and the per-user
``allow_nets`` field, and temporary failures turning into 435 / 454 at the MTA.
Exim runs as ``-bs -oMa IP`` / ``-bh IP``: the client address is simulated, no traffic
leaves the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.common import INTERNAL_FAILURE_USER
from tests.policy.conftest import start_bridge
from tests.policy.mta import (
    DOVEADM_AUTH_FAILED,
    exim_for,
    exim_session,
    postfix_for,
    postfix_session,
)
from tests.policy.users import LOCAL_PASSWORD, LOCAL_USER, NET_USER, PASSWORDS
from tests.support import wait_for_text
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import doveadm_auth
from tests.support.exim import EximConfig
from tests.support.postfix import PostfixMaster
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

LAN = "192.168.0.10"
OUTSIDE = "10.1.2.3"
NO_PENALTY = "[penalty]\nenabled = false\n"


class Peers:
    """One authbridge with one Exim config and one running Postfix in front of it."""

    def __init__(self, bridge: AuthbridgeServer, exim: EximConfig, postfix: PostfixMaster):
        self.bridge, self.exim, self.postfix = bridge, exim, postfix

    @property
    def socket(self) -> Path:
        return self.bridge.socket_path


def _peers(base: Path, users: Path, tls: TlsFiles, name: str, config: str) -> Iterator[Peers]:
    bridge = start_bridge(base, users, name, config)
    try:
        exim = exim_for(bridge.socket_path, base, f"{name}-exim", tls)
        postfix_config = postfix_for(bridge.socket_path, base, f"{name}-postfix", tls)
        with PostfixMaster(postfix_config) as postfix:
            yield Peers(bridge, exim, postfix)
    finally:
        bridge.stop()


# ---------------------------------------------------------------- 1. secured-only plaintext


@pytest.fixture(scope="module")
def lax(policy_dir: Path, policy_users: Path, policy_tls: TlsFiles) -> Iterator[Peers]:
    """require_secured = false: the counter-proof that the setting is what refuses."""
    config = f"[policy]\nrequire_secured = false\nfailure_delay = 0\n{NO_PENALTY}"
    yield from _peers(policy_dir, policy_users, policy_tls, "lax", config)


@pytest.fixture(scope="module")
def strict(policy_dir: Path, policy_users: Path, policy_tls: TlsFiles) -> Iterator[Peers]:
    """Defaults except the failure delay and penalty (both slow the suite down)."""
    config = f"[policy]\nfailure_delay = 0\n{NO_PENALTY}"
    yield from _peers(policy_dir, policy_users, policy_tls, "strict", config)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_plaintext_without_tls_accepted_when_require_secured_is_off(
    lax: Peers, strict: Peers, mech: str
) -> None:
    for peers, wanted in ((strict, 535), (lax, 235)):
        via_exim = exim_session(peers.exim, "plainuser", client_ip=LAN, mech=mech)
        assert via_exim.auth_code == wanted, via_exim.transcript
        via_postfix = postfix_session(peers.postfix.server, "plainuser", tls=False, mech=mech)
        assert via_postfix.auth_code == wanted, via_postfix.transcript


def test_exim_bh_session_is_not_secured(strict: Peers) -> None:
    """``-bh`` cannot do TLS and its address is not the interface's: never secured."""
    result = exim_session(strict.exim, "plainuser", test_host=LAN)
    assert result.auth_code == 535, result.transcript
    cram = exim_session(strict.exim, "cramuser", test_host=LAN, mech="CRAM-MD5")
    assert cram.auth_code == 235, cram.transcript


def test_doveadm_needs_the_secured_flag(strict: Peers) -> None:
    password = PASSWORDS["sha512user"]
    refused = doveadm_auth(strict.socket, "sha512user", password)
    assert refused.returncode == DOVEADM_AUTH_FAILED, refused.stdout + refused.stderr
    accepted = doveadm_auth(strict.socket, "sha512user", password, "secured")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_refusal_by_policy_is_logged_as_such(strict: Peers) -> None:
    exim_session(strict.exim, "sha512user", client_ip=LAN)
    wait_for_text(strict.bridge.stderr_text, "plaintext mechanism on a session that is not secured")


# ---------------------------------------------------------------- 2. client networks


@pytest.fixture(scope="module")
def lan_only(policy_dir: Path, policy_users: Path, policy_tls: TlsFiles) -> Iterator[Peers]:
    """The article's example: only 192.168.0.0/24 (and one IPv6 net); no rip = refused."""
    config = (
        "[policy]\nfailure_delay = 0\n"
        'allowed_networks = ["192.168.0.0/24", "2001:db8:7::/48"]\n'
        f"allow_no_rip = false\n{NO_PENALTY}"
    )
    yield from _peers(policy_dir, policy_users, policy_tls, "lan", config)


@pytest.mark.parametrize(
    ("client", "code"),
    [(LAN, 235), ("192.168.0.254", 235), (OUTSIDE, 535), ("192.168.1.10", 535)],
)
def test_exim_client_address_against_allowed_networks(
    lan_only: Peers, client: str, code: int
) -> None:
    result = exim_session(lan_only.exim, "sha512user", client_ip=client, tls=True)
    assert result.auth_code == code, result.transcript


@pytest.mark.parametrize(("client", "code"), [("2001:db8:7:1::25", 235), ("2001:db8:8::25", 535)])
def test_exim_ipv6_client_against_allowed_networks(lan_only: Peers, client: str, code: int) -> None:
    result = exim_session(lan_only.exim, "cramuser", client_ip=client, mech="CRAM-MD5")
    assert result.auth_code == code, result.transcript


@pytest.mark.parametrize(("client", "code"), [("192.168.0.77", 235), ("172.16.5.5", 535)])
def test_exim_bh_test_host_against_allowed_networks(
    lan_only: Peers, client: str, code: int
) -> None:
    result = exim_session(lan_only.exim, "cramuser", test_host=client, mech="CRAM-MD5")
    assert result.auth_code == code, result.transcript


def test_postfix_loopback_client_outside_allowed_networks(lan_only: Peers) -> None:
    result = postfix_session(lan_only.postfix.server, "sha512user")
    assert result.auth_code == 535, result.transcript


def test_request_without_rip_follows_allow_no_rip(lan_only: Peers) -> None:
    password = PASSWORDS["plainuser"]
    no_rip = doveadm_auth(lan_only.socket, "plainuser", password, "secured")
    assert no_rip.returncode == DOVEADM_AUTH_FAILED, no_rip.stdout + no_rip.stderr
    with_rip = doveadm_auth(lan_only.socket, "plainuser", password, "secured", f"rip={LAN}")
    assert with_rip.returncode == 0, with_rip.stdout + with_rip.stderr


def test_allowed_networks_is_checked_before_the_password(lan_only: Peers) -> None:
    """A right password from outside fails exactly like a wrong one: no oracle."""
    right = exim_session(lan_only.exim, "plainuser", client_ip=OUTSIDE, tls=True)
    wrong = exim_session(lan_only.exim, "plainuser", client_ip=OUTSIDE, tls=True, password="x")
    assert right.auth_code == wrong.auth_code == 535, right.transcript + wrong.transcript


@pytest.mark.parametrize(
    ("user", "client", "code"),
    [
        (NET_USER, LAN, 235),
        (NET_USER, OUTSIDE, 535),
        (LOCAL_USER, "10.9.200.1", 235),
        (LOCAL_USER, LAN, 535),
        ("plainuser", OUTSIDE, 235),  # no allow_nets field: no restriction
    ],
)
def test_per_user_allow_nets_via_exim(strict: Peers, user: str, client: str, code: int) -> None:
    result = exim_session(strict.exim, user, client_ip=client, tls=True)
    assert result.auth_code == code, result.transcript


def test_per_user_allow_nets_via_postfix(strict: Peers) -> None:
    """Postfix sends rip=127.0.0.1: outside both users' allow_nets."""
    for user in (NET_USER, LOCAL_USER):
        result = postfix_session(strict.postfix.server, user)
        assert result.auth_code == 535, result.transcript
    assert postfix_session(strict.postfix.server, "plainuser").auth_code == 235


def test_allow_nets_local_means_no_rip(strict: Peers) -> None:
    ok = doveadm_auth(strict.socket, LOCAL_USER, LOCAL_PASSWORD, "secured")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    net_user = doveadm_auth(strict.socket, NET_USER, PASSWORDS[NET_USER], "secured")
    assert net_user.returncode == DOVEADM_AUTH_FAILED, net_user.stdout + net_user.stderr


# ---------------------------------------------------------------- 6. temporary failures


def test_exim_answers_435_on_internal_failure(strict: Peers) -> None:
    result = exim_session(
        strict.exim, INTERNAL_FAILURE_USER, client_ip=LAN, tls=True, password="x", timeout=8
    )
    assert result.auth_code == 435, result.transcript
    again = exim_session(strict.exim, "plainuser", client_ip=LAN, tls=True)
    assert again.auth_code == 235, again.transcript


def test_postfix_answers_454_on_internal_failure(strict: Peers) -> None:
    result = postfix_session(strict.postfix.server, INTERNAL_FAILURE_USER, password="x", timeout=8)
    assert result.auth_code == 454, result.transcript
    again = postfix_session(strict.postfix.server, "plainuser")
    assert again.auth_code == 235, again.transcript


@pytest.fixture(scope="module")
def no_disconnect(policy_dir: Path, policy_users: Path, policy_tls: TlsFiles) -> Iterator[Peers]:
    """tempfail_disconnects = false: Dovecot's ``FAIL code=temp_fail``."""
    config = f"[policy]\nfailure_delay = 0\ntempfail_disconnects = false\n{NO_PENALTY}"
    yield from _peers(policy_dir, policy_users, policy_tls, "nodisc", config)


def test_without_disconnect_both_mtas_say_535(no_disconnect: Peers) -> None:
    """The reason the disconnect exists: both MTAs turn code=temp_fail into a 535."""
    exim = exim_session(
        no_disconnect.exim, INTERNAL_FAILURE_USER, client_ip=LAN, tls=True, password="x"
    )
    assert exim.auth_code == 535, exim.transcript
    postfix = postfix_session(no_disconnect.postfix.server, INTERNAL_FAILURE_USER, password="x")
    assert postfix.auth_code == 535, postfix.transcript
