"""``authbridge auth test USER [PASSWORD]``: one login through an auth-client socket.

The same check as ``doveadm auth test``, without installing Dovecot: it connects to the
socket an MTA uses (authbridge's or Dovecot's), runs one SASL exchange and prints the
answer the way doveadm does::

    passdb: alice auth succeeded
    extra fields:
      user=alice

Exit status, as doveadm's: 0 the login succeeded, 77 it was refused (wrong password,
unknown or disabled user, a policy gate), 75 a temporary failure (the store is down, the
server answered ``temp``, timed out or closed the connection). Unlike doveadm (77), a
socket that cannot be reached is 75 too, with a one-line message: nothing was refused.
64 is bad usage.

The request says ``secured`` by default, as an MTA does after STARTTLS, because the
default policy accepts plaintext mechanisms only on secured sessions and this command
tests passwords, not transports; ``--no-secured`` shows what a client without TLS gets.

With ``-m OAUTHBEARER`` or ``-m XOAUTH2`` the "password" is an OAuth 2.0 access token
(prompted for, or piped in: a token on the command line shows in ``ps``); a refused
token's error status (RFC 7628) is printed before the failure.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import socket
import sys
from collections.abc import Sequence
from typing import TextIO

from authbridge.commands.defaults import DEFAULT_SOCKET, client_socket, config_path
from authbridge.core import wire

EX_OK = 0
EX_USAGE = 64
EX_TEMPFAIL = 75
EX_NOPERM = 77

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2")
TOKEN_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
TIMEOUT = 30.0


class AuthTestError(Exception):
    """The exchange could not finish: no socket, not an auth server, no answer."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="auth_command", metavar="SUBCOMMAND", help="test: one login (the only one)"
    )
    sub.required = True
    test = sub.add_parser(
        "test",
        help="log one user in through an auth-client socket, like doveadm auth test",
        description="Log one user in through an auth-client socket and print the answer "
        "as doveadm auth test does. Exit status: 0 succeeded, 77 refused, 75 temporary "
        "failure or server unreachable, 64 bad usage.",
    )
    add_test_arguments(test)


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="the login name, as the MTA would send it")
    parser.add_argument(
        "password",
        nargs="?",
        help="the password, or the access token for OAUTHBEARER/XOAUTH2 (default: prompt "
        "for it, without echo, or read one line from a pipe)",
    )
    parser.add_argument(
        "-a",
        "--socket",
        metavar="PATH",
        help="auth-client socket, PATH or HOST:PORT (default: the socket of the config "
        f"file, else {DEFAULT_SOCKET}; when that is the default and does not exist, the "
        "socket install-debian.sh's systemd unit listens on)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="take the socket from this config (default: /etc/authbridge/authbridge.toml "
        "when it exists)",
    )
    parser.add_argument(
        "-m",
        "--mechanism",
        default="PLAIN",
        type=str.upper,
        choices=MECHANISMS,
        help="SASL mechanism (default: %(default)s)",
    )
    parser.add_argument(
        "--service", default="smtp", help="service name sent to the server (default: smtp)"
    )
    parser.add_argument("--rip", metavar="IP", help="client address to report (rip=)")
    parser.add_argument("--lip", metavar="IP", help="local address to report (lip=)")
    parser.add_argument(
        "--secured",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mark the session secured (TLS), as an MTA does after STARTTLS (default: on; "
        "--no-secured tests a plain-text session, which the default policy refuses)",
    )
    parser.add_argument(
        "-x",
        dest="info",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="an extra AUTH field, as doveadm's -x (e.g. -x rip=192.0.2.1, -x secured)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        help="seconds to wait for the answer (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        target = _target(args)
        password = args.password
        if password is None:
            password = _prompt("Token: " if args.mechanism in TOKEN_MECHANISMS else "Password: ")
        fields = request_fields(args)
        verdict, reply = authenticate(
            target, args.mechanism, args.user, password, fields, args.timeout
        )
    except AuthTestError as exc:
        print(f"authbridge auth test: error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except _Usage as exc:
        print(f"authbridge auth test: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return report(args.user, verdict, reply, sys.stdout)


class _Usage(Exception):
    pass


def _target(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    path = config_path(args.config)
    if path is None:
        return client_socket(DEFAULT_SOCKET)
    from authbridge.config import ConfigError, load_config

    try:
        return client_socket(load_config(path).server.socket_path)
    except ConfigError as exc:
        raise _Usage(f"{exc} (or give --socket)") from None


def _prompt(prompt: str) -> str:
    if not sys.stdin.isatty():  # a script piping the password in: one line, no prompt
        line = sys.stdin.readline()
        if not line:
            raise _Usage("no password given and standard input is empty")
        return line.rstrip("\r\n")
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise _Usage("no password given and none could be read") from None


def request_fields(args: argparse.Namespace) -> list[str]:
    """The AUTH fields after the mechanism, escaped; ``-x`` values override the flags."""
    chosen: dict[str, str | None] = {"service": args.service}
    if args.lip:
        chosen["lip"] = args.lip
    if args.rip:
        chosen["rip"] = args.rip
    if args.secured:
        chosen["secured"] = None
    for item in args.info:
        key, sep, value = item.partition("=")
        if not key or "\t" in key or "\n" in key:
            raise _Usage(f"-x {item!r}: expected KEY=VALUE or a bare KEY")
        if key == "resp":
            raise _Usage("-x resp=...: the initial response is made from the password")
        chosen[key] = value if sep else None
    return [wire.keyvalue(key, value) for key, value in chosen.items()]


def _connect(target: str, timeout: float) -> socket.socket:
    try:
        if target.startswith("/") or ":" not in target:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = target
        else:
            host, _, port = target.rpartition(":")
            if not port.isdigit():
                raise AuthTestError(f"{target}: expected PATH or HOST:PORT")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            address = (host.strip("[]"), int(port))
    except OSError as exc:
        raise AuthTestError(f"cannot make a socket for {target}: {exc.strerror}") from None
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or "timed out"
        raise AuthTestError(f"cannot connect to {target}: {reason}") from None
    return sock


class _Closed(AuthTestError):
    """End of stream from the server."""


class _Lines:
    """Blocking line reader over a socket, with the protocol's framing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = wire.LineBuffer()
        self.ready: list[str] = []

    def next(self) -> str:
        while not self.ready:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AuthTestError("no answer from the server before the timeout") from None
            except OSError as exc:
                raise AuthTestError(f"connection lost: {exc.strerror}") from None
            if not data:
                raise _Closed("the server closed the connection without an answer")
            try:
                self.ready += self.buffer.feed(data)
            except wire.LineTooLong:
                raise AuthTestError("the server sent an over-long line") from None
        return self.ready.pop(0)


def authenticate(
    target: str,
    mechanism: str,
    user: str,
    password: str,
    fields: Sequence[str],
    timeout: float = TIMEOUT,
) -> tuple[str, list[str]]:
    """Run one exchange; returns ("OK"|"FAIL", the reply's fields after the id)."""
    sock = _connect(target, timeout)
    try:
        return _exchange(sock, target, mechanism, user, password, fields)
    finally:
        sock.close()


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise AuthTestError(f"connection lost: {exc.strerror}") from None


def _exchange(
    sock: socket.socket,
    target: str,
    mechanism: str,
    user: str,
    password: str,
    fields: Sequence[str],
) -> tuple[str, list[str]]:
    lines = _Lines(sock)
    _send(sock, wire.join_line("VERSION", "1", "2") + wire.join_line("CPID", str(os.getpid())))
    offered: list[str] = []
    first = lines.next()
    if not first.startswith("VERSION\t1\t"):
        raise AuthTestError(f"{target} is not an auth-client socket (it sent {first[:40]!r})")
    while (line := lines.next()) != "DONE":
        parts = line.split("\t")
        if parts[0] == "MECH" and len(parts) > 1:
            offered.append(parts[1].upper())
    if mechanism not in offered:
        raise AuthTestError(
            f"{target} does not offer {mechanism} (it offers {', '.join(offered) or 'nothing'})"
        )
    request = [mechanism, *fields]
    if mechanism == "PLAIN":
        blob = b"\0" + user.encode("utf-8", "surrogateescape")
        blob += b"\0" + password.encode("utf-8", "surrogateescape")
        request.append("resp=" + wire.b64encode(blob))
    elif mechanism in TOKEN_MECHANISMS:
        request.append("resp=" + wire.b64encode(token_response(mechanism, user, password)))
    _send(sock, wire.join_line("AUTH", "1", *request))
    step = 0
    while True:
        try:
            line = lines.next()
        except _Closed:
            # As doveadm's client library: a request in flight when the server hangs
            # up is an internal failure (authbridge hangs up after a store outage, so
            # that Exim answers 4xx).
            print(
                "authbridge auth test: warning: the server closed the connection "
                "with the request pending",
                file=sys.stderr,
            )
            return "FAIL", ["temp"]
        parts = wire.split_fields(line)
        if len(parts) < 2 or parts[1] != "1" or parts[0] not in ("OK", "FAIL", "CONT"):
            continue
        if parts[0] != "CONT":
            return parts[0], [p for p in parts[2:] if p]
        challenge = parts[2] if len(parts) > 2 else ""
        answer = _continue(mechanism, step, user, password, challenge)
        step += 1
        _send(sock, wire.join_line("CONT", "1", wire.b64encode(answer)))


def token_response(mechanism: str, user: str, token: str) -> bytes:
    """The client's message carrying ``token`` (RFC 7628 or Google's XOAUTH2)."""
    name = user.encode("utf-8", "surrogateescape")
    auth = b"auth=Bearer " + token.strip().encode("utf-8", "surrogateescape")
    if mechanism == "XOAUTH2":
        return b"user=" + name + b"\x01" + auth + b"\x01\x01"
    saslname = name.replace(b"=", b"=3D").replace(b",", b"=2C")
    return b"n,a=" + saslname + b",\x01" + auth + b"\x01\x01"


def _continue(mechanism: str, step: int, user: str, password: str, challenge: str) -> bytes:
    encoded_user = user.encode("utf-8", "surrogateescape")
    encoded_password = password.encode("utf-8", "surrogateescape")
    if mechanism == "LOGIN":
        return encoded_user if step == 0 else encoded_password
    if mechanism == "CRAM-MD5" and step == 0:
        try:
            nonce = wire.b64decode_strict(challenge)
        except ValueError:
            raise AuthTestError("the server's CRAM-MD5 challenge is not base64") from None
        digest = hmac.new(encoded_password, nonce, hashlib.md5).hexdigest()
        return encoded_user + b" " + digest.encode("ascii")
    if mechanism in TOKEN_MECHANISMS:
        # The server's error status for a refused token; RFC 7628's dummy answer.
        try:
            status = wire.b64decode_strict(challenge).decode("utf-8", "replace")
        except ValueError:
            status = "(not base64)"
        print(f"oauth error status: {status}")
        return b"\x01" if mechanism == "OAUTHBEARER" else b""
    return b""  # nothing more to say: let the server decide


def report(user: str, verdict: str, reply: list[str], out: TextIO) -> int:
    """Print doveadm's shape and return its exit status."""
    write = out.write
    word = "succeeded" if verdict == "OK" else "failed"
    write(f"passdb: {user} auth {word}\n")
    if reply:
        write("extra fields:\n")
        for field in reply:
            write(f"  {field}\n")
    if verdict == "OK":
        return EX_OK
    temporary = any(f == "temp" or f == "code=temp_fail" for f in reply)
    return EX_TEMPFAIL if temporary else EX_NOPERM
