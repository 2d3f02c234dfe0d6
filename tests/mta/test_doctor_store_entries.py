"""doctor shows each invalid store entry (issue #17 item 1): a user it names cannot log in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_doctor_fails_each_invalid_entry_with_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("good:{PLAIN}x\nu1:{SHA512-CRYPT}notahash\nx:{NOSUCH}abc\n")
    config = tmp_path / "authbridge.toml"
    config.write_text(
        f'[server]\nsocket = "{tmp_path}/sock"\n[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "authbridge", "doctor", "--config", str(config), "--no-exim"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any("3 users, 2 invalid entries" in line for line in lines), result.stdout
    fails = [line for line in lines if line.startswith("FAIL") and "store:" in line]
    assert any(f"{users}:2: user 'u1'" in line for line in fails), result.stdout
    assert any(f"{users}:3: user 'x'" in line and "NOSUCH" in line for line in fails)
    assert "notahash" not in result.stdout + result.stderr
