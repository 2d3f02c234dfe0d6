"""The installed ``doveconf``, asked for a config's every setting (defaults included).

It resolves ``!include`` and knows every default of the installed Dovecot, so it is
preferred to our own parser; its output (``doveconf -a``) is Dovecot's syntax, read by
:mod:`.syntax`. It is only run at start and reload, never per request.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from authbridge.errors import ConfigError
from authbridge.passdb.dovecot.syntax import Section, parse_text

#: doveconf answers in well under a second; a hung one must not stall a reload forever.
DOVECONF_TIMEOUT = 30.0


def find_doveconf() -> str | None:
    """The ``doveconf`` on PATH (or in /usr/bin, /usr/sbin), ``None`` when not installed."""
    return shutil.which("doveconf") or shutil.which(
        "doveconf", path="/usr/bin:/usr/sbin:/usr/local/bin"
    )


def read_with_doveconf(path: Path, binary: str) -> Section:
    """Every setting of ``path`` as doveconf resolves it; ConfigError with doveconf's
    own message (which names file and line) when it refuses the config."""
    command = [binary, "-a", "-c", str(path)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOVECONF_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "timed out"
        raise ConfigError(f"{path}: cannot run {binary}: {why}") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {done.returncode}"
        for prefix in ("doveconf: Fatal: ", "doveconf: Error: "):
            message = message.removeprefix(prefix)
        raise ConfigError(f"{path}: doveconf refused it: {message}")
    return parse_text(done.stdout, f"doveconf -a -c {path}")
