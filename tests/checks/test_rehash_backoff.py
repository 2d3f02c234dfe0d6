"""A rehash write that fails is not tried again at every login: the store and the user wait
a backoff that doubles up to a bound, logins meanwhile count as ``deferred``, and a
success clears it. A user whose entry cannot be rewritten in place waits the longest."""

from __future__ import annotations

from pathlib import Path

import trio

from authbridge.checks.rehash import Rehasher
from authbridge.core.verdict import Outcome
from authbridge.passdb.exim_file import EximFileStore
from tests.checks.test_rehash import Counted, _login, _pipeline, _until, _users_file, policy
from tests.passdb.test_rewrite import read_only_directory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_write_backs_off_doubling_and_a_success_clears_it(tmp_path: Path) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    store = _users_file(directory / "users", "alice", "bob")
    counted, clock = Counted(), Clock()
    rehasher = Rehasher(policy(), 10, counted, backoff=(10.0, 25.0), clock=clock)
    checks = _pipeline(store, rehasher)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rehasher.run)
            with read_only_directory(directory):
                assert _login(checks, "alice").outcome is Outcome.OK
                await _until(lambda: counted.results == ["failed"])
                # Within the backoff: neither alice nor bob (same store) is queued.
                for user in ("alice", "bob", "alice"):
                    assert _login(checks, user).outcome is Outcome.OK
                assert counted.results == ["failed"] + ["deferred"] * 3
                assert rehasher.queued() == 0 and rehasher.backing_off() == 2
                clock.now += 10.5  # the first delay is over: tried again, fails again
                assert _login(checks, "alice").outcome is Outcome.OK
                await _until(lambda: counted.results.count("failed") == 2)
                clock.now += 10.5  # the delay doubled to 20: still waiting
                assert _login(checks, "alice").outcome is Outcome.OK
                assert counted.results[-1] == "deferred"
            clock.now += 10.0  # 20.5 s after the second failure; the directory is writable
            assert _login(checks, "alice").outcome is Outcome.OK
            await _until(lambda: counted.results[-1] == "written")
            assert rehasher.backing_off() == 0
            assert _login(checks, "bob").outcome is Outcome.OK  # the store is open again
            await _until(lambda: counted.results.count("written") == 2)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert (directory / "users").read_text().count("{ARGON2ID}") == 2


def test_the_delay_is_bounded(tmp_path: Path) -> None:
    clock = Clock()
    rehasher = Rehasher(policy(), 10, None, backoff=(10.0, 25.0), clock=clock)
    table: dict[int, object] = {}
    delays = []
    for _ in range(5):
        rehasher._back_off(table, 1)  # type: ignore[arg-type]
        delays.append(table[1].delay)  # type: ignore[attr-defined]
    assert delays == [10.0, 20.0, 25.0, 25.0, 25.0]


def test_an_exim_value_split_over_lines_is_refused_once_then_backed_off(tmp_path: Path) -> None:
    path = tmp_path / "exim-passwd"
    text = "dora:\n  {PLAIN}two\n  words\n"  # the value is "{PLAIN}two words"
    path.write_text(text)
    store = EximFileStore(path)
    store.load()
    counted, clock = Counted(), Clock()
    rehasher = Rehasher(policy(), 10, counted, clock=clock)
    checks = _pipeline(store, rehasher)  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rehasher.run)
            assert _login(checks, "dora", b"two words").outcome is Outcome.OK
            await _until(lambda: counted.results == ["skipped_unwritable"])
            assert _login(checks, "dora", b"two words").outcome is Outcome.OK
            assert counted.results == ["skipped_unwritable", "deferred"]
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert path.read_text() == text
