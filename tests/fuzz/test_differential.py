"""Differential fuzzing against the real Dovecot 2.3, bounded in time (see differential.py).

Two runs share the time budget: a fixed seed (the same cases on every run, so a
regression shows at once) and a fresh seed per run (new cases every time), which the
failure message prints for replay:

    AUTHBRIDGE_DIFF_SEED=N AUTHBRIDGE_DIFF_SECONDS=60 pytest tests/fuzz/test_differential.py
    python -m tests.fuzz.differential --seed N --seconds 600

``AUTHBRIDGE_DIFF_SECONDS`` is the whole budget (20 s by default; .ci/run sets more).
Without Dovecot the test skips on a laptop and fails when CI=true (require_binary).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.differential import Outcome, crash_lines, fuzz, servers
from tests.support import require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

FIXED_SEED = 15
SECONDS = float(os.environ.get("AUTHBRIDGE_DIFF_SECONDS", "20"))


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[DovecotAuth, AuthbridgeServer]]:
    require_binary("dovecot")
    # Directly under /tmp, not pytest's base directory: another pytest session on the
    # machine may make that 0700 again, and Dovecot's auth process would then answer
    # temp_fail for every user it can no longer read.
    workdir: Path = runtime_dir(None, "differential")
    try:
        with servers(workdir) as both:
            yield both
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _seeds() -> list[int]:
    replay = os.environ.get("AUTHBRIDGE_DIFF_SEED")
    if replay:
        return [int(replay)]
    return [FIXED_SEED, random.randrange(2**32)]


@pytest.mark.interop
@pytest.mark.parametrize("seed", _seeds(), ids=lambda s: f"seed{s}")
async def test_compat_mode_answers_like_dovecot(
    seed: int, pair: tuple[DovecotAuth, AuthbridgeServer]
) -> None:
    dovecot, authbridge = pair
    seconds = SECONDS / len(_seeds())
    before = len(crash_lines(authbridge.stderr_text()))
    outcome: Outcome = await fuzz(
        str(dovecot.socket_path), str(authbridge.socket_path), seed, seconds, max_divergences=5
    )
    outcome.crashes = crash_lines(authbridge.stderr_text())[before:]
    print(f"seed {seed}: {outcome.summary()}")
    for divergence in outcome.unconfirmed:  # shown with -s or when the test fails
        print("not confirmed by a replay:", divergence.case.describe(), divergence.why)
    problems = [d.report() for d in outcome.divergences] + outcome.dead + outcome.crashes
    assert not problems, (
        f"seed {seed}: {outcome.summary()}; replay with AUTHBRIDGE_DIFF_SEED={seed} or "
        f"python -m tests.fuzz.differential --seed {seed}\n\n" + "\n\n".join(problems[:5])
    )
    assert outcome.cases > 0
