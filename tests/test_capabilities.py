"""``authbridge capabilities``: the article's CRAM-MD5 dilemma answered per user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

USERS = """\
plain:{PLAIN}x
cram:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56
crypt:{SHA512-CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1
scram:{SCRAM-SHA-256}4096,LfNGSFqiFykEZ1xDAYlnKQ==,HACNf9CII7cMz3XjRy/Oh3Ae2LHApoDyNw74d3YtFws=,AQH0j7Hf8J12g8eNBadvzlNB2am3PxgNwFCFd3RxEaw=
odd:{NOSUCH}x
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "capabilities", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_each_user_gets_the_mechanisms_its_scheme_allows(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    result = _run("--passwd-file", str(users), "--json")
    assert result.returncode == 0
    rows = {row["user"]: row["mechanisms"] for row in map(json.loads, result.stdout.splitlines())}
    assert rows == {
        "plain": ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"],
        "cram": ["PLAIN", "LOGIN", "CRAM-MD5"],
        "crypt": ["PLAIN", "LOGIN"],
        "scram": ["PLAIN", "LOGIN", "SCRAM-SHA-256"],
        "odd": [],
    }


def test_summary_counts_who_could_use_cram_md5(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    result = _run("--passwd-file", str(users))
    assert "CRAM-MD5       usable by 2 of 5" in result.stderr


def test_a_broken_store_is_reported_with_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("a:{PLAIN}x\nb:\x00\n")
    result = _run("--passwd-file", str(users))
    assert result.returncode == 1 and f"{users}:2" in result.stderr
