"""Item 3: failures wait in one delay queue, not in a sleeping task per request.

The in-process part drives :class:`FailureDelayQueue` on trio's mock clock; the daemon
part keeps 2,000 failures pending in a real ``authbridge serve`` and shows that a
success on another connection is answered meanwhile, with no thread per failure.
Nothing asserts tight milliseconds: only ordering, counts and generous bounds.
"""

from __future__ import annotations

import time

import trio
import trio.testing

from authbridge.config import PolicyConfig
from authbridge.daemon.server import FailureDelayQueue
from tests.policy.authclient import AuthClient, plain_resp
from tests.policy.conftest import StartBridge
from tests.policy.daemon import (
    metrics_args,
    pid_of,
    scrape,
    thread_count,
    wait_for_metrics,
    wait_until,
)
from tests.policy.users import PASSWORDS

DELAY = 5.0
CONNECTIONS = 20
PER_CONNECTION = 100


class _Sink:
    """Stands in for a Connection: records what the queue pushed, and when."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[tuple[float, bytes]] = []

    def push(self, data: bytes) -> None:
        self.received.append((trio.current_time(), data))


def test_default_failure_delay_is_two_seconds() -> None:
    assert PolicyConfig().failure_delay == 2.0


async def test_queue_releases_in_due_order_with_one_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FailureDelayQueue()
    sinks = [_Sink(f"c{i}") for i in range(4)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        await trio.testing.wait_all_tasks_blocked()
        tasks_before = trio.lowlevel.current_statistics().tasks_living
        start = trio.current_time()
        for n in range(2000):
            sink = sinks[n % 4]
            # Delays 2.0 .. 2.999, interleaved across sinks.
            queue.add(sink, f"FAIL\t{n}\n".encode(), 2.0 + (n * 7 % 1000) / 1000)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert trio.lowlevel.current_statistics().tasks_living == tasks_before
        assert len(queue) == 2000
        assert not any(s.received for s in sinks)
        await trio.sleep(1.99)
        assert len(queue) == 2000, "released before its time"
        await trio.sleep(1.1)
        assert len(queue) == 0
        nursery.cancel_scope.cancel()
    times = [t for s in sinks for t, _ in s.received]
    assert len(times) == 2000
    assert min(times) - start >= 2.0
    for sink in sinks:
        assert [t for t, _ in sink.received] == sorted(t for t, _ in sink.received)


async def test_flush_all_releases_everything_now(autojump_clock: trio.testing.MockClock) -> None:
    queue = FailureDelayQueue()
    sink = _Sink("c")
    for n in range(10):
        queue.add(sink, b"FAIL\t%d\n" % n, 100.0)  # type: ignore[arg-type]
    queue.flush_all()
    assert len(queue) == 0
    assert [d for _, d in sink.received] == [b"FAIL\t%d\n" % n for n in range(10)]


def test_two_thousand_pending_failures_delay_no_success(bridge: StartBridge) -> None:
    args, url = metrics_args()
    server = bridge(
        "delayq",
        f"[policy]\nfailure_delay = {DELAY}\n[penalty]\nenabled = false\n",
        args,
    )
    pid = pid_of(server)
    wait_for_metrics(url)
    threads_before = thread_count(pid)
    attackers = [AuthClient(server.socket_path) for _ in range(CONNECTIONS)]
    wrong = plain_resp("plainuser", "wrong-password")
    sent_at = time.monotonic()
    for index, client in enumerate(attackers):
        lines = "".join(
            f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.{index}\tresp={wrong}\n"
            for n in range(1, PER_CONNECTION + 1)
        )
        client.send(lines)
    total = CONNECTIONS * PER_CONNECTION
    wait_until(
        lambda: scrape(url).get("authbridge_delayed_failures", 0) >= total,
        DELAY - 1,
        f"{total} failures pending in the delay queue",
    )
    threads_during = min(thread_count(pid) for _ in range(3))
    assert threads_during <= threads_before + 2, (threads_before, threads_during)

    # A legitimate user on a fresh connection is answered while all of them wait.
    with AuthClient(server.socket_path) as user:
        reply = user.plain(1, "plainuser", PASSWORDS["plainuser"], "secured", "rip=198.51.100.7")
    assert reply.startswith("OK\t1\t"), reply
    assert scrape(url)["authbridge_delayed_failures"] >= total, "failures left too early"
    assert time.monotonic() - sent_at < DELAY

    for client in attackers:
        for n in range(1, PER_CONNECTION + 1):
            line = client.reply(n, timeout=DELAY + 10)
            assert line.startswith(f"FAIL\t{n}\t"), line
        client.close()
    assert time.monotonic() - sent_at >= DELAY - 0.1
