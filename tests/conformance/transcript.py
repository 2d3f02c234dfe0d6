"""Parse and replay the wire transcripts in ``protocol/transcripts/``.

A transcript is the client's half of one auth-client connection plus what the server
must answer. The same file is replayed against real Dovecot 2.3 and against authbridge,
so the format only pins down what is deterministic on the wire: volatile values (PIDs,
cookies, CRAM-MD5 challenges) are matched by pattern, and replies whose order the server
may choose are matched as an unordered group. protocol/README.md is the format's spec.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import re
import select
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.diff_cases import ScramClient

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "protocol" / "transcripts"
USERS_FILE = REPO / "protocol" / "users.passwd"

DEFAULT_TIMEOUT = 5.0
# Dovecot flushes delayed FAILs on a 500 ms timer even with auth_failure_delay = 0.
OWED_REPLY_WAIT = 1.0

# The mechanisms the corpus servers offer unless a transcript's "# mechanisms:" says otherwise.
DEFAULT_MECHANISMS: tuple[str, ...] = ("plain", "login", "cram-md5")
# The other set a transcript may ask for: the differential fuzzer's (all five).
ALL_MECHANISMS: tuple[str, ...] = ("plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256")
MECHANISM_SETS: tuple[tuple[str, ...], ...] = (DEFAULT_MECHANISMS, ALL_MECHANISMS)

# Each mechanism's MECH line, as Dovecot 2.3 (and so authbridge) sends it.
MECH_LINES: dict[str, str] = {
    "plain": r"MECH\tPLAIN\tplaintext",
    "login": r"MECH\tLOGIN\tplaintext",
    "cram-md5": r"MECH\tCRAM-MD5\tdictionary\tactive",
    "scram-sha-1": r"MECH\tSCRAM-SHA-1\tmutual-auth",
    "scram-sha-256": r"MECH\tSCRAM-SHA-256\tmutual-auth",
}


def handshake(mechanisms: Sequence[str] = DEFAULT_MECHANISMS) -> tuple[str, ...]:
    """The handshake patterns a server offering ``mechanisms`` sends."""
    return (
        r"VERSION\t1\t2",
        *(MECH_LINES[m] for m in mechanisms),
        r"SPID\t{int}",
        r"CUID\t{int}",
        r"COOKIE\t{hex32}",
        r"DONE",
    )


# The handshake authbridge and Dovecot 2.3 (auth_mechanisms = plain login cram-md5) send.
HANDSHAKE: tuple[str, ...] = handshake()
SCRAM_DIGESTS = {"sha-1": "sha1", "sha-256": "sha256"}

CRAM_CHALLENGE = re.compile(rb"<[0-9]+\.[0-9]+@[^<>\s]+>")


class TranscriptSyntaxError(ValueError):
    """A transcript file does not follow the format in protocol/README.md."""


class TranscriptMismatch(AssertionError):
    """The server's behaviour differs from the transcript."""


# --------------------------------------------------------------------------------------
# Text level: escapes and {directives}
# --------------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "t": b"\t",
    "r": b"\r",
    "n": b"\n",
    "0": b"\x00",
    "\\": b"\\",
    "{": b"{",
    "}": b"}",
}


def unescape(text: str, where: str = "") -> bytes:
    """Turn ``\\t``, ``\\r``, ``\\n``, ``\\0``, ``\\\\``, ``\\{``, ``\\}``, ``\\xHH`` into bytes."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise TranscriptSyntaxError(f"{where}: lone backslash at end of {text!r}")
        nxt = text[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[nxt]
            i += 2
        elif nxt == "x":
            hex_digits = text[i + 2 : i + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", hex_digits):
                raise TranscriptSyntaxError(f"{where}: bad \\x escape in {text!r}")
            out.append(int(hex_digits, 16))
            i += 4
        else:
            raise TranscriptSyntaxError(f"{where}: unknown escape \\{nxt} in {text!r}")
    return bytes(out)


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Directive:
    name: str
    arg: str


Segment = Literal | Directive


def split_segments(text: str, where: str) -> list[Segment]:
    """Split a line into literal text and ``{name arg}`` directives (``\\{`` is a literal brace)."""
    segments: list[Segment] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch == "{":
            end = text.find("}", i)
            if end < 0:
                raise TranscriptSyntaxError(f"{where}: unclosed {{ in {text!r}")
            if buf:
                segments.append(Literal("".join(buf)))
                buf = []
            body = text[i + 1 : end]
            name, _, arg = body.partition(" ")
            segments.append(Directive(name, arg))
            i = end + 1
            continue
        if ch == "}":
            raise TranscriptSyntaxError(f"{where}: stray }} in {text!r}")
        buf.append(ch)
        i += 1
    if buf:
        segments.append(Literal("".join(buf)))
    return segments


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Client lines, written in one write() (consecutive C: lines are pipelined)."""

    lines: tuple[tuple[Segment, ...], ...]
    where: tuple[str, ...]


@dataclass(frozen=True)
class Expect:
    """One server line that must come next."""

    pattern: tuple[Segment, ...]
    where: str


@dataclass(frozen=True)
class ExpectUnordered:
    """Several server lines that must come next, in any order."""

    patterns: tuple[tuple[Segment, ...], ...]
    where: tuple[str, ...]


@dataclass(frozen=True)
class Disconnect:
    """The server closes the connection without sending anything else."""

    where: str


@dataclass(frozen=True)
class Quiet:
    """Nothing may arrive for ``seconds``."""

    seconds: float
    where: str


@dataclass(frozen=True)
class Pause:
    """The client waits ``seconds`` before going on (reading nothing)."""

    seconds: float
    where: str


Step = Send | Expect | ExpectUnordered | Disconnect | Quiet | Pause


#: Every server the corpus is replayed against, the reference first.
TARGETS = ("dovecot", "authbridge")
#: The "# targets:" values a transcript may give.
TARGET_SETS = (TARGETS, ("authbridge",))


@dataclass
class Transcript:
    name: str
    title: str
    path: Path
    steps: list[Step] = field(default_factory=list)
    #: The mechanisms both servers must offer for this transcript (one of MECHANISM_SETS).
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS
    #: The servers that replay it: both, unless "# targets: authbridge" says that the
    #: reference (Dovecot 2.3) cannot, as for Dovecot 2.4's protocol level.
    targets: tuple[str, ...] = TARGETS


_MACRO = re.compile(r"<(\w+)(?:\s+([0-9.]+))?>")


def parse_transcript(path: Path) -> Transcript:
    """Read one transcript file (format: protocol/README.md)."""
    transcript = Transcript(name=path.stem, title="", path=path)
    pending_send: list[tuple[tuple[Segment, ...], str]] = []
    pending_group: list[tuple[tuple[Segment, ...], str]] = []

    def flush() -> None:
        if pending_send:
            transcript.steps.append(
                Send(tuple(s for s, _ in pending_send), tuple(w for _, w in pending_send))
            )
            pending_send.clear()
        if pending_group:
            transcript.steps.append(
                ExpectUnordered(
                    tuple(s for s, _ in pending_group), tuple(w for _, w in pending_group)
                )
            )
            pending_group.clear()

    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}:{lineno}"
        if not raw.strip():
            continue
        if raw.startswith("#"):
            header = raw[1:].strip()
            if header.lower().startswith("title:"):
                transcript.title = header.split(":", 1)[1].strip()
            elif header.lower().startswith("mechanisms:"):
                if any(isinstance(s, Expect) for s in transcript.steps):
                    raise TranscriptSyntaxError(f"{where}: '# mechanisms:' after the handshake")
                transcript.mechanisms = _mechanism_set(header.split(":", 1)[1], where)
            elif header.lower().startswith("targets:"):
                transcript.targets = _target_set(header.split(":", 1)[1], where)
            continue
        tag, sep, rest = raw.partition(": ")
        if not sep:
            if raw.rstrip() in ("C:", "S:", "S*:"):
                tag, rest = raw.rstrip(), ""
            else:
                raise TranscriptSyntaxError(f"{where}: expected 'C: ', 'S: ' or 'S*: ' in {raw!r}")
        macro = _MACRO.fullmatch(rest.strip())
        if tag == "C":
            if pending_group:
                flush()
            if macro and macro.group(1) == "pause":
                flush()
                transcript.steps.append(Pause(_macro_seconds(macro, where), where))
                continue
            pending_send.append((tuple(split_segments(rest, where)), where))
        elif tag == "S":
            flush()
            if macro is None:
                transcript.steps.append(Expect(tuple(split_segments(rest, where)), where))
            elif macro.group(1) == "handshake":
                for pattern in handshake(transcript.mechanisms):
                    transcript.steps.append(Expect(tuple(split_segments(pattern, where)), where))
            elif macro.group(1) == "disconnect":
                transcript.steps.append(Disconnect(where))
            elif macro.group(1) == "quiet":
                transcript.steps.append(Quiet(_macro_seconds(macro, where), where))
            else:
                raise TranscriptSyntaxError(f"{where}: unknown macro {rest.strip()!r}")
        elif tag == "S*":
            if pending_send:
                flush()
            if macro is not None:
                raise TranscriptSyntaxError(f"{where}: macros are not allowed in S*: lines")
            pending_group.append((tuple(split_segments(rest, where)), where))
        else:
            raise TranscriptSyntaxError(f"{where}: unknown tag {tag!r}")
    flush()
    if not transcript.title:
        raise TranscriptSyntaxError(f"{path.name}: missing '# title:' header")
    if not transcript.steps:
        raise TranscriptSyntaxError(f"{path.name}: no steps")
    return transcript


def _target_set(text: str, where: str) -> tuple[str, ...]:
    wanted = tuple(text.lower().split())
    for known in TARGET_SETS:
        if wanted == known:
            return known
    raise TranscriptSyntaxError(
        f"{where}: targets must be one of " + " or ".join(repr(" ".join(t)) for t in TARGET_SETS)
    )


def _mechanism_set(text: str, where: str) -> tuple[str, ...]:
    wanted = tuple(text.lower().split())
    for known in MECHANISM_SETS:
        if wanted == known:
            return known
    raise TranscriptSyntaxError(
        f"{where}: mechanisms must be one of "
        + " or ".join(repr(" ".join(m)) for m in MECHANISM_SETS)
    )


def _macro_seconds(macro: re.Match[str], where: str) -> float:
    if macro.group(2) is None:
        raise TranscriptSyntaxError(f"{where}: <{macro.group(1)} MS> needs milliseconds")
    return float(macro.group(2)) / 1000.0


def load_corpus(directory: Path) -> list[Transcript]:
    return [parse_transcript(p) for p in sorted(directory.glob("*.txt"))]


# --------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------


def cram_md5_response(
    user: bytes | str, password: bytes | str, challenge: bytes, upper: bool = False
) -> bytes:
    """The client's CRAM-MD5 answer (RFC 2195), base64-encoded for a CONT line."""
    user_b = user.encode() if isinstance(user, str) else user
    password_b = password.encode() if isinstance(password, str) else password
    digest = hmac.new(password_b, challenge, hashlib.md5).hexdigest()
    if upper:
        digest = digest.upper()
    return base64.b64encode(user_b + b" " + digest.encode())


class _Conn:
    """A UNIX-socket connection with a line reader and a log of both directions."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.buf = b""
        self.eof = False
        self.log: list[str] = []
        self.t0 = time.monotonic()
        # Request ids the client has spoken for last: the server still owes them a reply.
        self.owed: set[bytes] = set()

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.3f} {text}")

    def send(self, data: bytes) -> None:
        for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
            shown = line if len(line) <= 200 else line[:120] + b"...(%d bytes)" % len(line)
            self.note(f"C: {shown!r}")
            fields = line.rstrip(b"\r").split(b"\t")
            if len(fields) > 1 and fields[0] in (b"AUTH", b"CONT"):
                self.owed.add(_request_id(fields[1]))
            elif len(fields) > 1 and fields[0] == b"CANCEL":
                self.owed.discard(_request_id(fields[1]))
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.note(f"send failed: {exc}")
            raise TranscriptMismatch(f"could not send (server closed?): {exc}") from exc
        finally:
            self.sock.setblocking(False)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on timeout. Sets eof on EOF or connection reset."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], remaining)
        if not ready:
            return False
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                raise
            data = b""
        if not data:
            self.eof = True
            self.note("S: <EOF>")
        self.buf += data
        return True

    def read_line(self, deadline: float) -> bytes | None:
        """Next server line without its LF; None on EOF. Raises on timeout."""
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    raise TranscriptMismatch(f"server closed after a partial line {self.buf!r}")
                return None
            if not self._fill(deadline):
                raise TranscriptMismatch("timed out waiting for a server line")
        line, self.buf = self.buf.split(b"\n", 1)
        self.note(f"S: {line!r}")
        fields = line.split(b"\t")
        if fields[0] in (b"OK", b"FAIL", b"CONT") and len(fields) > 1:
            self.owed.discard(_request_id(fields[1]))
        return line

    def close(self) -> None:
        self.sock.close()


class Replayer:
    """Replays one transcript on a fresh connection to ``socket_path``."""

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.challenges: dict[bytes, bytes] = {}
        # SCRAM per request id: the client half, and the server-first message it answers.
        self.scram: dict[bytes, ScramClient] = {}
        self.server_firsts: dict[bytes, bytes] = {}

    # -- client side ---------------------------------------------------------------

    def render_client(self, segments: Sequence[Segment], where: str) -> bytes:
        out = b""
        for seg in segments:
            if isinstance(seg, Literal):
                out += unescape(seg.text, where)
            elif seg.name == "b64":
                out += base64.b64encode(unescape(seg.arg, where))
            elif seg.name == "repeat":
                char, _, count = seg.arg.rpartition(" ")
                out += unescape(char, where) * int(count)
            elif seg.name in ("cram-md5", "cram-md5-upper"):
                user, _, password = seg.arg.partition(" ")
                fields = out.split(b"\t")
                if len(fields) < 2 or fields[1] not in self.challenges:
                    raise TranscriptSyntaxError(
                        f"{where}: {{{seg.name}}} with no CRAM-MD5 challenge seen for this id"
                    )
                out += cram_md5_response(
                    unescape(user, where),
                    unescape(password, where),
                    self.challenges[fields[1]],
                    seg.name.endswith("upper"),
                )
            elif seg.name.startswith("scram-"):
                out += base64.b64encode(self._scram_client(seg, out, where))
            else:
                raise TranscriptSyntaxError(f"{where}: unknown client directive {seg.name!r}")
        return out

    def _scram_client(self, seg: Directive, prefix: bytes, where: str) -> bytes:
        """The SCRAM client message a ``{scram-...}`` directive stands for (before base64)."""
        fields = prefix.split(b"\t")
        if len(fields) < 2:
            raise TranscriptSyntaxError(f"{where}: {{{seg.name}}} outside an AUTH or CONT line")
        request_id = fields[1]
        if seg.name == "scram-first":
            parts = seg.arg.split(" ")
            if len(parts) != 3 or parts[0].lower() not in SCRAM_DIGESTS:
                raise TranscriptSyntaxError(
                    f"{where}: {{scram-first ALG USER NONCE}} with ALG sha-1 or sha-256"
                )
            client = ScramClient(
                SCRAM_DIGESTS[parts[0].lower()],
                unescape(parts[1], where),
                b"",
                unescape(parts[2], where),
            )
            self.scram[request_id] = client
            return client.client_first()
        if request_id not in self.server_firsts:
            raise TranscriptSyntaxError(
                f"{where}: {{{seg.name}}} with no {{scram-server-first}} seen for this id"
            )
        client, server_first = self.scram[request_id], self.server_firsts[request_id]
        if seg.name == "scram-final":
            client.password = unescape(seg.arg, where)
            return client.client_final(server_first)
        if seg.name == "scram-final-badproof":
            client.password = b"not the password"
            return client.client_final(server_first)
        if seg.name == "scram-final-proof":
            password, _, template = seg.arg.partition(" ")
            client.password = unescape(password, where)
            without_proof, _, proof = client.client_final(server_first).rpartition(b",p=")
            return without_proof + b",p=" + unescape(template, where).replace(b"%p", proof)
        raise TranscriptSyntaxError(f"{where}: unknown client directive {seg.name!r}")

    # -- server side ---------------------------------------------------------------

    @staticmethod
    def pattern_regex(segments: Sequence[Segment], where: str) -> re.Pattern[bytes]:
        parts: list[bytes] = []
        for seg in segments:
            if isinstance(seg, Literal):
                parts.append(re.escape(unescape(seg.text, where)))
            elif seg.name == "int":
                parts.append(rb"[0-9]+")
            elif seg.name == "hex32":
                parts.append(rb"[0-9a-f]{32}")
            elif seg.name == "any":
                parts.append(rb"[^\t]*")
            elif seg.name == "challenge":
                parts.append(rb"(?P<challenge>[A-Za-z0-9+/]+={0,2})")
            elif seg.name == "scram-server-first":
                parts.append(rb"(?P<scram_first>[A-Za-z0-9+/]+={0,2})")
            elif seg.name == "scram-server-final":
                parts.append(rb"(?P<scram_final>[A-Za-z0-9+/]+={0,2})")
            elif seg.name == "b64":
                parts.append(re.escape(base64.b64encode(unescape(seg.arg, where))))
            else:
                raise TranscriptSyntaxError(f"{where}: unknown server directive {seg.name!r}")
        return re.compile(b"".join(parts), re.DOTALL)

    def _try(self, segments: Sequence[Segment], line: bytes, where: str) -> dict[str, bytes] | None:
        """Match without side effects; returns what to remember (CRAM challenge, SCRAM
        server-first), decoded, by group name."""
        found = self.pattern_regex(segments, where).fullmatch(line)
        if found is None:
            return None
        fields = line.split(b"\t")
        scram = self.scram.get(fields[1]) if len(fields) > 1 else None
        captured: dict[str, bytes] = {}
        for name, value in found.groupdict().items():
            data = base64.b64decode(value, validate=True)
            if name == "challenge" and not CRAM_CHALLENGE.fullmatch(data):
                return None
            if name == "scram_first" and (
                scram is None or not data.startswith(b"r=" + scram.nonce)
            ):
                return None
            if name == "scram_final" and (
                scram is None
                or scram.server_signature is None
                or not data.startswith(b"v=")
                or not hmac.compare_digest(_b64_or_empty(data[2:]), scram.server_signature)
            ):
                return None
            captured[name] = data
        return captured

    def _remember(self, line: bytes, captured: dict[str, bytes]) -> None:
        request_id = line.split(b"\t")[1] if captured else b""
        if "challenge" in captured:
            self.challenges[request_id] = captured["challenge"]
        if "scram_first" in captured:
            self.server_firsts[request_id] = captured["scram_first"]

    def match(self, segments: Sequence[Segment], line: bytes, where: str) -> bool:
        captured = self._try(segments, line, where)
        if captured is None:
            return False
        self._remember(line, captured)
        return True

    @staticmethod
    def describe(segments: Sequence[Segment]) -> str:
        return "".join(
            s.text if isinstance(s, Literal) else "{" + (s.name + " " + s.arg).strip() + "}"
            for s in segments
        )

    def _expect_group(self, conn: _Conn, step: ExpectUnordered) -> None:
        deadline = time.monotonic() + self.timeout
        lines: list[bytes] = []
        for _ in step.patterns:
            line = conn.read_line(deadline)
            if line is None:
                raise TranscriptMismatch(
                    f"{step.where[0]}: server disconnected; expected (any order) "
                    + ", ".join(self.describe(p) for p in step.patterns)
                )
            lines.append(line)
        # Which pattern may take which line; then a perfect bipartite matching.
        captures: dict[tuple[int, int], dict[str, bytes]] = {}
        for pi, pattern in enumerate(step.patterns):
            for li, line in enumerate(lines):
                got = self._try(pattern, line, step.where[pi])
                if got is not None:
                    captures[(pi, li)] = got
        owner = _perfect_matching(len(lines), captures.keys())
        if owner is not None:
            for li, pi in enumerate(owner):
                self._remember(lines[li], captures[(pi, li)])
            return
        raise TranscriptMismatch(
            f"{step.where[0]}: got {lines!r}, expected in any order: "
            + ", ".join(self.describe(p) for p in step.patterns)
        )

    # -- driver --------------------------------------------------------------------

    def run(self, transcript: Transcript) -> list[str]:
        """Replay ``transcript``; return the traffic log. Raises TranscriptMismatch."""
        conn = _Conn(self.socket_path, self.timeout)
        try:
            self._run_steps(conn, transcript)
        except TranscriptMismatch as exc:
            raise TranscriptMismatch(
                f"{transcript.name}: {exc}\n--- traffic ---\n" + "\n".join(conn.log)
            ) from None
        finally:
            conn.close()
        return conn.log

    def _run_steps(self, conn: _Conn, transcript: Transcript) -> None:
        ended_by_disconnect = False
        for step in transcript.steps:
            if isinstance(step, Send):
                conn.send(
                    b"".join(
                        self.render_client(s, w) + b"\n"
                        for s, w in zip(step.lines, step.where, strict=True)
                    )
                )
            elif isinstance(step, Expect):
                line = conn.read_line(time.monotonic() + self.timeout)
                if line is None:
                    raise TranscriptMismatch(
                        f"{step.where}: server disconnected; expected "
                        f"{self.describe(step.pattern)!r}"
                    )
                if not self.match(step.pattern, line, step.where):
                    raise TranscriptMismatch(
                        f"{step.where}: got {line!r}, expected {self.describe(step.pattern)!r}"
                    )
            elif isinstance(step, ExpectUnordered):
                self._expect_group(conn, step)
            elif isinstance(step, Disconnect):
                line = conn.read_line(time.monotonic() + self.timeout)
                if line is not None:
                    raise TranscriptMismatch(
                        f"{step.where}: expected the server to disconnect, got {line!r}"
                    )
                ended_by_disconnect = True
            elif isinstance(step, Quiet):
                deadline = time.monotonic() + step.seconds
                while not conn.buf and not conn.eof and conn._fill(deadline):
                    pass
                if conn.buf or conn.eof:
                    raise TranscriptMismatch(
                        f"{step.where}: expected silence, got "
                        + ("<EOF>" if conn.eof and not conn.buf else repr(conn.buf))
                    )
            elif isinstance(step, Pause):
                conn.note(f"(client pauses {step.seconds:.3f}s)")
                time.sleep(step.seconds)
        if not ended_by_disconnect:
            # Nothing unexpected may be queued, and the connection must still be open. If the
            # client spoke last for some request, a (possibly delayed) reply is still due, so
            # wait long enough to see it: the transcript has to say what it is.
            deadline = time.monotonic() + (OWED_REPLY_WAIT if conn.owed else 0.05)
            while not conn.buf and not conn.eof and conn._fill(deadline):
                pass
            if conn.buf:
                raise TranscriptMismatch(f"end: unexpected extra server data {conn.buf!r}")
            if conn.owed:
                raise TranscriptMismatch(
                    "end: the transcript does not say how the server answers request(s) "
                    + ", ".join(sorted(i.decode(errors="replace") for i in conn.owed))
                )
            if conn.eof:
                raise TranscriptMismatch("end: server disconnected, transcript did not expect it")


def _b64_or_empty(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return b""


def _request_id(field: bytes) -> bytes:
    """Normalise a request id the way the server echoes it ("007" -> "7")."""
    return str(int(field)).encode() if field.isdigit() else field


def _perfect_matching(n: int, edges: Iterable[tuple[int, int]]) -> list[int] | None:
    """Assign each of n lines to a distinct pattern (edges are (pattern, line)); Kuhn's method.

    Returns owner[line] = pattern, or None when no complete assignment exists.
    """
    candidates: dict[int, list[int]] = {}
    for pi, li in edges:
        candidates.setdefault(pi, []).append(li)
    owner: list[int | None] = [None] * n

    def place(pi: int, seen: set[int]) -> bool:
        for li in candidates.get(pi, []):
            if li in seen:
                continue
            seen.add(li)
            current = owner[li]
            if current is None or place(current, seen):
                owner[li] = pi
                return True
        return False

    for pi in range(n):
        if not place(pi, set()):
            return None
    return [pi for pi in owner if pi is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.conformance.transcript SOCKET [FILE...]``: replay and report."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("socket")
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traffic")
    args = parser.parse_args(argv)
    files = args.files or sorted(CORPUS.glob("*.txt"))
    failed = 0
    for path in files:
        transcript = parse_transcript(path)
        started = time.monotonic()
        try:
            log = Replayer(args.socket).run(transcript)
        except TranscriptMismatch as exc:
            failed += 1
            print(f"FAIL {transcript.name} ({time.monotonic() - started:.2f}s)\n{exc}\n")
            continue
        print(f"ok   {transcript.name} ({time.monotonic() - started:.2f}s)")
        if args.verbose:
            print("\n".join(log))
    print(f"{len(files) - failed}/{len(files)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
