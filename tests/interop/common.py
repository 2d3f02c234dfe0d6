"""What the interop tests share: the test logins, their passwd-file, the auth server handle."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import require_binary


@dataclass(frozen=True)
class User:
    """A login in the generated passwd-file; ``scheme`` is how its password is stored."""

    name: str
    password: str
    scheme: str


USERS: dict[str, User] = {
    user.name: user
    for user in (
        User("plainuser", "plainpass", "PLAIN"),
        User("cramuser", "crampass", "CRAM-MD5"),
        User("sha512user", "sha512pass", "SHA512-CRYPT"),
        User("bcryptuser", "bcryptpass", "BLF-CRYPT"),
        User("alice@example.com", "alicepass", "SHA512-CRYPT"),
        User("spaceuser", "p@ss w0rd; \"double\" 'single' %s", "PLAIN"),
        User("quoteuser", 'it\'s a "quoted" pass phrase', "SHA512-CRYPT"),
    )
}


# How the parametrised tests run authbridge: Dovecot's wire behaviour, no failure delay.
AUTHBRIDGE_ARGS = ("--dovecot-compat", "--failure-delay", "0")

# A user whose stored password no scheme can check. Dovecot 2.3 answers FAIL (535 at the
# MTA), and so does authbridge in both modes: the entry is malformed, not the server broken.
BROKEN_HASH_USER = "brokenhash"
_BROKEN_HASH_LINE = f"{BROKEN_HASH_USER}:{{NO-SUCH-SCHEME}}0123456789abcdef::::::\n"
# A user whose lookup is an internal failure (an extra field naming an unknown variable):
# authbridge outside --dovecot-compat closes the connection, so the MTA defers (4xx).
INTERNAL_FAILURE_USER = "internalfailure"
_INTERNAL_FAILURE_LINE = f"{INTERNAL_FAILURE_USER}:{{PLAIN}}x::::::quota=%{{nosuchvariable}}\n"


def hash_password(scheme: str, password: str) -> str:
    """``doveadm pw -s SCHEME -p PASS``: the real Dovecot hash, e.g. ``{SHA512-CRYPT}$6$...``."""
    proc = subprocess.run(
        [require_binary("doveadm"), "pw", "-s", scheme, "-p", password],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"doveadm pw -s {scheme} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def write_users_file(path: Path) -> Path:
    """Write every user of USERS as a passwd-file line (mode 0644, the servers drop root)."""
    lines = [f"{u.name}:{hash_password(u.scheme, u.password)}::::::\n" for u in USERS.values()]
    path.write_text("".join(lines) + _BROKEN_HASH_LINE + _INTERNAL_FAILURE_LINE)
    path.chmod(0o644)
    return path


@dataclass(frozen=True)
class AuthServer:
    """The running auth server under test, whichever implementation it is."""

    kind: str
    socket_path: Path
    log_text: Callable[[], str]
