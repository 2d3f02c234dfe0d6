"""Differential fuzzing of authbridge ``--dovecot-compat`` against real Dovecot 2.3.

Every case (tests/fuzz/diff_cases.py) is played on its own connection to each server,
many cases at once, because Dovecot sends FAILs on a 500 ms timer and a case mostly
waits. The two records must be equal per request id, both servers must agree on whether
the connection was closed, and both must still accept a new connection afterwards.

Only compat mode is compared: it is the mode that promises Dovecot's exact wire
behaviour. The default mode's differences are policy (SPEC §12), checked by ordinary
tests.

Long runs: ``python -m tests.fuzz.differential --seed N --seconds S``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.conformance.transcript import USERS_FILE
from tests.fuzz.diff_cases import Case, make_case
from tests.fuzz.diff_client import Record, accepts_connections, run_case
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

MECHANISMS = ("plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256")
CONCURRENCY = 48
#: Crash markers in authbridge's log: an exception escaped somewhere.
CRASH_MARKERS = ("Traceback", "internal error", "internal_error")


@dataclass
class Divergence:
    case: Case
    dovecot: Record
    authbridge: Record
    why: str

    def difference(self) -> str:
        """Only the request ids whose replies differ."""
        theirs, ours = self.dovecot.by_id(), self.authbridge.by_id()
        out = []
        for key in sorted(theirs.keys() | ours.keys()):
            if theirs.get(key) != ours.get(key):
                out.append(f"  id {key!r}: dovecot {theirs.get(key)!r}")
                out.append(f"  id {key!r}: authbridge {ours.get(key)!r}")
        return "\n".join(out)

    def report(self) -> str:
        out = [f"DIVERGENCE ({self.why}) {self.case.describe()}", self.difference()]
        for name, rec in (("dovecot", self.dovecot), ("authbridge", self.authbridge)):
            out.append(f"  --- {name}: closed={rec.closed} partial={rec.partial!r}")
            out.extend(f"    C: {data!r}" for data in rec.sent)
            out.extend(f"    S: {line!r}" for line in rec.replies)
        return "\n".join(out)


@dataclass
class Outcome:
    cases: int = 0
    #: Cases whose mutation hit a challenge-dependent line (compared for crashes only).
    inconclusive: int = 0
    seconds: float = 0.0
    divergences: list[Divergence] = field(default_factory=list)
    #: Divergences that no replay of their case showed again: timing on a loaded
    #: machine (a close seen after the client stopped waiting), not behaviour.
    unconfirmed: list[Divergence] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.cases} cases in {self.seconds:.1f} s ({self.rate:.1f} cases/s; "
            f"{self.inconclusive} not comparable), "
            f"{len(self.divergences)} divergences ({len(self.unconfirmed)} more not "
            f"confirmed by a replay), {len(self.crashes)} crash lines, "
            f"{len(self.dead)} liveness failures"
        )


#: FAILs Dovecot sends at once; every other FAIL waits for its 500 ms flush timer.
IMMEDIATE_FAILS = (b"\treason=Authentication request timed out", b"\tcode=invalid_base64\t")


def _delayed_fail(line: bytes) -> bool:
    return line.startswith(b"FAIL\t") and not any(m in line for m in IMMEDIATE_FAILS)


def _same_replies(dovecot: Record, authbridge: Record) -> bool:
    """Equal per request id, up to the failure delay (SPEC §12).

    Dovecot holds decided FAILs for up to 500 ms and drops them when it closes the
    connection in that time; ``--failure-delay 0`` sends them at once. So when both
    servers closed, authbridge may have sent delayed FAILs at the end of an id's
    replies that Dovecot never did.
    """
    theirs, ours = dovecot.by_id(), authbridge.by_id()
    if theirs == ours:
        return True
    both_closed = dovecot.closed and authbridge.closed
    for key in theirs.keys() | ours.keys():
        expected, got = theirs.get(key, []), ours.get(key, [])
        # A held FAIL may be overtaken by a later immediate reply for the same id.
        if [x for x in expected if not _delayed_fail(x)] != [
            x for x in got if not _delayed_fail(x)
        ]:
            return False
        held, sent = sorted(filter(_delayed_fail, expected)), sorted(filter(_delayed_fail, got))
        if held == sent:
            continue
        if not both_closed or any(sent.count(line) < held.count(line) for line in held):
            return False
    return True


def compare(dovecot: Record, authbridge: Record) -> str | None:
    if dovecot.handshake != authbridge.handshake:
        return "handshake"
    if not _same_replies(dovecot, authbridge):
        return "replies"
    if dovecot.closed != authbridge.closed:
        return "closed"
    if dovecot.partial != authbridge.partial:
        return "partial line"
    return None


async def _one(case: Case, dovecot_path: str, authbridge_path: str, outcome: Outcome) -> None:
    records: dict[str, Record] = {}

    async def play(name: str, path: str) -> None:
        records[name] = await run_case(path, case)
        if not await accepts_connections(path):
            outcome.dead.append(f"{name} stopped accepting after {case.describe()}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, "dovecot", dovecot_path)
        nursery.start_soon(play, "authbridge", authbridge_path)
    outcome.cases += 1
    if records["dovecot"].inconclusive or records["authbridge"].inconclusive:
        outcome.inconclusive += 1
        return
    why = compare(records["dovecot"], records["authbridge"])
    if why is None:
        return
    divergence = Divergence(case, records["dovecot"], records["authbridge"], why)
    if await _reproduces(case, dovecot_path, authbridge_path):
        outcome.divergences.append(divergence)
    else:
        outcome.unconfirmed.append(divergence)


#: Replays of a diverging case before it counts: the records depend on waiting for
#: replies and closes, which a stalled machine can stretch past the client's patience.
REPLAYS = 2


async def _reproduces(case: Case, dovecot_path: str, authbridge_path: str) -> bool:
    """Whether the case diverges again in one of :data:`REPLAYS` replays."""
    for _ in range(REPLAYS):
        records = await _play_both(case, dovecot_path, authbridge_path)
        if compare(records["dovecot"], records["authbridge"]) is not None:
            return True
    return False


async def _play_both(case: Case, dovecot_path: str, authbridge_path: str) -> dict[str, Record]:
    records: dict[str, Record] = {}

    async def play(name: str, path: str) -> None:
        records[name] = await run_case(path, case)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, "dovecot", dovecot_path)
        nursery.start_soon(play, "authbridge", authbridge_path)
    return records


async def fuzz(
    dovecot_path: str,
    authbridge_path: str,
    seed: int,
    seconds: float,
    concurrency: int = CONCURRENCY,
    max_divergences: int = 20,
    start_index: int = 0,
) -> Outcome:
    """Run cases ``seed:start_index``, ``seed:start_index+1``, ... for ``seconds``."""
    outcome = Outcome()
    started = time.monotonic()
    deadline = started + seconds
    limiter = trio.CapacityLimiter(concurrency)
    index = start_index

    async def guarded(case: Case) -> None:
        try:
            await _one(case, dovecot_path, authbridge_path, outcome)
        finally:
            limiter.release_on_behalf_of(case)

    async with trio.open_nursery() as nursery:
        while time.monotonic() < deadline and len(outcome.divergences) < max_divergences:
            case = make_case(seed, index)
            index += 1
            await limiter.acquire_on_behalf_of(case)
            nursery.start_soon(guarded, case)
    outcome.seconds = time.monotonic() - started
    return outcome


def crash_lines(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if any(m in line for m in CRASH_MARKERS)]


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[DovecotAuth, AuthbridgeServer]]:
    """Real Dovecot and authbridge --dovecot-compat, both with all five mechanisms."""
    users = workdir / "users.passwd"
    shutil.copyfile(USERS_FILE, users)
    users.chmod(0o644)
    workdir.chmod(0o755)
    dovecot = DovecotAuth(
        users, workdir / "dovecot-auth", mechanisms=MECHANISMS, workdir=workdir / "dovecot"
    )
    authbridge = AuthbridgeServer(
        users,
        workdir / "authbridge-auth",
        mechanisms=MECHANISMS,
        extra_args=("--dovecot-compat", "--failure-delay", "0"),
    )
    with dovecot, authbridge:
        yield dovecot, authbridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--index", type=int, default=0, help="first case index")
    parser.add_argument("--one", action="store_true", help="run only case SEED:INDEX")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    workdir = Path(tempfile.mkdtemp(prefix="authbridge-diff-"))
    try:
        with servers(workdir) as (dovecot, authbridge):
            if args.one:
                outcome = Outcome()
                case = make_case(seed, args.index)
                trio.run(_one, case, str(dovecot.socket_path), str(authbridge.socket_path), outcome)
                rec_report = Divergence(case, Record(), Record(), "shown").report()
                print(rec_report if not outcome.divergences else outcome.divergences[0].report())
            else:
                outcome = trio.run(
                    fuzz,
                    str(dovecot.socket_path),
                    str(authbridge.socket_path),
                    seed,
                    args.seconds,
                    args.concurrency,
                    50,
                    args.index,
                )
            outcome.crashes = crash_lines(authbridge.stderr_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for divergence in outcome.divergences:
        print(divergence.report(), end="\n\n")
    for divergence in outcome.unconfirmed:
        print("NOT CONFIRMED BY A REPLAY:", divergence.report(), sep="\n", end="\n\n")
    for line in outcome.dead + outcome.crashes[:20]:
        print(line)
    print(f"seed {seed}: {outcome.summary()}")
    return 1 if outcome.divergences or outcome.dead or outcome.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
