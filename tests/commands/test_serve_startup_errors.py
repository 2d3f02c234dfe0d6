"""A store that cannot be loaded at start is said once, in the configured log format.

Before, the daemon logged ``cannot start`` and printed the same text again as a plain
``authbridge: ...`` line on the same stderr: two messages for one error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ERROR = "NUL byte in line"


def _serve(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    users = directory / "users"
    users.write_text("ok:{PLAIN}x\nbad:\x00\n")
    command = [sys.executable, "-m", "authbridge", "serve", "--socket", str(directory / "s")]
    return subprocess.run(
        [*command, "--passwd-file", str(users), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )


def test_json_logs_say_it_once_as_json(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--log-format", "json")
    assert result.returncode == 1
    assert result.stderr.count(ERROR) == 1, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    failed = [e for e in events if e["event"] == "cannot start"]
    assert len(failed) == 1 and f"{tmp_path / 'users'}:2: {ERROR}" in failed[0]["error"]


def test_console_logs_say_it_once(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--log-format", "console")
    assert result.returncode == 1
    assert result.stderr.count(ERROR) == 1, result.stderr
    assert "cannot start" in result.stderr
    assert not any(line.startswith("authbridge: ") for line in result.stderr.splitlines())


def test_a_supervisor_adds_no_plain_copy(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--log-format", "json", "--workers", "2")
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    # a worker that got that far says it once, tagged with its slot (the other may be
    # stopped before it does); the supervisor says once why it stops
    slots = [e["worker"] for e in events if ERROR in e.get("error", "")]
    assert slots and len(slots) == len(set(slots)), events
    stopped = [e for e in events if e["event"] == "cannot start" and "worker" not in e]
    assert len(stopped) == 1, events
