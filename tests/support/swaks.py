"""Run the real ``swaks`` SMTP client and read the SMTP reply codes it printed.

Interop tests assert on what a real client saw (235, 535, 435, 454, ...), so the codes
come from swaks' own transcript, never from our side of the socket. swaks always runs
under a timeout: a STARTTLS over a pipe that is not a socket makes it hang for ever
(harness gotcha E2).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support import require_binary

# Server lines: "<-" plain, "<~" over TLS, "<**" / "<~*" when swaks deems the reply an error.
_REPLY = re.compile(r"^\s*<(?:-|~|\*\*|~\*)\s+(\d{3})([ -]|$)")
# Client lines: "->" plain, "~>" over TLS.
_SENT = re.compile(r"^\s*(?:->|~>)\s+(.*)$")

# What swaks prints instead of passwords (--auth-hide-password), so transcripts are safe to show.
HIDDEN_PASSWORD = "HIDDEN"


class SwaksTimeout(AssertionError):
    """swaks did not finish in time; the message carries what it printed so far."""


@dataclass(frozen=True)
class SwaksResult:
    """Exit status, full transcript, and the server reply codes in the order received."""

    returncode: int
    transcript: str
    codes: tuple[int, ...]
    auth_codes: tuple[int, ...]

    @property
    def last_code(self) -> int | None:
        """The last SMTP reply code swaks received (None if it never got one)."""
        return self.codes[-1] if self.codes else None

    @property
    def auth_code(self) -> int | None:
        """The final reply to the last AUTH exchange (skipping 334 continuations)."""
        final = [code for code in self.auth_codes if code != 334]
        return final[-1] if final else None


def parse_transcript(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (all reply codes, reply codes received after the last ``AUTH`` command).

    A multi-line reply counts once (its last line). Replies belong to the AUTH exchange
    from the AUTH command up to the first client line that is not an AUTH continuation
    (the client only sends continuations after a 334).
    """
    codes: list[int] = []
    auth_codes: list[int] = []
    in_auth = False
    for line in text.splitlines():
        sent = _SENT.match(line)
        if sent:
            command = sent.group(1)
            if command.upper().startswith("AUTH"):
                in_auth = True
                auth_codes = []
            elif not (auth_codes and auth_codes[-1] == 334):
                in_auth = False
            continue
        reply = _REPLY.match(line)
        if reply and reply.group(2) != "-":
            code = int(reply.group(1))
            codes.append(code)
            if in_auth:
                auth_codes.append(code)
    return tuple(codes), tuple(auth_codes)


def run_swaks(
    *,
    server: str | None = None,
    pipe: str | None = None,
    auth: str | None = None,
    user: str | None = None,
    password: str | None = None,
    tls: bool = False,
    stop_after: str | None = "AUTH",
    drop: bool = True,
    extra_args: Sequence[str] = (),
    timeout: float = 20.0,
) -> SwaksResult:
    """Run one swaks session against ``server`` ("host:port") or ``pipe`` (a command).

    ``drop=True`` closes the connection right after the reply to ``stop_after`` instead of
    sending QUIT: Exim waits 200 ms before answering a QUIT on a plain connection (gotcha
    E1), which would dominate the run time of the suite. ``stop_after=None`` runs the
    whole transaction (MAIL, RCPT, DATA, QUIT).
    """
    if (server is None) == (pipe is None):
        raise ValueError("give exactly one of server= or pipe=")
    cmd = [require_binary("swaks"), "--hide-informational", "--timeout", str(int(timeout))]
    cmd += ["--server", server] if server is not None else ["--pipe", pipe or ""]
    cmd += ["--helo", "client.test", "--from", "sender@client.test", "--to", "rcpt@example.org"]
    if auth is not None:
        cmd += ["--auth", auth]
    if user is not None:
        cmd += ["--auth-user", user]
    if password is not None:
        cmd += ["--auth-password", password, "--auth-hide-password", HIDDEN_PASSWORD]
    if tls:
        cmd.append("--tls")
    if stop_after is not None:
        cmd += ["--drop-after" if drop else "--quit-after", stop_after]
    cmd += list(extra_args)
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream keeps swaks' error lines in order
            text=True,
            errors="replace",
            timeout=timeout + 5,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        partial = _text(exc.stdout)
        raise SwaksTimeout(f"swaks did not finish within {timeout + 5}s:\n{partial}") from None
    transcript = proc.stdout
    codes, auth_codes = parse_transcript(transcript)
    return SwaksResult(proc.returncode, transcript, codes, auth_codes)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
