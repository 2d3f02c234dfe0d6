"""Item 4: the per-IP penalty, in-process (exact, on explicit clocks) and in the daemon.

The daemon part asserts lower bounds for the growth (a penalised request cannot be
answered before its delay) and a wide margin for the exemptions, never tight timing.
"""

from __future__ import annotations

import time

import pytest

from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.config import ConfigError, PolicyConfig, parse_config
from tests.policy.authclient import AuthClient
from tests.policy.conftest import StartBridge
from tests.policy.users import PASSWORDS

STEPS = (1.0, 2.0, 4.0, 6.0)


def _tracker(**kwargs: object) -> PenaltyTracker:
    return PenaltyTracker(PenaltySettings(**kwargs))  # type: ignore[arg-type]


def test_delay_grows_with_distinct_failures_and_is_capped() -> None:
    tracker = _tracker()
    assert tracker.settings.steps == STEPS
    rip, now = "198.51.100.20", 100.0
    seen = [tracker.delay(rip, now)]
    for n in range(8):
        tracker.failed(rip, "alice", f"guess-{n}".encode(), now)
        seen.append(tracker.delay(rip, now))
    assert seen == [0.0, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0, 6.0, 6.0]


def test_penalty_plus_failure_delay_stays_below_postfix_read_timeout() -> None:
    assert PolicyConfig().failure_delay + max(PenaltySettings().steps) < 10
    with pytest.raises(ConfigError, match="10 s"):
        parse_config("[policy]\nfailure_delay = 3\n[penalty]\nsteps = [1, 7]\n")
    with pytest.raises(ConfigError, match="below 10"):
        parse_config("[penalty]\nsteps = [1, 12]\n")
    # Allowed when the penalty is off.
    parse_config("[policy]\nfailure_delay = 5\n[penalty]\nenabled = false\nsteps = [6]\n")


def test_same_wrong_password_repeated_does_not_escalate() -> None:
    tracker = _tracker()
    rip = "198.51.100.21"
    for second in range(20):
        tracker.failed(rip, "phone", b"old-password", float(second))
    assert tracker.delay(rip, 20.0) == 1.0
    tracker.failed(rip, "phone", b"another", 21.0)
    assert tracker.delay(rip, 21.0) == 2.0
    # Same password, other user: a new guess.
    tracker.failed(rip, "other", b"another", 22.0)
    assert tracker.delay(rip, 22.0) == 4.0


def test_success_clears_and_quiet_period_forgets() -> None:
    tracker = _tracker(forget_after=60.0)
    rip = "198.51.100.22"
    tracker.failed(rip, "u", b"a", 0.0)
    tracker.failed(rip, "u", b"b", 1.0)
    assert tracker.delay(rip, 2.0) == 2.0
    tracker.succeeded(rip)
    assert tracker.delay(rip, 2.0) == 0.0
    tracker.failed(rip, "u", b"c", 10.0)
    assert tracker.delay(rip, 69.0) == 1.0
    assert tracker.delay(rip, 71.0) == 0.0
    assert len(tracker) == 0


@pytest.mark.parametrize(
    ("prefix", "neighbour", "shared"),
    [
        (64, "2001:db8:1:2:ffff::9", True),
        (64, "2001:db8:1:3::1", False),
        (48, "2001:db8:1:3::1", True),
        (48, "2001:db8:2::1", False),
    ],
)
def test_ipv6_addresses_share_a_prefix(prefix: int, neighbour: str, shared: bool) -> None:
    tracker = _tracker(ipv6_prefix=prefix)
    tracker.failed("2001:db8:1:2::1", "u", b"x", 0.0)
    assert (tracker.delay(neighbour, 1.0) > 0) is shared


def test_ipv4_addresses_are_not_grouped() -> None:
    tracker = _tracker()
    tracker.failed("192.0.2.1", "u", b"x", 0.0)
    assert tracker.delay("192.0.2.2", 0.0) == 0.0


def test_trusted_networks_and_requests_without_rip_are_exempt() -> None:
    tracker = _tracker(trusted_networks=("10.0.0.0/8", "fd00::/8"))
    for rip in ("10.1.2.3", "fd00::5", None):
        for n in range(5):
            tracker.failed(rip, "u", f"p{n}".encode(), 0.0)
        assert tracker.delay(rip, 0.0) == 0.0
    assert len(tracker) == 0


def test_tracked_addresses_are_bounded() -> None:
    tracker = _tracker(max_entries=100)
    for n in range(1000):
        tracker.failed(f"203.0.113.{n % 250}" if n < 250 else f"2001:db8:{n}::1", "u", b"x", 0.0)
    assert len(tracker) == 100


def test_disabled_penalty_never_delays() -> None:
    tracker = _tracker(enabled=False)
    for n in range(5):
        tracker.failed("192.0.2.9", "u", f"p{n}".encode(), 0.0)
    assert tracker.delay("192.0.2.9", 0.0) == 0.0


# ---------------------------------------------------------------- the daemon

DAEMON_STEPS = (0.6, 1.2, 1.8)
CONFIG = f"""\
[policy]
failure_delay = 0
[penalty]
steps = {list(DAEMON_STEPS)}
trusted_networks = ["203.0.113.0/24"]
# The per-address penalty alone: these tests fail one account many times from several
# addresses, which the spraying defence (tests/policy/test_spraying.py) would slow.
spraying = false
"""


def _timed(client: AuthClient, request_id: int, user: str, password: str, *params: str) -> float:
    started = time.monotonic()
    reply = client.plain(request_id, user, password, "secured", *params)
    elapsed = time.monotonic() - started
    assert reply.startswith(("OK", "FAIL")), reply
    return elapsed


def test_daemon_penalises_the_failing_address_only(bridge: StartBridge) -> None:
    server = bridge("penalty", CONFIG)
    attacker, other = "rip=192.0.2.66", "rip=192.0.2.67"
    with AuthClient(server.socket_path) as c:
        first = _timed(c, 1, "plainuser", "guess-1", attacker)
        second = _timed(c, 2, "plainuser", "guess-2", attacker)
        third = _timed(c, 3, "plainuser", "guess-3", attacker)
        assert first < DAEMON_STEPS[0]
        assert second >= DAEMON_STEPS[0]
        assert third >= DAEMON_STEPS[1]
        # The penalty is the attacker's: others, and flagged requests, are not held back.
        assert _timed(c, 4, "plainuser", PASSWORDS["plainuser"], other) < DAEMON_STEPS[0] / 2
        flagged = _timed(c, 5, "plainuser", "guess-4", attacker, "no-penalty")
        assert flagged < DAEMON_STEPS[0] / 2
        # An IPv6 attacker next door in the same /64 shares its bucket.
        for n in range(2):
            _timed(c, 10 + n, "plainuser", f"v6-{n}", "rip=2001:db8:5:6::1")
        assert _timed(c, 12, "plainuser", "v6-x", "rip=2001:db8:5:6::beef") >= DAEMON_STEPS[1]
        assert _timed(c, 13, "plainuser", "v6-y", "rip=2001:db8:5:7::1") < DAEMON_STEPS[0] / 2


def test_daemon_exempts_trusted_networks(bridge: StartBridge) -> None:
    server = bridge("penalty-trusted", CONFIG)
    with AuthClient(server.socket_path) as c:
        times = [_timed(c, n, "plainuser", f"g{n}", "rip=203.0.113.5") for n in range(1, 5)]
    assert max(times) < DAEMON_STEPS[0] / 2, times


def test_daemon_penalty_holds_no_other_connection(bridge: StartBridge) -> None:
    """While the attacker's requests sit in their penalty, a user is answered at once."""
    server = bridge("penalty-busy", CONFIG)
    with AuthClient(server.socket_path) as attacker, AuthClient(server.socket_path) as user:
        for n in range(1, 4):
            attacker.plain(n, "plainuser", f"g{n}", "secured", "rip=192.0.2.80")
        lines = "".join(
            f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.80\tresp=AGEAYg==\n"
            for n in range(10, 50)  # 8 checked at a time per connection: 5 waits of 1.8 s
        )
        attacker.send(lines)
        started = time.monotonic()
        reply = user.plain(1, "plainuser", PASSWORDS["plainuser"], "secured", "rip=192.0.2.81")
        assert reply.startswith("OK\t1\t"), reply
        assert time.monotonic() - started < DAEMON_STEPS[0]
        assert attacker.reply(49, timeout=15).startswith("FAIL\t49\t")
