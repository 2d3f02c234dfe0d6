"""kill -9 in the middle of a store file write: the file is always the old version or the
new one, byte for byte, and parses completely; a killed writer's temporary file is
removed by the next write (see passdb.rewrite).

A real writer process (tests/support/crash_writer.py) turns a 50,000-user file into
version A, B, A, ... through a real write path, and is SIGKILLed at a random moment of a
write, many times. Each write path is one entry of crash_writer.WRITERS: a new one (the
app-password command's) is covered by adding it there and to ``WRITER_FILES`` below.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.crash_writer import PARSERS

USERS = 50_000
#: The Exim store loads more slowly (about 30 us a user): fewer users keep the kills many.
EXIM_USERS = 15_000
CHANGED_EVERY = 25  # 2,000 users differ between the versions, spread over the file
KILLS = 12
TIME_BOUND = 60.0  # seconds of killing per writer, at most
REPO = Path(__file__).resolve().parents[2]


def _md5(n: int) -> str:
    return f"{n:032x}"


def _passwd_versions() -> tuple[bytes, bytes]:
    a, b = [], []
    for n in range(USERS):
        line = f"user{n:05d}:{{PLAIN-MD5}}{_md5(n)}:1000:1000::/home/u{n}::\n"
        a.append(line)
        if n % CHANGED_EVERY == 0:
            line = f"user{n:05d}:{{PLAIN-MD5}}{_md5(n + 7)}:1000:1000::/home/u{n}::\n"
        b.append(line)
    return "".join(a).encode(), "".join(b).encode()


def _exim_versions() -> tuple[bytes, bytes]:
    a, b = ["# login:md5hash\n"], ["# login:md5hash\n"]
    for n in range(EXIM_USERS):
        if n % 3 == 0:  # the value on a continuation line
            a.append(f"user{n:05d}:\n  {_md5(n)}\n")
            b.append(f"user{n:05d}:\n  {_md5(n + 7) if n % CHANGED_EVERY == 0 else _md5(n)}\n")
        else:
            a.append(f"user{n:05d}:{_md5(n)}\r\n")
            b.append(f"user{n:05d}:{_md5(n + 7) if n % CHANGED_EVERY == 0 else _md5(n)}\r\n")
    return "".join(a).encode(), "".join(b).encode()


#: App passwords in the companion file (each line is longer than a passwd-file's).
APP_PASSWORD_USERS = 10_000


def _app_password_versions() -> tuple[bytes, bytes]:
    """Version B is A with one more app password of a user A has (add appends it,
    revoke removes it): the users are the same in both."""
    lines = [
        f"user{n:05d}:phone:{{PLAIN-MD5}}{_md5(n)}:smtp:\n"
        + f"user{n:05d}:laptop:{{PLAIN-MD5}}{_md5(n + 1)}::20300101T000000Z\n"
        for n in range(APP_PASSWORD_USERS)
    ]
    first = "# user:label:{SCHEME}hash:services:expires\n" + "".join(lines)
    return first.encode(), (first + f"user00042:tablet:{{PLAIN-MD5}}{_md5(7)}::\n").encode()


#: Each writer's two versions and how many users they hold.
WRITER_FILES: dict[str, tuple[Callable[[], tuple[bytes, bytes]], int]] = {
    "rehash-passwd-file": (_passwd_versions, USERS),
    "rehash-exim-file": (_exim_versions, EXIM_USERS),
    "app-password-file": (_app_password_versions, APP_PASSWORD_USERS),
}


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".new"))


def _start(writer: str, path: Path, a: Path, b: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_writer", writer, str(path), str(a), str(b)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class _Lines:
    """The writer's announcements, read with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process, self.stdout = process, process.stdout

    def next(self, kind: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.stdout.readline()
            if not line:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"the writer ended: {stderr[-2000:]}")
            if line.startswith(kind):
                return line
        raise AssertionError(f"no {kind!r} from the writer within {timeout} s")


@pytest.mark.parametrize("writer", sorted(WRITER_FILES))
def test_kill_9_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path, writer: str) -> None:
    make, users = WRITER_FILES[writer]
    first, second = make()
    assert first != second and len(first) > 300_000
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(first)
    b.write_bytes(second)
    store = tmp_path / "store" / "users"
    store.parent.mkdir()
    store.write_bytes(first)
    parse = PARSERS[writer]
    rng = random.Random(int.from_bytes(os.urandom(4)))
    seen = {first: 0, second: 0}
    torn_windows = 0  # kills that left a temporary file: the kill landed inside a write
    deadline = time.monotonic() + TIME_BOUND
    kills = 0
    while kills < KILLS and time.monotonic() < deadline:
        process = _start(writer, store, a, b)
        try:
            # The first complete change tells how long the file write and the whole
            # change take. Then every other kill comes at a random moment of the file
            # write (announced by the writer), the others anywhere in a change.
            lines = _Lines(process)
            write = float(lines.next("W").split()[1])
            change = float(lines.next("F").split()[1])
            if kills % 2 == 0:
                lines.next("T")
                delay = rng.uniform(0.0, 1.2 * write)
            else:
                delay = rng.uniform(0.0, 2.0 * change)
            time.sleep(delay)  # not a synchronisation: the kill moment is random
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
            if process.stderr is not None:
                process.stderr.close()
        kills += 1
        data = store.read_bytes()
        assert data in seen, f"kill {kills}: the file is neither version ({len(data)} bytes)"
        seen[data] += 1
        assert parse(data.decode()) == users
        leftovers = _temporaries(store.parent)
        torn_windows += bool(leftovers)
        assert len(leftovers) <= 1, leftovers  # each write removed the earlier ones
    assert kills >= 8, f"only {kills} kills in {TIME_BOUND} s"
    assert torn_windows > 0, "no kill landed inside a write: the test proves nothing"
    # The next write (a new writer) removes what the last killed one left. Wait for a
    # write ("W"), not a change ("F"): a writer killed between its exchange and its
    # clean-up leaves the file already at the next version, and that first change then
    # writes nothing (and removes nothing).
    process = _start(writer, store, a, b)
    try:
        _Lines(process).next("W")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    leftovers = _temporaries(store.parent)
    assert len(leftovers) <= 1  # at most the one of the write just killed
    if leftovers:
        assert leftovers[0].split(".")[2] == str(process.pid)
