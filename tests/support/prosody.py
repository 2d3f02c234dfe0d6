"""Start a REAL Prosody (Debian's 0.12) authenticating through ``mod_auth_dovecot``.

``mod_auth_dovecot`` (Debian ``prosody-modules``) is a third-party auth-client: at start
it connects, sends VERSION 1.1 and CPID and reads the handshake; the server's MECH lines
become the SASL mechanisms Prosody offers XMPP clients, and every XMPP SASL step is
relayed as ``AUTH <id> <MECH> service=xmpp resp=...`` / ``CONT`` on that one connection
(no ``secured``, no ``rip``). Prosody runs in the foreground as a subprocess on a
loopback port, with its data, pid file and log in the work directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support import (
    free_tcp_port,
    missing_peer,
    read_text_or_empty,
    require_binary,
    wait_until,
)

#: Where Debian's prosody-modules puts the plugin (Prosody's default plugin directory).
MOD_AUTH_DOVECOT = Path("/usr/lib/prosody/modules/mod_auth_dovecot")
#: Prosody refuses to run as root; as root, it runs as the account its package made.
PROSODY_USER = "prosody"


@dataclass(frozen=True)
class VirtualHost:
    """An XMPP domain; ``append_host`` asks the auth server for ``user@domain``."""

    domain: str
    append_host: bool = False


class ProsodyError(RuntimeError):
    """Prosody did not come up; the message has its log tail."""


def _lua_string(value: str | os.PathLike[str]) -> str:
    text = os.fspath(value)
    if any(ch in text for ch in '"\\\n'):
        raise ValueError(f"refusing to write {text!r} into a Lua string")
    return f'"{text}"'


def require_mod_auth_dovecot() -> str:
    """The ``prosody`` binary; skip (fail under CI=true) without it or the module."""
    binary = require_binary("prosody")
    if not any(MOD_AUTH_DOVECOT.rglob("mod_auth_dovecot.lua")):
        missing_peer(f"mod_auth_dovecot not found under {MOD_AUTH_DOVECOT} (prosody-modules)")
    return binary


class ProsodyServer:
    """A running ``prosody -F`` serving c2s on ``127.0.0.1:port`` for ``hosts``."""

    def __init__(
        self,
        auth_socket: str | os.PathLike[str],
        workdir: str | os.PathLike[str],
        hosts: Sequence[VirtualHost] = (VirtualHost("example.com"),),
        port: int | None = None,
        log_level: str = "info",
        start_timeout: float = 15.0,
    ) -> None:
        self.auth_socket = Path(auth_socket)
        self.workdir = Path(workdir)
        self.hosts = tuple(hosts)
        self.port = port if port is not None else free_tcp_port()
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "prosody.console"
        self.proc: subprocess.Popen[bytes] | None = None

    def render_config(self) -> str:
        lines = [
            "-- Written by tests/support/prosody.py.",
            f"pidfile = {_lua_string(self.workdir / 'prosody.pid')}",
            f"data_path = {_lua_string(self.workdir / 'data')}",
            "daemonize = false",
            f'log = {{ {{ levels = {{ min = "{self.log_level}" }}, to = "file", '
            f"filename = {_lua_string(self.log_path)} }} }}",
            'interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            # Nothing but client logins: no server-to-server, HTTP or components.
            'modules_enabled = { "saslauth", "disco", "ping" }',
            'modules_disabled = { "s2s", "offline" }',
            "s2s_ports = { }",
            # No TLS here, so let Prosody offer PLAIN and LOGIN on the bare stream.
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            'authentication = "dovecot"',
            f"dovecot_auth_socket = {_lua_string(self.auth_socket)}",
        ]
        for host in self.hosts:
            lines.append(f"VirtualHost {_lua_string(host.domain)}")
            if host.append_host:
                lines.append("  auth_append_host = true")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """``prosody -F``; as root, under ``setpriv`` as the prosody user (it refuses root)."""
        command = [require_mod_auth_dovecot(), "-F", "--config", str(self.config_path)]
        if os.geteuid() != 0:
            return command
        setpriv = require_binary("setpriv")
        try:
            account = pwd.getpwnam(PROSODY_USER)
        except KeyError:
            missing_peer(f"no {PROSODY_USER!r} account (made by the prosody package)")
        for path in (self.workdir, self.workdir / "data"):
            os.chown(path, account.pw_uid, account.pw_gid)
        ids = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        return [setpriv, *ids, *command]

    def start(self) -> ProsodyServer:
        if self.proc is not None:
            raise ProsodyError("this ProsodyServer is already running")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        self.config_path.chmod(0o644)
        command = self.command()
        with open(self.console_path, "ab") as console:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
            )
        try:
            wait_until(self._accepts, self.start_timeout, "Prosody accepting c2s connections")
        except (TimeoutError, ProsodyError) as exc:
            self.stop()
            raise ProsodyError(f"{exc}\n{self.log_tail()}") from exc
        return self

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProsodyError(f"prosody exited with {self.proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID and wait; SIGKILL if it does not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_text(self) -> str:
        return read_text_or_empty(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        tails = []
        for name, path in (("prosody log", self.log_path), ("console", self.console_path)):
            tail = read_text_or_empty(path).splitlines()[-lines:]
            tails.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(tails)

    def __enter__(self) -> ProsodyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self.stop()
