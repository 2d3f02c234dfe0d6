"""Run the coverage-guided atheris target on the sans-I/O core for a bounded time.

``AUTHBRIDGE_ATHERIS_SECONDS`` sets the time (10 s by default; .ci/run sets more).
Skipped only where atheris cannot be imported and CI is not set.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tests.support import missing_peer

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("AUTHBRIDGE_ATHERIS_SECONDS", "10"))


def test_session_core_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        missing_peer("atheris is not installed (pip install -e '.[test]')")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "atheris_session.py"),
            f"-max_total_time={SECONDS}",
            f"-dict={HERE / 'atheris.dict'}",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done" in proc.stderr, proc.stderr[-2000:]
