"""A throw-away self-signed certificate for the STARTTLS interop tests.

Made once per test session with the real ``openssl`` binary. Exim drops to the
Debian-exim user before it reads the key, so the key is ``root:Debian-exim 0640``
(Postfix reads it as root before it drops privileges).
"""

from __future__ import annotations

import grp
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

EXIM_GROUP = "Debian-exim"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a PEM certificate and its unencrypted private key."""

    cert: Path
    key: Path


class TlsSetupError(RuntimeError):
    """openssl could not make the test certificate."""


def make_self_signed(directory: Path, common_name: str = "localhost") -> TlsFiles:
    """Create ``cert.pem``/``key.pem`` in *directory* (valid for 2 days, SAN 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    cmd = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN={common_name}",
        "-addext", f"subjectAltName=DNS:{common_name},IP:127.0.0.1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise TlsSetupError(f"openssl req failed ({proc.returncode}): {proc.stderr.strip()}")
    try:
        gid = grp.getgrnam(EXIM_GROUP).gr_gid
    except KeyError:
        gid = -1  # no Exim on this machine: the Exim tests will be skipped or fail anyway
    if gid != -1 and os.geteuid() == 0:
        os.chown(key, 0, gid)
    os.chmod(key, 0o640)
    os.chmod(cert, 0o644)
    return TlsFiles(cert=cert, key=key)
