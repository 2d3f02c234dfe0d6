"""Issue 18 end to end: the REAL Exim and Postfix in front of two authbridge instances
sharing one real Redis. Guesses are refused with 535 at either MTA, the account's
spraying count made through Exim slows a guess that arrives through Postfix, and the
rightful user gets 235 through the same penalty path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.policy.conftest import start_bridge
from tests.policy.mta import exim_for, exim_session, postfix_for, postfix_session
from tests.policy.users import PASSWORDS
from tests.support import runtime_dir, wait_for_value
from tests.support.postfix import PostfixMaster
from tests.support.redis import RedisServer
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

USER = "sha512user"
ATTACKER = "198.51.100.7"
HOLD = 1.0


@pytest.fixture
def redis_server(policy_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(runtime_dir(policy_dir, "redis")) as server:
        yield server


def test_exim_and_postfix_on_one_redis(
    policy_dir: Path, policy_users: Path, policy_tls: TlsFiles, redis_server: RedisServer
) -> None:
    key = policy_dir / "fleet.key"
    key.write_text("the fleet's fingerprint secret\n")
    config = (
        "[policy]\nfailure_delay = 0\n[penalty]\n"
        f'backend = "redis"\nredis_url = "{redis_server.url}"\nkey_prefix = "mta:"\n'
        f'password_fingerprint_key_file = "{key}"\n'
        f"steps = [0.3]\nuser_threshold = 2\nuser_steps = [{HOLD}]\n"
    )
    a = start_bridge(policy_dir, policy_users, "fleet-a", config)
    b = start_bridge(policy_dir, policy_users, "fleet-b", config)
    try:
        exim = exim_for(a.socket_path, policy_dir, "fleet-exim", policy_tls)
        postfix_config = postfix_for(b.socket_path, policy_dir, "fleet-postfix", policy_tls)
        with PostfixMaster(postfix_config) as postfix:
            for n in range(2):  # two guesses through Exim (instance a)
                guess = exim_session(exim, USER, client_ip=ATTACKER, tls=True, password=f"g{n}")
                assert guess.auth_code == 535, guess.transcript
            client = redis_server.client()
            wait_for_value(lambda: int(client.get(f"mta:ip:{ATTACKER}") or 0), lambda v: v == 2)
            # A third guess, through Postfix (instance b) from its own address: refused,
            # and its FAIL held for the account's spraying step counted through Exim.
            started = time.monotonic()
            refused = postfix_session(postfix.server, USER, password="g-postfix")
            held = time.monotonic() - started
            assert refused.auth_code == 535, refused.transcript
            assert held >= HOLD, held
            # The rightful user: 235 through Exim from a clean address, without the hold,
            rightful = exim_session(exim, USER, client_ip="192.0.2.55", tls=True)
            assert rightful.auth_code == 235, rightful.transcript
            # and through Postfix, whose address has just failed (waits, is not refused).
            again = postfix_session(postfix.server, USER, password=PASSWORDS[USER])
            assert again.auth_code == 235, again.transcript
            # Exim's attacker, now at level 2, is still refused (the penalty is the wait).
            late = exim_session(exim, USER, client_ip=ATTACKER, tls=True, password="g9")
            assert late.auth_code == 535, late.transcript
    finally:
        a.stop()
        b.stop()
