"""Run the REAL Postfix 3.7 smtpd (unpacked .deb, not dpkg-installed) against an auth socket.

Postfix and exim4 conflict in dpkg, so the binaries sit unpacked under
``POSTFIX_ROOT`` and need ``LD_LIBRARY_PATH``; master(8) scrubs the environment of its
children, so main.cf re-imports it. Nothing is chrooted, which lets ``smtpd_sasl_path``
be the absolute socket path. The auth server must already listen when master starts:
an smtpd that finds no SASL mechanisms dies and master throttles the service for a
minute (harness gotcha P3).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.support import log_tails, require_binary
from tests.support.exim import stop_process, wait_for_tcp_listen
from tests.support.tls import TlsFiles

POSTFIX_ROOT = Path(os.environ.get("AUTHBRIDGE_POSTFIX_ROOT", "/opt/authbridge-peers/postfix"))
MASTER = POSTFIX_ROOT / "usr/lib/postfix/sbin/master"
POSTCONF = POSTFIX_ROOT / "usr/sbin/postconf"
LIB_DIR = POSTFIX_ROOT / "usr/lib/postfix"

_QUEUE_SUBDIRS = (
    "private", "incoming", "active", "deferred", "defer", "bounce",
    "trace", "flush", "hold", "corrupt", "saved",
)  # fmt: skip

_MAIN_CF = """\
# Written by tests/support/postfix.py for one interop test run.
compatibility_level = 3.6
meta_directory = {root}/etc/postfix
queue_directory = {queue}
data_directory = {data}
daemon_directory = {root}/usr/lib/postfix/sbin
command_directory = {root}/usr/sbin
shlib_directory = {lib}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={lib}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = {run_dir}

myhostname = mx2.interop.test
mydomain = interop.test
mydestination = interop.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_transport = discard:interop
relay_transport = discard:interop
local_transport = discard:interop
virtual_transport = discard:interop

smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
"""

_MASTER_CF = """\
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{port} inet n - n - {smtpd_maxproc} smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class PostfixError(RuntimeError):
    """Postfix did not come up; the message has the tail of its maillog."""


def require_postfix() -> Path:
    """The master binary; skip the test if Postfix is not unpacked, fail when CI=true."""
    if MASTER.is_file() and os.access(MASTER, os.X_OK):
        return MASTER
    message = f"Postfix master not found at {MASTER} (run .ci/install-peers.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class PostfixConfig:
    """A generated config directory plus the paths it names."""

    conf_dir: Path
    run_dir: Path
    maillog: Path
    port: int
    auth_socket: Path

    def maillog_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _make_queue(queue: Path, data: Path) -> None:
    """The queue tree with the ownership postfix-script would give it."""
    postfix_uid = pwd.getpwnam("postfix").pw_uid
    postdrop_gid = grp.getgrnam("postdrop").gr_gid
    queue.mkdir(parents=True, exist_ok=True)
    queue.chmod(0o755)
    (queue / "pid").mkdir(exist_ok=True)
    for name in _QUEUE_SUBDIRS:
        sub = queue / name
        sub.mkdir(exist_ok=True)
        os.chown(sub, postfix_uid, 0)
        sub.chmod(0o700)
    for name, mode in (("public", 0o2710), ("maildrop", 0o1730)):
        sub = queue / name
        sub.mkdir(exist_ok=True)
        os.chown(sub, postfix_uid, postdrop_gid)
        sub.chmod(mode)
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, postfix_uid, pwd.getpwnam("postfix").pw_gid)
    data.chmod(0o700)


def write_postfix_config(
    run_dir: Path,
    *,
    auth_socket: Path,
    port: int,
    tls: TlsFiles,
    smtpd_maxproc: int | None = None,
    extra_main: Mapping[str, str] | None = None,
) -> PostfixConfig:
    """Render main.cf/master.cf under ``run_dir/conf`` and build the queue tree.

    ``smtpd_maxproc=1`` makes one smtpd process serve every SMTP session in turn, which
    is what lets a test watch it reuse its auth connection.
    """
    require_postfix()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    conf_dir = run_dir / "conf"
    conf_dir.mkdir(exist_ok=True)
    queue, data, maillog = run_dir / "spool", run_dir / "data", run_dir / "maillog"
    _make_queue(queue, data)
    main_cf = _MAIN_CF.format(
        root=POSTFIX_ROOT,
        lib=LIB_DIR,
        queue=queue,
        data=data,
        maillog=maillog,
        run_dir=run_dir,
        auth_socket=auth_socket,
        cert=tls.cert,
        key=tls.key,
    )
    main_cf += "".join(f"{key} = {value}\n" for key, value in (extra_main or {}).items())
    master_cf = _MASTER_CF.format(
        port=port, smtpd_maxproc="-" if smtpd_maxproc is None else smtpd_maxproc
    )
    (conf_dir / "main.cf").write_text(main_cf)
    (conf_dir / "master.cf").write_text(master_cf)
    # Postfix re-reads a file whose mtime is in the current second and sleeps while it
    # "cools down" (gotcha P2): backdate the files so start-up takes 0.2 s, not 2 s.
    past = time.time() - 10
    for name in ("main.cf", "master.cf"):
        os.utime(conf_dir / name, (past, past))
    return PostfixConfig(conf_dir, run_dir, maillog, port, auth_socket)


def postfix_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(LIB_DIR)
    return env


def postconf(config: PostfixConfig, *args: str) -> str:
    """Run the unpacked ``postconf -c DIR ARGS`` and return its stdout."""
    proc = subprocess.run(
        [str(POSTCONF), "-c", str(config.conf_dir), *args],
        capture_output=True,
        text=True,
        env=postfix_env(),
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise PostfixError(f"postconf {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


class PostfixMaster:
    """``master -c DIR -d`` as the leader of its own session and process group.

    On SIGTERM master kills its whole process group (the smtpd children), which is why
    it must run under setsid (gotcha P4).
    """

    def __init__(self, config: PostfixConfig, start_timeout: float = 15.0) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.output_path = config.run_dir / "master.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    def start(self) -> PostfixMaster:
        if self.proc is not None:
            raise PostfixError("this PostfixMaster is already running")
        if not self.config.auth_socket.exists():
            raise PostfixError(
                f"start the auth server before Postfix: {self.config.auth_socket} is missing"
            )
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(require_postfix()), "-c", str(self.config.conf_dir), "-d"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=postfix_env(),
                start_new_session=True,
            )
        try:
            wait_for_tcp_listen(self.config.port, self.proc, self.start_timeout)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise PostfixError(f"postfix did not come up: {exc}\n{self.diagnostics()}") from exc
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def smtpd_pids(self) -> list[int]:
        """PIDs of the smtpd processes master has forked (children of our master)."""
        if self.proc is None:
            return []
        pids = []
        with contextlib.suppress(FileNotFoundError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            for pid in map(int, children.split()):
                with contextlib.suppress(FileNotFoundError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "smtpd":
                        pids.append(pid)
        return pids

    def auth_connections(self) -> dict[int, frozenset[int]]:
        """For each smtpd: the inodes of its sockets connected to the auth server's socket.

        The server ends are found with ``ss -x`` (local address = the socket path); their
        peer inodes are then looked up among the smtpd processes' file descriptors. A new
        connection always gets a new inode, so an unchanged set means the same connection.
        """
        peers = unix_socket_peers(self.config.auth_socket)
        found: dict[int, frozenset[int]] = {}
        for pid in self.smtpd_pids():
            mine = _socket_inodes(pid) & peers
            if mine:
                found[pid] = frozenset(mine)
        return found

    def diagnostics(self) -> str:
        return log_tails((("master output", self.output_path), ("maillog", self.config.maillog)))

    def __enter__(self) -> PostfixMaster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def unix_socket_peers(socket_path: Path) -> set[int]:
    """Peer inodes of the established connections accepted on the UNIX socket ``socket_path``."""
    proc = subprocess.run(
        [require_binary("ss"), "-x", "-n", "-H", "state", "established"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    peers = set()
    for line in proc.stdout.splitlines():
        # Netid Recv-Q Send-Q Local-Address Local-Inode Peer-Address Peer-Inode
        fields = line.split()
        if len(fields) >= 7 and fields[3] == str(socket_path):
            peers.add(int(fields[6]))
    return peers


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes
