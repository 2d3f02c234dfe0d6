"""Log events of the protocol path: one per authentication, and the debug trace.

The server calls these functions; they decide what is logged and how. Nothing that can
carry a credential is ever logged: passwords never reach this module, and the trace
redacts every base64 payload.
"""

from __future__ import annotations

import re

from authbridge.logs import get_logger
from authbridge.session import RequestInfo
from authbridge.verdict import Outcome, Verdict

log = get_logger("authbridge.auth")
trace_log = get_logger("authbridge.trace")

#: Fields of client/server lines whose value may carry a credential.
_SECRET_FIELD = re.compile(r"^(resp|pass|password)=", re.IGNORECASE)


def sanitise(name: str | None, limit: int = 128) -> str | None:
    """A user name fit for a log line: control characters replaced, length capped."""
    if name is None:
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in name[:limit])


def authentication_finished(
    cuid: int, info: RequestInfo, verdict: Verdict, duration: float
) -> None:
    """One event per finished request, with everything an operator asks about."""
    log.info(
        "authentication",
        cuid=cuid,
        request=info.id,
        mechanism=info.mechanism,
        service=info.service,
        rip=info.rip,
        lip=info.lip,
        user=sanitise(verdict.original_user if verdict.original_user is not None else verdict.user),
        result=verdict.outcome.value,
        reason=verdict.reason.value,
        duration=round(duration, 6),
    )
    if verdict.outcome is Outcome.FAIL:
        # fail2ban: the Dovecot passdb shape its stock "dovecot" filter already knows.
        log.warning(
            f"passwd-file({sanitise(verdict.user or verdict.original_user) or ''},"
            f"{info.rip or ''}): {_dovecot_words(verdict)}"
        )


def _dovecot_words(verdict: Verdict) -> str:
    if verdict.reason.value == "user_unknown":
        return "unknown user"
    return "Password mismatch"


def redact_line(line: str) -> str:
    """A protocol line with every value that may carry a credential replaced."""
    fields = line.split("\t")
    if fields and fields[0] == "CONT" and len(fields) >= 3:
        fields[2:] = ["<redacted>"] if any(fields[2:]) else fields[2:]
        return "\t".join(fields)
    return "\t".join(
        f"{m.group(1)}=<redacted>" if (m := _SECRET_FIELD.match(f)) else f for f in fields
    )


def trace(cuid: int, direction: str, data: bytes) -> None:
    """Debug protocol trace, one event per line, credentials redacted."""
    text = data.decode("utf-8", "replace")
    for line in text.split("\n"):
        if line:
            trace_log.debug("protocol", cuid=cuid, direction=direction, line=redact_line(line))
