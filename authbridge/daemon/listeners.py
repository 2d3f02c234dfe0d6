"""Opening the listening sockets: UNIX (path, mode, owner, group) and optional TCP.

A stale socket file left by a crashed run is replaced; a socket some live server still
answers on is never stolen, and neither is a path that is not a socket at all.
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from authbridge.observability.contained import Counter, Streak
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.listeners")

#: accept(2) errors that mean "overloaded, try again later", as trio.serve_listeners
#: treats them.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: accept(2) errors about one connection that went away before it was accepted.
GONE_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
#: The pause after an accept failed for lack of file descriptors or memory.
CAPACITY_PAUSE = 0.1


class ListenerError(Exception):
    """A listening socket cannot be opened; the message says what to fix."""


def _probe_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _resolve_uid(owner: str | None) -> int:
    if owner is None:
        return -1
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ListenerError(f"socket owner {owner!r}: no such user") from None


def _resolve_gid(group: str | None) -> int:
    if group is None:
        return -1
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenerError(f"socket group {group!r}: no such group") from None


def bind_unix(
    path: str,
    mode: int = 0o660,
    owner: str | None = None,
    group: str | None = None,
    backlog: int = 4096,
) -> socket.socket:
    """Bind and listen on a UNIX socket path with the wanted permissions."""
    uid, gid = _resolve_uid(owner), _resolve_gid(group)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenerError(f"{path} exists and is not a socket; refusing to replace it")
        if _probe_live(path):
            raise ListenerError(f"{path}: another server is already listening there")
        os.unlink(path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ListenerError(f"{path}: directory {directory} does not exist")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    try:
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        os.unlink(path)
        raise ListenerError(f"cannot set owner/mode of {path}: {exc.strerror}") from None
    sock.listen(backlog)
    return sock


def bind_tcp(spec: str, backlog: int = 4096) -> socket.socket:
    """Bind ``host:port`` (``[v6]:port`` for IPv6)."""
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ListenerError(f"tcp listener {spec!r}: expected host:port")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port_text)))
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot bind {spec}: {exc.strerror}") from None
    sock.listen(backlog)
    return sock


@dataclass
class Listener:
    """A bound socket plus what we need to clean it up and to filter its clients."""

    sock: socket.socket
    label: str
    unix_path: str | None = None
    unix_inode: int | None = None
    #: For TCP: allowed client networks (empty = everyone).
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: The socket's address family, read once (see accept_one).
    _family: int | None = field(default=None, init=False, repr=False)

    async def accept_one(self) -> tuple[socket.socket, Any] | None:
        """The next waiting client and its address, or ``None`` when none is left for
        now: the socket would block, or the process is out of descriptors (logged, and
        after a pause, so a loop that keeps failing does not spin).

        socket.accept() asks the listening socket for its family and type on every call
        and turns each into an enum; the raw accept with the family read once does not.
        """
        family = self._family
        if family is None:
            family = self._family = int(self.sock.family)
        while True:
            try:
                client_fd, address = self.sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    continue
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                log.error("accept failed; retrying", error=os.strerror(exc.errno))
                await trio.sleep(CAPACITY_PAUSE)
                return None
            return socket.socket(family, socket.SOCK_STREAM, 0, client_fd), address

    def trio_listener(self) -> trio.SocketListener:
        return trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))

    def peer_allowed(self, address: object) -> bool:
        """Whether a client at ``address`` (as accept returned it) may connect here."""
        if not self.allowed:
            return True
        # Runs in the connections' shared nursery, before the connection's own error
        # containment: anything unexpected refuses this client instead of raising.
        try:
            peer = ipaddress.ip_address(address[0])  # type: ignore[index]
        except (ValueError, TypeError, IndexError, KeyError):
            return False
        return any(peer in net for net in self.allowed)

    def remove(self) -> None:
        """Remove our socket file, but only if it is still the one we created."""
        if self.unix_path is None or self.unix_inode is None:
            return
        try:
            if os.lstat(self.unix_path).st_ino == self.unix_inode:
                os.unlink(self.unix_path)
        except OSError:
            pass


def unix_listener(path: str, mode: int, owner: str | None, group: str | None) -> Listener:
    sock = bind_unix(path, mode, owner, group)
    return Listener(sock, f"unix:{path}", unix_path=path, unix_inode=os.lstat(path).st_ino)


def tcp_listener(spec: str, allowed: tuple[str, ...]) -> Listener:
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)
    return Listener(bind_tcp(spec), f"tcp:{spec}", allowed=networks)


#: Handles one accepted connection: the non-blocking socket and the client's address.
Handler = Callable[[socket.socket, Any], Awaitable[object]]


async def accept_connections(listener: Listener, handler: Handler, nursery: trio.Nursery) -> None:
    """Accept on ``listener`` forever: one task in ``nursery`` per connection.

    Waits until the listening socket is readable, then accepts until it would block,
    so a burst of connections costs one wake-up. Every accepted socket is non-blocking
    and handed to ``handler``, which owns it from then on (and closes it).
    """
    sock = listener.sock
    sock.setblocking(False)
    fd = sock.fileno()
    while True:
        await trio.lowlevel.wait_readable(fd)
        while (accepted := await listener.accept_one()) is not None:
            client, address = accepted
            client.setblocking(False)
            nursery.start_soon(handler, client, address)


#: Handles one connection handed over by the supervisor: the socket, nothing else.
HandedHandler = Callable[[socket.socket], Awaitable[object]]
#: The most descriptors one handoff message carries (the kernel's SCM_MAX_FD is 253).
_HANDOFF_FDS = 253
_FD_SIZE = 4  # sizeof(int)
#: Ancillary buffer size for one handoff message.
HANDOFF_SPACE = socket.CMSG_SPACE(_HANDOFF_FDS * _FD_SIZE)


async def receive_connections(
    channel: socket.socket,
    handler: HandedHandler,
    nursery: trio.Nursery,
    count: Counter | None = None,
) -> None:
    """In a worker: serve the connections the supervisor hands over on ``channel``.

    Each message carries accepted sockets (``SCM_RIGHTS``) and two bytes per socket: the
    index of the listener it came from (the supervisor already applied that listener's
    TCP allow-list) and the socket's address family. Reads until the channel would block,
    so a burst costs one wake-up.
    Returns when the supervisor closed its end. An unexpected exception is logged,
    counted under ``where="worker"`` (``count``) and receiving goes on.
    """
    channel.setblocking(False)
    space = HANDOFF_SPACE
    streak = Streak("worker", "receiving a handed connection failed", count)
    while True:
        await trio.lowlevel.wait_readable(channel)
        while True:
            try:
                for sock in take_handed(channel, space):
                    nursery.start_soon(handler, sock)
            except BlockingIOError:
                break
            except HandoffClosed:
                log.info("the supervisor closed the handoff channel")
                return
            except Exception as exc:
                streak.failed(exc)
                await trio.sleep(CAPACITY_PAUSE)  # a channel that keeps failing must not spin
                break
            else:
                streak.ok()


class HandoffClosed(Exception):
    """The supervisor closed its end of the handoff channel."""


def take_handed(channel: socket.socket, space: int) -> list[socket.socket]:
    """One handoff message's sockets, non-blocking (BlockingIOError when none is queued)."""
    data, ancdata, flags, _address = channel.recvmsg(
        2 * _HANDOFF_FDS, space, socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds += memoryview(payload)[:usable].cast("i").tolist()
    if not data and not fds:
        raise HandoffClosed
    if flags & socket.MSG_CTRUNC:
        log.error("a handoff message lost descriptors", received=len(fds))
    socks = []
    for at, fd in enumerate(fds):
        try:
            # Family and type given: the socket object need not ask the kernel for them.
            family = data[2 * at + 1] if 2 * at + 1 < len(data) else -1
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
        except OSError:
            os.close(fd)  # not a socket after all: the client (if any) sees it closed
            continue
        socks.append(sock)
    return socks
