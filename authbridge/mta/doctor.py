"""``authbridge doctor``: check that the daemon and the MTAs are wired together.

It asks the live pieces rather than reading our own templates: the daemon's handshake
on its socket, Exim's parsed configuration (``exim -bP``), Postfix's (``postconf -h``),
and the file permissions the MTA users meet. Each finding is one line, ``ok``,
``warn`` or ``FAIL``; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from authbridge.commands.defaults import config_path
from authbridge.config import Config
from authbridge.mta.access import connectable_by, readable_by
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.options import load_authbridge_config
from authbridge.passdb import StoreFormatError, StoreUnavailable, open_file_store

EXIM_AUTH_DRIVER = "dovecot"


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn", "FAIL"
    message: str


@dataclass(frozen=True)
class Handshake:
    version: str
    mechanisms: tuple[str, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="authbridge TOML configuration")
    parser.add_argument("--socket", metavar="PATH", help="authbridge's auth-client socket")
    parser.add_argument(
        "--exim-config", metavar="FILE", help="check this exim.conf (default: Exim's own)"
    )
    parser.add_argument("--no-exim", action="store_true", help="skip the Exim checks")
    parser.add_argument("--postfix-dir", metavar="DIR", help="check this Postfix config directory")
    parser.add_argument(
        "--postconf", metavar="PATH", default="postconf", help="postconf binary to ask"
    )
    parser.add_argument("--exim-user", default="Debian-exim")
    parser.add_argument("--postfix-user", default="postfix")


def run(args: argparse.Namespace) -> int:
    try:
        findings = diagnose(args)
    except MtaConfigError as exc:
        sys.stderr.write(f"authbridge doctor: error: {exc}\n")
        return 2
    for finding in findings:
        sys.stdout.write(f"{finding.level:<4}  {finding.message}\n")
    return 1 if any(f.level == "FAIL" for f in findings) else 0


def diagnose(args: argparse.Namespace) -> list[Finding]:
    args.config = config_path(args.config)  # /etc/authbridge/authbridge.toml if it exists
    socket_path = args.socket
    findings: list[Finding] = []
    if args.config:
        try:
            config = load_authbridge_config(args.config)
        except MtaConfigError as exc:
            findings.append(Finding("FAIL", f"config: {exc}. Fix: correct that line and rerun"))
            config = None
        if config is not None:
            findings.append(Finding("ok", f"config: {args.config} is valid"))
            socket_path = socket_path or config.server.socket_path
            _check_stores(config, findings)
    if not socket_path:
        if findings:
            return findings
        raise MtaConfigError("pass --socket PATH or --config FILE")
    handshake = _check_daemon(socket_path, findings)
    if not args.no_exim and (args.exim_config or shutil.which("exim")):
        _check_exim(args, socket_path, handshake, findings)
    if args.postfix_dir:
        _check_postfix(args, socket_path, handshake, findings)
    return findings


# -- the daemon ------------------------------------------------------------------------


def _check_stores(config: Config, findings: list[Finding]) -> None:
    """Every file store exists, is readable and parses (SQL stores are checked live)."""
    for store_config in config.stores:
        if store_config.type == "sql":
            continue
        store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
        try:
            count = store.load()
        except StoreUnavailable as exc:
            findings.append(
                Finding(
                    "FAIL",
                    f"store: {exc}. Fix: create it, or chmod/chgrp it so authbridge can read it",
                )
            )
        except StoreFormatError as exc:
            findings.append(Finding("FAIL", f"store: {exc}. Fix: correct that line"))
        else:
            findings.append(Finding("ok", f"store: {store.name}: {count} users"))


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
            Finding(
                "FAIL", f"exim: openssl cannot read {cert} or {key}. Fix: check both are PEM files"
            )
        )
    elif cert_key != private_key:
        findings.append(
            Finding(
                "FAIL",
                f"exim: the TLS key {key} does not belong to the certificate {cert}; STARTTLS "
                "fails. Fix: point MAIN_TLS_CERTIFICATE/MAIN_TLS_PRIVATEKEY (or tls_certificate/"
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
                "exim: this Exim has no dovecot authenticator (exim4-daemon-light). "
                "Fix: apt-get install exim4-daemon-heavy",
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
                "exim: no driver = dovecot authenticator is configured. "
                "Fix: authbridge emit-exim-config --debian-split /etc/exim4",
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
                    f"exim: {report.reason}; STARTTLS fails. Fix: chgrp {args.exim_user} {key} "
                    f"&& chmod 0640 {key}",
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
    proc = subprocess.run(
        [args.postconf, "-c", args.postfix_dir, *names],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        findings.append(Finding("FAIL", f"postfix: postconf failed: {proc.stderr.strip()}"))
        return
    values = _options(proc.stdout)
    if values.get("smtpd_sasl_type") != "dovecot":
        findings.append(Finding("FAIL", "postfix: smtpd_sasl_type is not dovecot"))
    sasl_path = values.get("smtpd_sasl_path", "")
    resolved = (
        sasl_path
        if sasl_path.startswith("/")
        else str(Path(values.get("queue_directory", "")) / sasl_path)
    )
    if _same_file(resolved, socket_path):
        findings.append(Finding("ok", f"postfix: smtpd_sasl_path {sasl_path} -> {socket_path}"))
    else:
        findings.append(
            Finding(
                "FAIL", f"postfix: smtpd_sasl_path {sasl_path} is {resolved}, not {socket_path}"
            )
        )
    if values.get("smtpd_tls_auth_only") != "yes":
        findings.append(Finding("warn", "postfix: smtpd_tls_auth_only is not yes"))
    _check_user_can_connect(socket_path, args.postfix_user, "postfix", findings)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)
