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


def test_rehash_says_who_moves_and_who_an_enabled_mechanism_keeps(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS + "md5:{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99\n")
    config = tmp_path / "authbridge.toml"
    config.write_text(
        '[server]\nmechanisms = ["plain", "login", "cram-md5"]\n'
        '[[store]]\npath = "users"\n[rehash]\nenabled = true\nscheme = "ARGON2ID"\n'
    )
    result = _run("--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["user"]: row.get("rehash") for row in map(json.loads, result.stdout.splitlines())}
    assert rows == {
        "plain": "kept (CRAM-MD5 needs it)",
        "cram": "kept (CRAM-MD5 needs it)",
        "crypt": None,
        "scram": None,
        "odd": None,
        "md5": "to ARGON2ID",
    }
    text = _run("--config", str(config))
    assert "md5\tPLAIN-MD5\tPLAIN LOGIN\trehash: to ARGON2ID" in text.stdout
    assert "1 weak users move to ARGON2ID" in text.stderr
    assert "2 keep a weak scheme an enabled mechanism needs" in text.stderr


def test_without_rehash_no_rehash_column(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("md5:{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99\n")
    result = _run("--passwd-file", str(users))
    assert "rehash" not in result.stdout + result.stderr
