"""Log events of the protocol path: one per authentication, and the debug trace.

The server calls these functions; they decide what is logged and how. Nothing that can
carry a credential is ever logged: passwords never reach this module, and the trace
redacts every payload that may hold one (``resp=``, ``CONT`` data in both directions,
password-like extra fields) and whatever line it does not recognise.

A login name no store recognised may be a password typed into the wrong field: it is
logged as a keyed fingerprint (:mod:`authbridge.observability.userlog`), in the
authentication event, the fail2ban line and the ``user=`` of ``FAIL`` replies in the
trace. Names a store found are logged as typed.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

from authbridge.core import wire
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import userlog
from authbridge.observability.logs import (
    AUTH_FIELDS,
    authentication_event,
    get_logger,
    request_event,
)
from authbridge.observability.metrics import result_label

AUTH_LOGGER = "authbridge.auth"
log = get_logger(AUTH_LOGGER)
trace_log = get_logger("authbridge.trace")

REDACTED = "<redacted>"

#: Failures that are guesses at a credential, with the words of Dovecot's passdb log
#: line (``passwd-file(user,rip): Password mismatch``) that fail2ban filters expect.
FAIL2BAN_WORDS = {
    Reason.PASSWORD_MISMATCH: "Password mismatch",
    Reason.USER_UNKNOWN: "unknown user",
    Reason.INVALID_USERNAME: "invalid user name",
}

#: Failures that come after a store found the user: its name is a real login name.
#: Everything else (unknown, invalid, refused or failed before the lookup) may be a
#: password typed into the user field.
_STORE_FOUND = frozenset(
    {
        Reason.PASSWORD_MISMATCH,
        Reason.SCHEME_NOT_AVAILABLE,
        Reason.FORCED_FAIL,
        Reason.BROKEN_HASH,
        Reason.NETWORK_DENIED,
        Reason.NOLOGIN,
    }
)
#: Name fields of a ``FAIL`` reply: the trace cannot tell a known name there.
_FAIL_NAME_KEYS = frozenset({"user", "original_user"})

#: Parameter names whose value may carry a credential or a secret of the server.
_SECRET_KEY = re.compile(r"^(?:resp|.*pass.*|.*secret.*|.*token.*|forward_.*|cookie)$", re.I)
#: Commands whose fields are all plain protocol data (no credential can be in them).
_PLAIN_COMMANDS = frozenset({"VERSION", "CPID", "CANCEL", "MECH", "SPID", "CUID", "DONE"})
#: Commands whose ``key=value`` fields are passed through, secrets redacted (``FAIL``
#: too, its user names fingerprinted: see :func:`_redact_fail`).
_KEYED_COMMANDS = frozenset({"AUTH", "OK"})
#: Characters that could forge or break the fail2ban line if a user name carried them.
_FAIL2BAN_UNSAFE = re.compile(r"[(),:\"\\\s]")


#: Deliberately the standard-library logger, not structlog's: this module's events are
#: structlog key-values (``log``, :func:`authentication_event`), but asking whether INFO
#: is on is done for every authentication, and ``Logger.isEnabledFor`` is a cached dict
#: lookup, cheaper than a bound structlog logger's level check.
_auth_stdlib_logger = logging.getLogger(AUTH_LOGGER)


def _info_enabled() -> bool:
    """Whether INFO events would be written at all (checked before building one, on the
    per-authentication path: see :data:`_auth_stdlib_logger`)."""
    return _auth_stdlib_logger.isEnabledFor(logging.INFO)


def sanitise(name: str | None, limit: int = 128) -> str | None:
    """A user name fit for a log line: control characters replaced, length capped."""
    if name is None:
        return None
    if name.isprintable():
        return name[:limit]  # the usual case, without a generator step per character
    return "".join(ch if ch.isprintable() else "?" for ch in name[:limit])


def known_user(verdict: Verdict) -> bool:
    """Whether a store found the user of ``verdict`` (then its name is logged as typed)."""
    return verdict.outcome is Outcome.OK or verdict.reason in _STORE_FOUND


def shown_user(name: str | None, known: bool) -> str | None:
    """A login name as it may appear in a log line: typed if known, else fingerprinted."""
    if name is None:
        return None
    return sanitise(name if known else userlog.unknown_name(name))


def _fail2ban_user(name: str | None) -> str:
    """The user for the fail2ban line: nothing that could fake the ``,rip)`` part."""
    return _FAIL2BAN_UNSAFE.sub("?", sanitise(name, 64) or "")


def authentication_finished(
    cuid: int, info: RequestInfo, verdict: Verdict, duration: float
) -> None:
    """One event per finished request, with everything an operator asks about."""
    typed = verdict.original_user if verdict.original_user is not None else verdict.user
    known = known_user(verdict)
    if _info_enabled():
        if verdict.app_password is not None:
            _app_password_event(cuid, info, shown_user(typed, known), verdict, duration)
        else:
            _authentication_event(
                cuid,
                info,
                shown_user(typed, known),
                result_label(verdict),
                verdict.reason.value,
                round(duration, 6),
            )
    words = FAIL2BAN_WORDS.get(verdict.reason)
    if (
        words is not None
        and verdict.outcome is Outcome.FAIL
        and _auth_stdlib_logger.isEnabledFor(logging.WARNING)
    ):
        # fail2ban: Dovecot's passdb shape, user first, the client's address second.
        # An unknown name becomes its fingerprint, which the filter's user part matches.
        where = _fail2ban_user((verdict.user or typed) if known else shown_user(typed, False))
        if info.rip:
            where += f",{info.rip}"
        request_event(
            log,
            AUTH_LOGGER,
            "warning",
            f"passwd-file({where}): {words}",
            cuid=cuid,
            request=info.id,
        )


def authentication_aborted(cuid: int, info: RequestInfo, why: str) -> None:
    """A request that ended without a verdict (client gone, expired): still one event."""
    if _info_enabled():
        _authentication_event(cuid, info, None, "aborted", why, None)


def _app_password_event(
    cuid: int, info: RequestInfo, user: str | None, verdict: Verdict, duration: float
) -> None:
    """The ``authentication`` event of a login with an app password: the same fields,
    then ``app_password=LABEL`` (the label only, never the password)."""
    values = (
        cuid,
        info.id,
        info.mechanism,
        info.service,
        info.rip,
        info.lip,
        user,
        result_label(verdict),
        verdict.reason.value,
        round(duration, 6),
    )
    request_event(
        log,
        AUTH_LOGGER,
        "info",
        "authentication",
        **dict(zip(AUTH_FIELDS, values, strict=True)),
        app_password=sanitise(verdict.app_password, 64),
    )


def _authentication_event(
    cuid: int,
    info: RequestInfo,
    user: str | None,
    result: str,
    reason: str,
    duration: float | None,
) -> None:
    """The one shape of the ``authentication`` event, finished or aborted.

    Its fields are :data:`authbridge.observability.logs.AUTH_FIELDS`, in that order.
    """
    authentication_event(
        log,
        AUTH_LOGGER,
        cuid,
        info.id,
        info.mechanism,
        info.service,
        info.rip,
        info.lip,
        user,
        result,
        reason,
        duration,
    )


# ---------------------------------------------------------------------- debug trace


def _clean(text: str) -> str:
    """Tabs kept (they separate fields), every other control character replaced."""
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)


def _redact_keyed(field: str) -> str:
    key, sep, _ = field.partition("=")
    if sep and _SECRET_KEY.match(key):
        return f"{key}={REDACTED}"
    return field


def _redact_fail(field: str) -> str:
    """A ``FAIL`` field: secrets redacted, the (maybe unknown) user name fingerprinted."""
    key, sep, value = field.partition("=")
    if sep and key in _FAIL_NAME_KEYS:
        return f"{key}={userlog.unknown_name(wire.tabunescape(value))}"
    return _redact_keyed(field)


def redact_line(line: str) -> str:
    """A protocol line with every value that may carry a credential replaced.

    Lines of a known command keep their harmless fields; ``CONT`` keeps only its id;
    anything else is replaced whole, since we cannot know what it carries (a read
    that continues a line we never saw the start of looks like that, too).
    """
    fields = line.split("\t")
    command = fields[0]
    if command == "CONT":
        return "\t".join(fields[:2] + ([REDACTED] if any(fields[2:]) else fields[2:]))
    if command in _PLAIN_COMMANDS:
        return _clean(line)
    if command == "COOKIE":
        return f"COOKIE\t{REDACTED}"
    if command == "FAIL":
        return _clean("\t".join([command, *(_redact_fail(f) for f in fields[1:])]))
    if command in _KEYED_COMMANDS:
        return _clean("\t".join([command, *(_redact_keyed(f) for f in fields[1:])]))
    return f"<unrecognised line, {len(line)} characters redacted>" if line else ""


class Tracer:
    """Splits each direction of each connection into whole lines before redacting.

    A read can end anywhere, even inside ``resp=``; redacting per read would let the
    second half of a credential through as a line of its own.
    """

    #: More unfinished lines than this (connections gone without :meth:`closed`) and
    #: the oldest are dropped, redacted whole.
    MAX_PENDING = 1024
    MAX_LINE = wire.MAX_LINE_LENGTH

    def __init__(self) -> None:
        self._pending: OrderedDict[tuple[int, str], bytes] = OrderedDict()

    def feed(self, cuid: int, direction: str, data: bytes) -> list[str]:
        """The redacted complete lines ``data`` finishes."""
        key = (cuid, direction)
        buffer = self._pending.pop(key, b"") + data
        *lines, tail = buffer.split(b"\n")
        out = [redact_line(raw.decode("utf-8", "replace").rstrip("\r")) for raw in lines]
        if len(tail) > self.MAX_LINE:
            out.append(f"<{len(tail)} bytes without a newline redacted>")
        elif tail:
            self._pending[key] = tail
            while len(self._pending) > self.MAX_PENDING:
                self._pending.popitem(last=False)
        return [line for line in out if line]

    def closed(self, cuid: int) -> list[tuple[str, str]]:
        """Unfinished lines of a closed connection, as (direction, redacted line)."""
        out: list[tuple[str, str]] = []
        for direction in ("in", "out"):
            tail = self._pending.pop((cuid, direction), None)
            if tail:
                out.append((direction, redact_line(tail.decode("utf-8", "replace"))))
        return out


_tracer = Tracer()


def trace(cuid: int, direction: str, data: bytes) -> None:
    """Debug protocol trace, one event per line, credentials redacted."""
    for line in _tracer.feed(cuid, direction, data):
        trace_log.debug("protocol", cuid=cuid, direction=direction, line=line)


def trace_closed(cuid: int) -> None:
    """The connection is gone: log (redacted) and forget its unfinished lines."""
    for direction, line in _tracer.closed(cuid):
        trace_log.debug("protocol", cuid=cuid, direction=direction, line=line, partial=True)
