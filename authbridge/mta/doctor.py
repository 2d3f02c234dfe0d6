"""``authbridge doctor``: check that the daemon and the MTAs are wired together.

It asks the live pieces rather than reading our own templates: the daemon's handshake
on its socket, Exim's parsed configuration (``exim -bP``), Postfix's (``postconf -h``),
and the file permissions the MTA users meet; each store is loaded (file stores) or
queried for a user that cannot exist (SQL stores, with ``check``'s own probe). Each
finding is one line, ``ok``, ``warn`` or ``FAIL``; the exit status is 1 if anything
failed. A finding's ``Fix:`` is a shell command that runs as printed: it names the
socket, config and directories this run used.
"""

from __future__ import annotations

import argparse
import grp
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from authbridge.commands import check
from authbridge.commands.defaults import config_path, default_config
from authbridge.config import Config, StoreConfig
from authbridge.mta import postfix
from authbridge.mta.access import connectable_by, readable_by
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.options import load_authbridge_config
from authbridge.passdb import StoreFormatError, StoreUnavailable, open_file_store

EXIM_AUTH_DRIVER = "dovecot"

#: The group deploy/install-debian.sh runs the daemon with: store files are for it.
DAEMON_GROUP = "authbridge"

#: Debian's exim4 configuration directory, for the emit-exim-config fix.
DEBIAN_EXIM_DIR = Path("/etc/exim4")


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn", "FAIL"
    message: str
    fix: str = ""  # a shell command that runs as printed, or nothing

    def line(self) -> str:
        fix = f". Fix: {self.fix}" if self.fix else ""
        return f"{self.level:<4}  {self.message}{fix}"


@dataclass(frozen=True)
class Handshake:
    version: str
    mechanisms: tuple[str, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="authbridge TOML configuration: its socket and stores are checked "
        "(default: /etc/authbridge/authbridge.toml when it exists)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="authbridge's auth-client socket (default: the config's [server] socket)",
    )
    parser.add_argument(
        "--exim-config",
        metavar="FILE",
        help="check this exim.conf (default: Exim's own, when exim is on PATH)",
    )
    parser.add_argument("--no-exim", action="store_true", help="skip the Exim checks")
    parser.add_argument(
        "--postfix-dir",
        metavar="DIR",
        help="check the Postfix configuration in DIR, e.g. /etc/postfix (default: no Postfix "
        "checks)",
    )
    parser.add_argument(
        "--postconf",
        metavar="PATH",
        default="postconf",
        help="the postconf binary that reads --postfix-dir (default: postconf on PATH)",
    )
    parser.add_argument(
        "--exim-user",
        metavar="USER",
        default="Debian-exim",
        help="the user Exim runs as, who must reach the socket and read the TLS key "
        "(default Debian-exim)",
    )
    parser.add_argument(
        "--postfix-user",
        metavar="USER",
        default="postfix",
        help="the user Postfix's smtpd runs as, who must reach the socket (default postfix)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        findings = diagnose(args)
    except MtaConfigError as exc:
        sys.stderr.write(f"authbridge doctor: error: {exc}\n")
        return 2
    for finding in findings:
        sys.stdout.write(finding.line() + "\n")
    return 1 if any(f.level == "FAIL" for f in findings) else 0


def diagnose(args: argparse.Namespace) -> list[Finding]:
    args.config = config_path(args.config)  # /etc/authbridge/authbridge.toml if it exists
    socket_path = args.socket
    findings: list[Finding] = []
    if args.config:
        try:
            config = load_authbridge_config(args.config)
        except MtaConfigError as exc:
            findings.append(Finding("FAIL", f"config: {exc}: correct it and run doctor again"))
            config = None
        if config is not None:
            findings.append(Finding("ok", f"config: {args.config} is valid"))
            socket_path = socket_path or config.server.socket_path
            _check_stores(config, findings)
    if not socket_path:
        if findings:
            return findings
        raise MtaConfigError(
            f"no configuration ({default_config()} does not exist): "
            "pass --config FILE or --socket PATH"
        )
    handshake = _check_daemon(socket_path, findings)
    if not args.no_exim and (args.exim_config or shutil.which("exim")):
        if shutil.which("exim"):
            _check_exim(args, socket_path, handshake, findings)
        else:
            findings.append(
                Finding(
                    "FAIL",
                    f"exim: no exim binary on PATH to read {args.exim_config}",
                    "apt-get install exim4-daemon-heavy",
                )
            )
    if args.postfix_dir:
        _check_postfix(args, socket_path, handshake, findings)
    return findings


# -- the daemon ------------------------------------------------------------------------


def _check_stores(config: Config, findings: list[Finding]) -> None:
    """Every store loads (file) or answers its query (SQL), as ``check`` sees it; the
    users a ``nologin`` field disables are listed with their reason."""
    for store_config in config.stores:
        report = check.Report()
        with check.store_warnings_as_problems(report):
            if store_config.type == "sql":
                check._check_sql(store_config, report)
            elif store_config.ldap is not None:
                check._check_ldap(store_config.ldap, report)
            else:
                _check_file_store(store_config, report, findings)
        findings += [Finding("ok", f"store: {_unprefixed(line)}") for line in report.lines]
        findings += [Finding("FAIL", f"store: {_unprefixed(p)}") for p in report.problems]


def _unprefixed(text: str) -> str:
    """``check`` starts its store lines with "store "; doctor's ``store:`` says it already."""
    return text.strip().removeprefix("store ")


def _check_file_store(
    store_config: StoreConfig, report: check.Report, findings: list[Finding]
) -> None:
    store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
    try:
        count = store.load()
    except StoreUnavailable as exc:
        findings.append(Finding("FAIL", f"store: {exc}", _store_file_fix(Path(store_config.path))))
        return
    except StoreFormatError as exc:
        findings.append(Finding("FAIL", f"store: {exc}: correct that line"))
        return
    invalid = f", {len(store.problems)} invalid entries" if store.problems else ""
    report.info(f"{store.name}: {count} users{invalid}")
    # Each invalid entry (file:line: reason) is a FAIL: that user cannot log in.
    report.problems += [str(problem) for problem in store.problems]
    tally = check.Report()
    check._tally(list(store.entries()), Counter(), tally, store_config.path)
    report.lines += [f"{store.name}: {line.strip()}" for line in tally.lines]
    report.problems += tally.problems


def _store_file_fix(path: Path) -> str:
    """A command that makes the store file exist and readable by the daemon's group."""
    try:
        grp.getgrnam(DAEMON_GROUP)
        group = ["-g", DAEMON_GROUP]
        mode = "0640"
    except KeyError:  # no such group here: the daemon runs as the user who runs doctor
        group, mode = [], "0600"
    if not path.exists():
        return shlex.join(["install", "-D", "-m", mode, *group, "/dev/null", str(path)])
    quoted = shlex.quote(str(path))
    if group:
        return f"chgrp {DAEMON_GROUP} {quoted} && chmod 0640 {quoted}"
    return f"chmod u+r {quoted}"


def read_handshake(path: str, timeout: float = 3.0) -> Handshake:
    """Connect as a client and read the server handshake up to DONE."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
        data = b""
        while b"DONE\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    version, mechanisms = "", []
    for line in data.decode(errors="replace").splitlines():
        fields = line.split("\t")
        if fields[0] == "VERSION" and len(fields) >= 3:
            version = f"{fields[1]}.{fields[2]}"
        elif fields[0] == "MECH" and len(fields) >= 2:
            mechanisms.append(fields[1].upper())
    if b"DONE\n" not in data:
        raise OSError("no complete handshake (no DONE line)")
    return Handshake(version, tuple(mechanisms))


def _check_daemon(path: str, findings: list[Finding]) -> Handshake | None:
    try:
        handshake = read_handshake(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        findings.append(Finding("FAIL", f"authbridge socket {path}: {reason}"))
        return None
    findings.append(
        Finding(
            "ok",
            f"authbridge socket {path}: protocol {handshake.version}, "
            f"mechanisms {' '.join(handshake.mechanisms) or '(none)'}",
        )
    )
    return handshake


def _check_user_can_connect(path: str, user: str, who: str, findings: list[Finding]) -> None:
    report = connectable_by(path, user)
    if report is None:
        findings.append(Finding("warn", f"{who}: user {user} does not exist here"))
    elif report.missing:
        return  # already reported by the socket check
    elif not report.readable:
        findings.append(Finding("FAIL", f"{who}: {report.reason}; it cannot reach {path}"))
    else:
        findings.append(Finding("ok", f"{who}: {user} may connect to {path}"))


# -- how to run authbridge again ------------------------------------------------------


def authbridge_command() -> list[str]:
    """This authbridge as a shell can start it: by name when PATH finds it, else by path."""
    if shutil.which("authbridge"):
        return ["authbridge"]
    return [sys.executable, "-m", "authbridge"]


def _source_arguments(args: argparse.Namespace, socket_path: str) -> list[str]:
    """What this run was told about the daemon, for a command that needs the same."""
    if args.config and not args.socket:
        return ["--config", str(Path(args.config).resolve())]
    return ["--socket", socket_path]


def _emit_exim_fix(args: argparse.Namespace, socket_path: str) -> str:
    """Debian's split config when that is what Exim reads, else the section to paste."""
    command = [*authbridge_command(), "emit-exim-config"]
    if not args.exim_config and (DEBIAN_EXIM_DIR / "update-exim4.conf.conf").is_file():
        command += ["--debian-split", str(DEBIAN_EXIM_DIR)]
    else:
        command += ["--section", "auth"]
    return shlex.join(command + _source_arguments(args, socket_path))


# -- Exim ------------------------------------------------------------------------------


def _exim(args: argparse.Namespace, *query: str) -> str:
    command = ["exim"]
    if args.exim_config:
        command += ["-C", args.exim_config]
    proc = subprocess.run(
        [*command, "-bP", *query], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise OSError((proc.stdout + proc.stderr).strip() or f"exim exited {proc.returncode}")
    return proc.stdout


def _options(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            found[name.strip()] = value.strip()
    return found


def _exim_has_dovecot_driver(args: argparse.Namespace) -> bool | None:
    """Whether this Exim binary was built with the dovecot authenticator (-heavy)."""
    command = ["exim"] + (["-C", args.exim_config] if args.exim_config else []) + ["-bV"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("Authenticators:"):
            return EXIM_AUTH_DRIVER in line.split()
    return None


def _public_key(kind: str, path: str) -> str | None:
    """The PEM public key of a certificate or private key, via openssl."""
    command = (
        ["openssl", "x509", "-noout", "-pubkey", "-in", path]
        if kind == "cert"
        else ["openssl", "pkey", "-pubout", "-in", path]
    )
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _check_key_matches_certificate(cert: str, key: str, findings: list[Finding]) -> None:
    if not (cert.startswith("/") and key.startswith("/")) or "$" in cert + key:
        return
    if not (os.path.exists(cert) and os.path.exists(key)):
        return
    cert_key, private_key = _public_key("cert", cert), _public_key("key", key)
    if cert_key is None or private_key is None:
        findings.append(
            Finding("FAIL", f"exim: openssl cannot read {cert} or {key}: check both are PEM files")
        )
    elif cert_key != private_key:
        findings.append(
            Finding(
                "FAIL",
                f"exim: the TLS key {key} does not belong to the certificate {cert}; STARTTLS "
                "fails: point MAIN_TLS_CERTIFICATE/MAIN_TLS_PRIVATEKEY (or tls_certificate/"
                "tls_privatekey) at a matching pair",
            )
        )
    else:
        findings.append(Finding("ok", f"exim: the TLS key matches the certificate {cert}"))


def _check_exim(
    args: argparse.Namespace, socket_path: str, handshake: Handshake | None, findings: list[Finding]
) -> None:
    heavy = _exim_has_dovecot_driver(args)
    if heavy is False:
        findings.append(
            Finding(
                "FAIL",
                "exim: this Exim has no dovecot authenticator (exim4-daemon-light)",
                "apt-get install exim4-daemon-heavy",
            )
        )
        return
    if heavy:
        findings.append(Finding("ok", "exim: the dovecot authenticator is built in"))
    try:
        names = _exim(args, "authenticator_list").split()
        authenticators = {name: _options(_exim(args, "authenticator", name)) for name in names}
        main = _options(_exim(args, "auth_advertise_hosts", "tls_privatekey", "tls_certificate"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        findings.append(Finding("FAIL", f"exim: cannot read its configuration: {exc}"))
        return
    ours = {
        name: opts
        for name, opts in authenticators.items()
        if opts.get("driver") == EXIM_AUTH_DRIVER
    }
    if not ours:
        findings.append(
            Finding(
                "FAIL",
                "exim: no driver = dovecot authenticator is configured",
                _emit_exim_fix(args, socket_path),
            )
        )
        return
    offered = set(handshake.mechanisms) if handshake else set()
    for name, opts in sorted(ours.items()):
        public = opts.get("public_name", "").upper()
        sock = opts.get("server_socket", "")
        if sock != socket_path:
            findings.append(
                Finding("FAIL", f"exim: {name} talks to {sock or '(nothing)'}, not {socket_path}")
            )
        elif handshake is not None and public not in offered:
            findings.append(
                Finding(
                    "FAIL",
                    f"exim: {name} offers {public}, which authbridge does not; "
                    "AUTH answers 'Dovecot did not advertise mechanism'",
                )
            )
        else:
            findings.append(Finding("ok", f"exim: {name} ({public}) -> {sock}"))
        if public in ("PLAIN", "LOGIN") and "tls_in_cipher" not in (
            opts.get("server_advertise_condition", "") + main.get("auth_advertise_hosts", "")
        ):
            findings.append(Finding("warn", f"exim: {name} ({public}) may be offered without TLS"))
    key = main.get("tls_privatekey", "")
    if key.startswith("/") and "$" not in key:
        report = readable_by(key, args.exim_user)
        if report is not None and report.missing:
            findings.append(Finding("FAIL", f"exim: the TLS key {key} does not exist"))
        elif report is not None and not report.readable:
            findings.append(
                Finding(
                    "FAIL",
                    f"exim: {report.reason}; STARTTLS fails",
                    f"chgrp {shlex.quote(args.exim_user)} {shlex.quote(key)} "
                    f"&& chmod 0640 {shlex.quote(key)}",
                )
            )
        elif report is not None:
            findings.append(Finding("ok", f"exim: {args.exim_user} can read the TLS key {key}"))
        _check_key_matches_certificate(main.get("tls_certificate", ""), key, findings)
    _check_user_can_connect(socket_path, args.exim_user, "exim", findings)


# -- Postfix ---------------------------------------------------------------------------


def _check_postfix(
    args: argparse.Namespace, socket_path: str, handshake: Handshake | None, findings: list[Finding]
) -> None:
    names = ("smtpd_sasl_type", "smtpd_sasl_path", "queue_directory", "smtpd_tls_auth_only")
    postconf = [args.postconf, "-c", args.postfix_dir]
    try:
        proc = subprocess.run(
            [*postconf, *names], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        findings.append(_postconf_missing(args.postconf))
        return
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = getattr(exc, "strerror", None) or "no answer within 30 s"
        findings.append(Finding("FAIL", f"postfix: cannot run {args.postconf}: {reason}"))
        return
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        findings.append(Finding("FAIL", f"postfix: postconf failed: {first}"))
        return
    values = _options(proc.stdout)
    queue = values.get("queue_directory", "")
    wanted, _chroot = postfix.sasl_path_for(socket_path, queue)
    fix = shlex.join([*postconf, "-e", "smtpd_sasl_type=dovecot", f"smtpd_sasl_path={wanted}"])
    sasl_type = values.get("smtpd_sasl_type")
    if sasl_type != "dovecot":
        findings.append(
            Finding(
                "FAIL", f"postfix: smtpd_sasl_type is {sasl_type or '(empty)'}, not dovecot", fix
            )
        )
    sasl_path = values.get("smtpd_sasl_path", "")
    resolved = sasl_path if sasl_path.startswith("/") else str(Path(queue) / sasl_path)
    if _same_file(resolved, socket_path):
        findings.append(Finding("ok", f"postfix: smtpd_sasl_path {sasl_path} -> {socket_path}"))
    else:
        findings.append(
            Finding(
                "FAIL",
                f"postfix: smtpd_sasl_path {sasl_path} is {resolved}, not {socket_path}",
                fix,
            )
        )
    if values.get("smtpd_tls_auth_only") != "yes":
        findings.append(
            Finding(
                "warn",
                "postfix: smtpd_tls_auth_only is not yes",
                shlex.join([*postconf, "-e", "smtpd_tls_auth_only=yes"]),
            )
        )
    _check_user_can_connect(socket_path, args.postfix_user, "postfix", findings)


def _postconf_missing(postconf: str) -> Finding:
    if postconf == "postconf":
        return Finding(
            "FAIL",
            "postfix: postconf is not on PATH (is Postfix installed? else pass --postconf PATH)",
            "apt-get install postfix",
        )
    return Finding("FAIL", f"postfix: {postconf} does not exist: pass --postconf PATH")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)
