"""Run the REAL Exim 4 (Debian's exim4-daemon-heavy) against an auth-client socket.

The config is a small standalone one rendered per test: loopback only, no DNS or ident
lookups, nothing ever delivered (queue_only), TLS with the session's self-signed
certificate, and three ``driver = dovecot`` authenticators that all point at the socket
under test. Root may pass any file to ``-C``; the daemon binds as root and then runs as
Debian-exim, which therefore owns the spool and log directories.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support import log_tails, require_binary
from tests.support.tls import TlsFiles

EXIM_USER = "Debian-exim"

_CONFIG_TEMPLATE = """\
# Written by tests/support/exim.py for one interop test run.
primary_hostname = mx.interop.test
qualify_domain = interop.test
keep_environment =
spool_directory = {spool}
log_file_path = {log_dir}/%slog
pid_file_path = {run_dir}/exim.pid
log_selector = +smtp_connection +smtp_protocol_error +smtp_syntax_error +tls_cipher

local_interfaces = <; 127.0.0.1
daemon_smtp_ports = {port}
smtp_accept_max = 100

# Hermetic: no reverse DNS or ident lookups of clients.
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s

# Nothing is ever delivered; accepted messages stay in the spool.
queue_only = true

tls_advertise_hosts = *
tls_certificate = {cert}
tls_privatekey = {key}

auth_advertise_hosts = {auth_advertise_hosts}

domainlist local_domains = interop.test
hostlist relay_from_hosts =
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept  authenticated = *
  accept  domains = +local_domains
  deny    message = 550 5.7.1 Relaying denied (authentication required)

begin routers

discard_all:
  driver = redirect
  data = :blackhole:

begin authenticators

# $auth1 is the user= value of the auth server's OK (the normalised login).
auth_plain:
  driver = dovecot
  public_name = PLAIN
  server_socket = {auth_socket}
  server_set_id = $auth1

auth_login:
  driver = dovecot
  public_name = LOGIN
  server_socket = {auth_socket}
  server_set_id = $auth1

auth_cram_md5:
  driver = dovecot
  public_name = CRAM-MD5
  server_socket = {auth_socket}
  server_set_id = $auth1
"""


class EximError(RuntimeError):
    """Exim rejected its configuration or its daemon did not come up."""


@dataclass(frozen=True)
class EximConfig:
    """A rendered config file plus the directories it names."""

    path: Path
    run_dir: Path
    log_dir: Path
    port: int
    auth_socket: Path

    def mainlog(self) -> str:
        """Exim's main log so far (empty if nothing was logged yet)."""
        try:
            return (self.log_dir / "mainlog").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def write_exim_config(
    run_dir: Path,
    *,
    auth_socket: Path,
    port: int,
    tls: TlsFiles,
    auth_advertise_hosts: str = "*",
) -> EximConfig:
    """Render the config into ``run_dir`` (spool/log owned by Debian-exim) and check it.

    ``auth_advertise_hosts`` is Exim's expanded host list, e.g. ``192.168.0.0/24`` or
    ``${if eq{$tls_in_cipher}{}{}{*}}`` for "only after STARTTLS".
    """
    spool = run_dir / "spool"
    log_dir = run_dir / "log"
    exim_pw = pwd.getpwnam(EXIM_USER)
    for directory in (spool, log_dir):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, exim_pw.pw_uid, exim_pw.pw_gid)
        directory.chmod(0o750)
    run_dir.chmod(0o755)
    text = _CONFIG_TEMPLATE.format(
        spool=spool,
        log_dir=log_dir,
        run_dir=run_dir,
        port=port,
        cert=tls.cert,
        key=tls.key,
        auth_advertise_hosts=auth_advertise_hosts,
        auth_socket=auth_socket,
    )
    path = run_dir / "exim.conf"
    path.write_text(text)
    path.chmod(0o644)
    config = EximConfig(path, run_dir, log_dir, port, auth_socket)
    check_exim_config(config)
    return config


def check_exim_config(config: EximConfig) -> None:
    """``exim -C conf -bV``: parse the config (expansion errors only show at run time)."""
    proc = subprocess.run(
        [require_binary("exim"), "-C", str(config.path), "-bV"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise EximError(f"exim -bV rejected {config.path}:\n{proc.stdout}{proc.stderr}")


def exim_pipe_command(
    config: EximConfig,
    *,
    client_ip: str | None = None,
    test_host: str | None = None,
    tls: bool = False,
) -> str:
    """A command for ``swaks --pipe`` that runs one Exim SMTP session on stdin/stdout.

    ``client_ip`` gives ``-bs -oMa IP -oMi 127.0.0.1`` (root is trusted, so Exim believes
    it); ``test_host`` gives ``-bh IP`` instead (a fake session that still really calls
    the authenticators, TLS impossible). STARTTLS needs a socket on stdin because GnuTLS
    uses recv() (gotcha E2), hence the socat wrapper when ``tls`` is set.
    """
    exim = [require_binary("exim"), "-C", str(config.path)]
    if test_host is not None:
        if tls:
            raise ValueError("exim -bh cannot do TLS")
        exim += ["-bh", test_host]
    else:
        exim.append("-bs")
        if client_ip is not None:
            exim += ["-oMa", client_ip, "-oMi", "127.0.0.1"]
    if not tls:
        return shlex.join(exim)
    # socat splits EXEC's argument on spaces itself; our paths contain none.
    return shlex.join([require_binary("socat"), "STDIO", "EXEC:" + " ".join(exim)])


def listening_on(port: int) -> bool:
    """True if something listens on 127.0.0.1:``port`` (read from /proc, no probe connect)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
                return True
    return False


def wait_for_tcp_listen(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``proc`` (or a child of it) listens on ``port``; fail fast if it exited."""
    deadline = time.monotonic() + timeout
    while not listening_on(port):
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process we started (by PID), then SIGKILL if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class EximDaemon:
    """``exim -C conf -bdf`` in its own session, listening on 127.0.0.1:``config.port``."""

    def __init__(self, config: EximConfig, start_timeout: float = 15.0) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.output_path = config.run_dir / "daemon.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """The ``host:port`` swaks should connect to."""
        return f"127.0.0.1:{self.config.port}"

    def start(self) -> EximDaemon:
        if self.proc is not None:
            raise EximError("this EximDaemon is already running")
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(
                [require_binary("exim"), "-C", str(self.config.path), "-bdf"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        try:
            wait_for_tcp_listen(self.config.port, self.proc, self.start_timeout)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise EximError(f"exim daemon did not come up: {exc}\n{self.diagnostics()}") from exc
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def diagnostics(self) -> str:
        return log_tails(
            (
                ("daemon output", self.output_path),
                ("paniclog", self.config.log_dir / "paniclog"),
                ("mainlog", self.config.log_dir / "mainlog"),
            )
        )

    def __enter__(self) -> EximDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
