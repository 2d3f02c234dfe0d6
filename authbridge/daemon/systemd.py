"""The two systemd protocols a daemon speaks, in plain stdlib: socket activation and sd_notify.

Socket activation (``sd_listen_fds``): systemd — or ``systemd-socket-activate`` — binds the
listening sockets itself and starts us with them already open as fds 3, 4, ... The
``LISTEN_PID`` / ``LISTEN_FDS`` / ``LISTEN_FDNAMES`` variables say how many there are and what
they are called; ``LISTEN_PID`` guards against a child process that merely inherited the
environment mistaking unrelated fds for sockets.

Readiness notification (``sd_notify``): with ``Type=notify`` systemd waits for ``READY=1``
on the datagram socket named in ``NOTIFY_SOCKET`` before it starts units ordered after us (the
MTA), and expects ``WATCHDOG=1`` pings when ``WatchdogSec=`` is set.

No libsystemd binding is used: both protocols are a few environment variables and a datagram,
and keeping them here means the daemon runs the same with or without systemd installed.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

__all__ = [
    "LISTEN_FDS_START",
    "Notifier",
    "SocketActivationError",
    "inherited_sockets",
]

#: The first inherited fd; 0-2 stay stdin/stdout/stderr.
LISTEN_FDS_START = 3

_ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SocketActivationError(Exception):
    """The socket-activation variables are addressed to us but do not describe usable sockets."""


def inherited_sockets(
    environ: MutableMapping[str, str] | None = None, unset: bool = True
) -> list[tuple[str, socket.socket]]:
    """Return ``(name, socket)`` for each socket systemd passed us; ``[]`` when not activated.

    ``environ`` defaults to ``os.environ``. With ``unset`` the three ``LISTEN_*`` variables
    are removed (also on error) so that anything we spawn does not think the fds are its own.
    Every returned fd is marked close-on-exec. A name missing from ``LISTEN_FDNAMES`` is
    ``"unknown"``, as in libsystemd.

    Raises :class:`SocketActivationError` when ``LISTEN_PID`` is ours but ``LISTEN_FDS`` is
    malformed or one of the fds is not an open socket: starting with fewer listeners than
    the unit file promised would silently break the MTA.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    try:
        return _collect(env)
    finally:
        if unset:
            for name in _ACTIVATION_VARIABLES:
                env.pop(name, None)


def _collect(env: Mapping[str, str]) -> list[tuple[str, socket.socket]]:
    pid_text = env.get("LISTEN_PID")
    count_text = env.get("LISTEN_FDS")
    if not pid_text or count_text is None:
        return []
    try:
        pid = int(pid_text)
    except ValueError:
        raise SocketActivationError(f"LISTEN_PID={pid_text!r} is not a process id") from None
    if pid != os.getpid():
        return []  # meant for the process that exec'd us, not for us
    try:
        count = int(count_text)
    except ValueError:
        raise SocketActivationError(f"LISTEN_FDS={count_text!r} is not a number") from None
    if count < 0:
        raise SocketActivationError(f"LISTEN_FDS={count} is negative")
    names = env.get("LISTEN_FDNAMES", "")
    name_list = names.split(":") if names else []
    name_list += ["unknown"] * (count - len(name_list))
    sockets: list[tuple[str, socket.socket]] = []
    try:
        for index in range(count):
            fd = LISTEN_FDS_START + index
            sockets.append((name_list[index] or "unknown", _adopt(fd)))
    except BaseException:
        for _, sock in sockets:
            sock.detach()  # not ours to close: leave the fds as systemd gave them
        raise
    return sockets


def _adopt(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            why = "is not open"
        elif exc.errno == errno.ENOTSOCK:
            why = "is not a socket"
        else:
            why = f"cannot be used ({exc.strerror})"
        raise SocketActivationError(
            f"socket activation: inherited fd {fd} {why}; check the .socket unit"
        ) from None
    return sock


class Notifier:
    """Send ``sd_notify`` state changes to the service manager named by ``NOTIFY_SOCKET``.

    Disabled (every call a no-op returning ``False``) when the variable is absent, so the
    daemon calls it unconditionally. Sending never blocks and never raises: a manager that
    went away must not take the mail server's authentication down with it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env: Mapping[str, str] = os.environ if environ is None else environ
        self._address = _notify_address(env.get("NOTIFY_SOCKET", ""))
        self.enabled: bool = self._address is not None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled})"

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) in one datagram; True if sent."""
        if self._address is None or not fields:
            return False
        # "replace": a status naming an odd path must not make the notification raise.
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Listeners are bound and stores loaded: let units ordered after us start."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload began; follow with :meth:`ready` when the new config is in place."""
        stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={stamp}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began; systemd then reports the unit as deactivating."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """One keep-alive ping; send one every :meth:`watchdog_interval` seconds."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WatchdogSec=``), or None when no watchdog is set.

        Like ``sd_watchdog_enabled``, a ``WATCHDOG_PID`` naming another process means the
        watchdog belongs to it, not to us.
        """
        if not self._watchdog_usec:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000


def _status(status: str | None) -> tuple[str, ...]:
    return () if status is None else (f"STATUS={status}",)


def _notify_address(value: str) -> str | bytes | None:
    """``/path`` is a filesystem socket, ``@name`` an abstract one; anything else is unusable."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8")
    return None
