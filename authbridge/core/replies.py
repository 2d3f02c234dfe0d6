"""Every line the server writes on the auth-client protocol, built in one place.

The handshake, ``CONT``, ``OK`` and ``FAIL`` lines, and the ``code=`` values a FAIL
may carry (Dovecot 2.3's ``AUTH_CLIENT_FAIL_CODE_*``). The session decides *what* to
answer; this module only knows *how* it looks on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable

from authbridge.core.verdict import Outcome, Verdict
from authbridge.core.wire import b64encode, join_line, keyvalue

# ------------------------------------------------------------------ FAIL codes

#: A temporary failure (store down, internal error): the MTA should try again later.
TEMP_FAIL = "temp_fail"
#: The authorization identity was refused (Dovecot's code; authbridge's authzid
#: refusal answers like Dovecot 2.3's passwd-file path does, without it).
AUTHZ_FAIL = "authz_fail"
#: The client's base64 could not be decoded.
INVALID_BASE64 = "invalid_base64"
#: Dovecot's codes for a disabled user and an expired password: 2.4-level clients get
#: user_disabled for a nologin refusal; no store of authbridge knows expiry.
USER_DISABLED = "user_disabled"
PASS_EXPIRED = "pass_expired"

FAIL_CODES = frozenset({TEMP_FAIL, AUTHZ_FAIL, INVALID_BASE64, USER_DISABLED, PASS_EXPIRED})

#: The reason of a CONT for a request id that is not (or no longer) in flight.
TIMED_OUT = "Authentication request timed out"


def code_field(code: str) -> str:
    return f"code={code}"


# ------------------------------------------------------------------ lines


def handshake_lines(
    major: int,
    minor: int,
    mechanisms: Iterable[tuple[str, Iterable[str]]],
    spid: int,
    cuid: int,
    cookie: str,
) -> bytes:
    """Everything the server says on accept (``mechanisms``: name and MECH flags)."""
    return handshake_head(major, minor, mechanisms, spid) + handshake_tail(cuid, cookie)


def handshake_head(
    major: int, minor: int, mechanisms: Iterable[tuple[str, Iterable[str]]], spid: int
) -> bytes:
    """The part of the handshake that is the same on every connection of a process."""
    lines = [join_line("VERSION", str(major), str(minor))]
    for name, flags in mechanisms:
        lines.append(join_line("MECH", name, *flags))
    lines.append(join_line("SPID", str(spid)))
    return b"".join(lines)


def handshake_tail(cuid: int, cookie: str) -> bytes:
    """The connection's own part of the handshake: its id, its cookie, ``DONE``."""
    return b"CUID\t%d\nCOOKIE\t%s\nDONE\n" % (cuid, cookie.encode("ascii"))


def cont_line(request_id: int, data: bytes) -> bytes:
    """``CONT`` with the mechanism's challenge (or final server data), base64."""
    return join_line("CONT", str(request_id), b64encode(data))


def _tail(verdict: Verdict) -> list[str]:
    fields: list[str] = []
    if verdict.had_store_fields:
        # Dovecot 2.3 writes the separator even when every store field is hidden,
        # which leaves an empty field; clients tolerate it and we match it.
        fields.append("\t".join(keyvalue(k, v) for k, v in verdict.fields))
    if verdict.original_user is not None and verdict.original_user != verdict.user:
        # Also when no normalised name exists (user is None): Dovecot then repeats it.
        fields.append(keyvalue("original_user", verdict.original_user))
    return fields


def ok_line(request_id: int, verdict: Verdict) -> bytes:
    """``OK`` for a successful verdict: the user and the entry's visible fields."""
    return join_line("OK", str(request_id), keyvalue("user", verdict.user or ""), *_tail(verdict))


def fail_line(request_id: int, verdict: Verdict, code: str | None = None) -> bytes:
    """``FAIL`` for a failed or temporarily failed verdict; ``code``: a ``code=`` for a
    failure that is not temporary (2.4-level clients)."""
    fields = ["FAIL", str(request_id)]
    name = verdict.user if verdict.user is not None else verdict.original_user
    if name is not None:
        fields.append(keyvalue("user", name))
    if verdict.nodelay:
        fields.append("nodelay")
    if verdict.outcome is Outcome.TEMPFAIL:
        fields.append(code_field(TEMP_FAIL))
    elif code is not None:
        fields.append(code_field(code))
    fields.extend(_tail(verdict))
    return join_line(*fields)


def cancelled_line(request_id: int) -> bytes:
    """``CANCELLED``: Dovecot 2.4.4's answer to a CANCEL from a client with minor >= 4."""
    return b"CANCELLED\t%d\n" % request_id


def fail_reason_line(request_id: int, reason: str, code: str | None = None) -> bytes:
    """Dovecot's immediate ``FAIL`` with a ``reason=`` (and maybe a ``code=``), no user."""
    if code is None:
        return join_line("FAIL", str(request_id), keyvalue("reason", reason))
    return join_line("FAIL", str(request_id), code_field(code), keyvalue("reason", reason))
