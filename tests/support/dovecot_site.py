"""A copy of the dovecot.conf tree Debian's dovecot-core ships, with examples enabled.

Tests never touch /etc/dovecot: the tree is copied into a directory of theirs, every
``/etc/dovecot/`` in it pointed at the copy, SSL switched off (the shipped certificate
may not exist) and the ``!include auth-*.conf.ext`` lines of 10-auth.conf switched on
or off as asked, so both the real Dovecot and authbridge can read the same files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support import missing_peer, require_binary
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

SHIPPED = Path("/etc/dovecot")
#: The examples 10-auth.conf has an ``!include`` line for.
EXAMPLES = ("deny", "master", "system", "sql", "ldap", "passwdfile", "checkpassword", "static")


def copy_site(
    target: Path, enable: Iterable[str] = ("passwdfile",), extra: Sequence[str] = ()
) -> Path:
    """The shipped tree copied to ``target`` with the ``auth-NAME.conf.ext`` examples in
    ``enable`` included (and no other); ``extra`` lines end 10-auth.conf. Returns the
    copy's dovecot.conf."""
    if not (SHIPPED / "dovecot.conf").is_file():
        missing_peer("dovecot-core's /etc/dovecot/dovecot.conf is not installed")
    wanted = set(enable)
    unknown = wanted - set(EXAMPLES)
    assert not unknown, f"no such example: {unknown}"
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(SHIPPED.rglob("*")):
        relative = source.relative_to(SHIPPED)
        if relative.parts[0] == "private" or not source.is_file():
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8", errors="surrogateescape")
        destination.write_text(text.replace(f"{SHIPPED}/", f"{target}/"), errors="surrogateescape")
        os.chmod(destination, 0o644)
    ssl = target / "conf.d" / "10-ssl.conf"
    text = re.sub(r"(?m)^ssl = yes$", "ssl = no", ssl.read_text())
    ssl.write_text(re.sub(r"(?m)^(ssl_(?:cert|key) = <)", r"#\1", text))
    auth = target / "conf.d" / "10-auth.conf"
    lines = []
    for line in auth.read_text().splitlines():
        match = re.fullmatch(r"#?!include auth-([a-z]+)\.conf\.ext", line)
        if match and match.group(1) in EXAMPLES:
            line = ("" if match.group(1) in wanted else "#") + line.lstrip("#")
        lines.append(line)
    auth.write_text("\n".join([*lines, *extra]) + "\n")
    return target / "dovecot.conf"


class SiteDovecot(DovecotAuth):
    """The real Dovecot running a site's dovecot.conf, with only what a test run needs
    added after it (its own base_dir, the socket, no SSL, no failure delay)."""

    def __init__(self, site_config: Path, socket_path: Path, workdir: Path) -> None:
        super().__init__(site_config, socket_path, workdir=workdir)
        self.site_config = site_config

    def render_config(self) -> str:
        return "\n".join(
            [
                f"!include {self.site_config}",
                "protocols = none",
                f"base_dir = {self.workdir / 'base'}",
                f"state_dir = {self.workdir / 'state'}",
                f"instance_name = authbridge-site-{os.getpid()}-{id(self) & 0xFFFF:x}",
                "log_path = /dev/stderr",
                "auth_failure_delay = 0",
                "auth_verbose = yes",
                "service anvil {",
                "  unix_listener anvil-auth-penalty {",
                "    mode = 0",
                "  }",
                "}",
                "service auth {",
                f"  unix_listener {self.socket_path} {{",
                "    mode = 0666",
                "  }",
                "}",
                "",
            ]
        )


class SiteAuthbridge(AuthbridgeServer):
    """``authbridge serve --dovecot-config`` on the same site config."""

    def __init__(
        self, site_config: Path, socket_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(site_config, socket_path, extra_args=extra_args)
        self.site_config = site_config

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--socket",
            str(self.socket_path),
            "--socket-mode",
            "0666",
            "--dovecot-config",
            str(self.site_config),
            "--failure-delay",
            "0",
            *self.extra_args,
        ]


def doveadm_test(socket_path: Path, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """``doveadm auth test`` through ``socket_path`` as a secured SMTP session."""
    return subprocess.run(
        [
            require_binary("doveadm"),
            "auth",
            "test",
            "-a",
            str(socket_path),
            "-x",
            "service=smtp",
            "-x",
            "secured",
            user,
            password,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def doveadm_login(socket_path: Path, user: str, password: str) -> int:
    """``doveadm auth test``'s exit code: 0 OK, 77 FAIL (75 or anything else: a temporary
    failure or a broken server; Dovecot 2.3's own ``FAIL code=temp_fail`` is a 77 too)."""
    return doveadm_test(socket_path, user, password).returncode


def doveadm_outcome(socket_path: Path, user: str, password: str) -> str:
    """ok, fail, tempfail or rc=N: doveadm exits 77 on Dovecot's ``FAIL code=temp_fail``
    (it prints the field), 75 when authbridge closes the connection instead."""
    done = doveadm_test(socket_path, user, password)
    if done.returncode == 77 and "code=temp_fail" in done.stdout:
        return "tempfail"
    return {0: "ok", 77: "fail", 75: "tempfail"}.get(done.returncode, f"rc={done.returncode}")


AUTH_TEST = (sys.executable, "-m", "authbridge", "auth", "test")


def cram_md5_login(socket_path: Path, user: str, password: str) -> int:
    """A CRAM-MD5 login through ``socket_path`` (``authbridge auth test``, which speaks to
    any auth-client socket; doveadm only does PLAIN): 0 OK, 77 FAIL."""
    done = subprocess.run(
        [*AUTH_TEST, "-a", str(socket_path), "-m", "CRAM-MD5", user, password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    return done.returncode


def outcomes(
    socket_path: Path,
    cases: Iterable[tuple[str, str]],
    mechanism: str = "PLAIN",
    workers: int = 1,
) -> dict[tuple[str, str], str]:
    """Each (user, password) login's result through ``socket_path``: ok, fail, tempfail
    (an internal failure: Dovecot's code=temp_fail, authbridge's closed connection) or
    rc=N. ``workers`` logins run at once (Dovecot holds each FAIL up to half a second)."""
    names = {0: "ok", 77: "fail", 75: "tempfail"}

    def one(case: tuple[str, str]) -> str:
        if mechanism == "PLAIN":
            return doveadm_outcome(socket_path, *case)
        code = cram_md5_login(socket_path, *case)
        return names.get(code, f"rc={code}")

    listed = list(cases)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(listed, pool.map(one, listed), strict=True))
