"""What the load client sends: credentials, mechanisms and the request lines they make.

Request lines are built once per credential with :func:`authbridge.core.wire.join_line`, so
the hot loop only prefixes the request id; that keeps the client cheap enough to
saturate a server written in C.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from authbridge.core import wire

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

#: Appended to a password to make a deliberately wrong one.
WRONG_SUFFIX = "-wrong"


class WorkloadError(Exception):
    """The credentials file or the workload settings cannot be used."""


@dataclass(frozen=True, slots=True)
class Credential:
    user: str
    password: str


def load_credentials(path: str | Path) -> list[Credential]:
    """Read ``user:password`` lines (the password may contain ``:``; ``#`` starts a comment)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    creds = parse_credentials(text.splitlines())
    if not creds:
        raise WorkloadError(f"credentials file {path} has no user:password lines")
    return creds


def parse_credentials(lines: Iterable[str]) -> list[Credential]:
    creds: list[Credential] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise WorkloadError(f"credentials line {number}: expected user:password")
        creds.append(Credential(user, password))
    return creds


@dataclass(frozen=True, slots=True)
class Attempt:
    """One prepared authentication: the AUTH line tail and what to answer to CONTs."""

    #: Everything after ``AUTH<TAB>id``, LF included.
    tail: bytes
    user: str
    password: str
    expect_ok: bool


def auth_tail(
    mechanism: str,
    cred: Credential,
    password: str,
    service: str,
    secured: bool = False,
    rip: str | None = None,
) -> bytes:
    """The AUTH fields after the id; PLAIN carries its response as ``resp=``.

    ``secured`` and ``rip`` say what an MTA says after STARTTLS for a client at ``rip``:
    authbridge's default policy refuses plaintext mechanisms without ``secured``.
    """
    fields = [mechanism, f"service={wire.tabescape(service)}"]
    if secured:
        fields.append("secured")
    if rip:
        fields.append(f"rip={wire.tabescape(rip)}")
    if mechanism == "PLAIN":
        blob = b"\x00" + cred.user.encode() + b"\x00" + password.encode()
        fields.append("resp=" + wire.b64encode(blob))
    return wire.join_line("", *fields)


def prepare(
    creds: list[Credential],
    mechanism: str,
    wrong_share: float,
    service: str = "smtp",
    seed: int = 1,
    count: int | None = None,
    secured: bool = False,
    rip: str | None = None,
) -> list[Attempt]:
    """A shuffled cycle of attempts; about ``wrong_share`` of them use a wrong password."""
    if mechanism not in MECHANISMS:
        raise WorkloadError(f"unsupported mechanism {mechanism!r}; use one of {MECHANISMS}")
    if not 0.0 <= wrong_share <= 1.0:
        raise WorkloadError("the share of wrong passwords must be between 0 and 1")
    rng = random.Random(seed)
    total = count if count is not None else max(len(creds), 1000)
    attempts: list[Attempt] = []
    for index in range(total):
        cred = creds[index % len(creds)]
        wrong = rng.random() < wrong_share
        password = cred.password + WRONG_SUFFIX if wrong else cred.password
        attempts.append(
            Attempt(
                auth_tail(mechanism, cred, password, service, secured, rip),
                cred.user,
                password,
                not wrong,
            )
        )
    rng.shuffle(attempts)
    return attempts


def cont_reply(mechanism: str, attempt: Attempt, step: int, challenge_b64: str) -> bytes:
    """The base64 data answering the server's ``step``-th CONT (0-based) for ``attempt``."""
    if mechanism == "LOGIN":
        value = attempt.user if step == 0 else attempt.password
        return wire.b64encode(value.encode()).encode()
    if mechanism == "CRAM-MD5":
        challenge = wire.b64decode_strict(challenge_b64)
        digest = hmac.new(attempt.password.encode(), challenge, hashlib.md5).hexdigest()
        return wire.b64encode(f"{attempt.user} {digest}".encode()).encode()
    # PLAIN sent everything up front; an empty answer makes the server decide.
    return b""
