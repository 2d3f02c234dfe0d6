"""Items 3 and 11 as structure, not speed: an attacker's burst does not queue a user.

An attacker keeps thousands of requests in flight on one connection. Counted on the
client side: how many attacker replies arrive while one legitimate request (another
connection, another address) is waiting for its answer. A server that serves the
connections fairly answers the user after a handful of attacker replies; one that works
through the whole burst first makes the user wait behind thousands — which is how
Dovecot's p99 reaches 60 ms in the flood benchmark, and worse here in seconds.
"""

from __future__ import annotations

import bisect
import threading
import time

from tests.policy.authclient import AuthClient, ConnectionClosed, plain_resp
from tests.policy.conftest import StartBridge
from tests.policy.users import PASSWORDS

BURST = 3000
#: Attacker replies a user may see go by while waiting; the whole burst is 3000.
MAX_OVERTAKEN = 300
CONFIG = "[policy]\nfailure_delay = 0\n[penalty]\nsteps = [1.0]\n"


class _Arrivals(threading.Thread):
    """Reads the attacker's socket and timestamps every reply line."""

    def __init__(self, client: AuthClient, expected: int) -> None:
        super().__init__(daemon=True)
        self.client, self.expected = client, expected
        self.times: list[float] = []

    def run(self) -> None:
        while len(self.times) < self.expected:
            try:
                self.client.read_line(timeout=30)
            except (ConnectionClosed, TimeoutError, OSError):
                return
            self.times.append(time.monotonic())


def test_penalised_burst_does_not_hold_up_a_user(bridge: StartBridge) -> None:
    server = bridge("fair", CONFIG)
    attacker = AuthClient(server.socket_path)
    user = AuthClient(server.socket_path)
    arrivals = _Arrivals(attacker, BURST)
    try:
        # Put the attacker's address into the penalty (each later request waits 1 s).
        for n in (1, 2):
            attacker.plain(n, "plainuser", f"warm-{n}", "secured", "rip=192.0.2.99")
        arrivals.start()
        attacker.send(
            "".join(
                f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.99\t"
                f"resp={plain_resp('plainuser', f'guess-{n}')}\n"
                for n in range(100, 100 + BURST)
            )
        )
        waits: list[tuple[float, float]] = []
        request_id = 0
        # Long enough for the penalty (1 s) to end and the burst to be worked through.
        deadline = time.monotonic() + 6
        while arrivals.is_alive() and time.monotonic() < deadline:
            request_id += 1
            sent = time.monotonic()
            reply = user.plain(
                request_id, "plainuser", PASSWORDS["plainuser"], "secured", "rip=198.51.100.1"
            )
            waits.append((sent, time.monotonic()))
            assert reply.startswith("OK"), reply
        times = list(arrivals.times)
        overtaken = [
            bisect.bisect_left(times, done) - bisect.bisect_right(times, sent)
            for sent, done in waits
        ]
        assert max(overtaken) <= MAX_OVERTAKEN, (
            f"a user's request waited while {max(overtaken)} attacker replies went out "
            f"({len(waits)} user requests during the burst)"
        )
    finally:
        attacker.close()
        user.close()
        if arrivals.is_alive():
            arrivals.join(5)
