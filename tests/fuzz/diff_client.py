"""Run one differential case on one connection and record what the server did.

The client writes each step of the case, then waits until every request it spoke last
for has been answered (OK, FAIL or CONT), the server hung up, or a deadline passed;
challenges that arrive are fed back into the case so the next write can answer them.
After the last step it waits for silence, because Dovecot holds FAILs for its 500 ms
flush timer. The record is normalised (SPID, CUID, COOKIE, CRAM-MD5 challenges, SCRAM
nonces, salts and signatures) so that two servers' records compare with ``==``.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass, field

import trio

from tests.fuzz.diff_cases import (
    Case,
    ConvState,
    ScramClient,
    apply_line_mutations,
    byte_mutated,
)

#: How long to wait for a reply the client is owed (Dovecot's FAIL timer is 500 ms).
OWED_WAIT = 2.0
#: Silence that ends a case once nothing more is owed.
FINAL_QUIET = 0.7
CRAM_CHALLENGE = re.compile(rb"<[0-9]+\.[0-9]+@[^<>\s]+>")

#: A user name field in OK/FAIL: CRAM-MD5 splits "name digest" at its last space.
NAME_FIELD = re.compile(rb"^((?:original_)?user=[^ ]*) .*$", re.DOTALL)


def _mask_name_tail(field: bytes) -> bytes:
    """Hide what follows the first space of a user name.

    A payload mutation that puts a space, or a non-hex byte followed by a space, inside
    a CRAM-MD5 digest moves part of the digest into the user name. Each server computed
    its own digest (its own challenge), so that tail differs between servers even when
    both behave the same: ``weird 3c`` at one, ``weird 4c`` at the other.
    """
    return NAME_FIELD.sub(rb"\1 <digest-tail>", field)


def _mask_digests(line: bytes) -> bytes:
    """Hide whole digests that reach a reply in any other field."""
    return re.sub(rb"(?<= )[0-9a-f]{4,}|[0-9a-f]{16,}", b"<hex>", line)


@dataclass
class Record:
    """What one server did with one case."""

    handshake: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    closed: bool = False
    sent: list[bytes] = field(default_factory=list)
    partial: bytes = b""
    #: A byte mutation hit a challenge-dependent line: not comparable between servers.
    inconclusive: bool = False

    def by_id(self) -> dict[bytes, list[bytes]]:
        """Replies grouped per request id, in order (ids do not order against each other)."""
        out: dict[bytes, list[bytes]] = {}
        for line in self.replies:
            fields = line.split(b"\t")
            key = fields[1] if len(fields) > 1 else b"?"
            out.setdefault(key, []).append(line)
        return out

    def comparable(self) -> tuple[object, ...]:
        return (self.handshake, self.by_id(), self.closed, self.partial)


def _request_id(value: bytes) -> bytes:
    return str(int(value)).encode() if value.isdigit() and len(value) < 30 else value


class _Conversation:
    def __init__(self, stream: trio.SocketStream, case: Case) -> None:
        self.stream = stream
        self.case = case
        self.state = ConvState()
        self.record = Record()
        self.buffer = b""
        self.in_handshake = True
        self.owed: set[bytes] = set()
        #: Reply ids whose SCRAM client is known under another id (see _scram_by_nonce).
        self.aliases: dict[bytes, ScramClient] = {}
        #: Client nonces as they went out on the wire (a payload mutation may have
        #: shortened or changed the one the case's ScramClient made).
        self.sent_nonces: list[bytes] = []
        self.changed = trio.Event()

    async def reader(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    self._line(line)
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.record.closed = True
        self.record.partial = self.buffer
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _line(self, line: bytes) -> None:
        if self.in_handshake:
            self.record.handshake.append(normalise_handshake(line))
            self.in_handshake = line != b"DONE"
            return
        fields = line.split(b"\t")
        if len(fields) > 1 and fields[0] in (b"OK", b"FAIL", b"CONT"):
            self.owed.discard(fields[1])
            if fields[0] == b"CONT" and len(fields) > 2:
                try:
                    self.state.challenges[fields[1]] = base64.b64decode(fields[2], validate=True)
                except ValueError:
                    self.state.challenges[fields[1]] = b""
        self.record.replies.append(self._normalise_reply(fields))

    def _normalise_reply(self, fields: list[bytes]) -> bytes:
        if fields[0] != b"CONT" or len(fields) != 3:
            return _mask_digests(b"\t".join(_mask_name_tail(f) for f in fields))
        data = self.state.challenges.get(fields[1], b"")
        if CRAM_CHALLENGE.fullmatch(data):
            return b"CONT\t" + fields[1] + b"\t<cram-challenge>"
        scram = self.state.scram.get(fields[1]) or self._scram_by_nonce(fields[1], data)
        if scram is not None and data.startswith(b"r="):
            nonce_ok = self._echoes_sent_nonce(data[2:], scram.nonce)
            text = re.sub(rb"^r=[^,]*", b"r=<nonce ok>" if nonce_ok else b"r=<nonce bad>", data)
            text = re.sub(rb",s=[^,]*", b",s=<salt>", text)
            return b"CONT\t" + fields[1] + b"\tscram:" + text
        if scram is not None and data.startswith(b"v="):
            expected = scram.server_signature or b""
            try:
                good = hmac.compare_digest(base64.b64decode(data[2:], validate=True), expected)
            except ValueError:
                good = False
            return b"CONT\t" + fields[1] + (b"\tscram:v=<good>" if good else b"\tscram:v=<bad>")
        return b"\t".join(fields)

    def _scram_by_nonce(self, request_id: bytes, data: bytes) -> ScramClient | None:
        """The client whose nonce starts this server-first message: a mutated id field
        (``4\x0102`` is id 4 to both servers) detaches a reply from the case's own id.
        Remembered for the id, so the server-final is recognised too."""
        if request_id in self.aliases:
            return self.aliases[request_id]
        if not data.startswith(b"r="):
            return None
        for client in self.state.scram.values():
            if data[2:].startswith(client.nonce):
                self.aliases[request_id] = client
                return client
        return None

    def _echoes_sent_nonce(self, server_nonce: bytes, case_nonce: bytes) -> bool:
        """Whether the server nonce starts with the client nonce it was sent.

        Judged against what went out, not the case's own nonce: after a truncated
        client-first, a server's random part may by chance begin with the cut-off
        byte and so look like the full nonce at one server and not at the other.
        """
        sent = self.sent_nonces or [case_nonce]
        return any(server_nonce.startswith(nonce) for nonce in sent)

    def _note_nonce(self, fields: list[bytes]) -> None:
        """Remember the client nonce of a client-first message in an AUTH or CONT."""
        payload = fields[-1]
        if fields[0] == b"AUTH":
            payload = next((f[5:] for f in fields if f.startswith(b"resp=")), b"")
        try:
            text = base64.b64decode(payload, validate=True)
        except ValueError:
            return
        match = re.search(rb"(?:^|,)r=([^,]*)", text)
        if match is not None and not text.startswith(b"c="):
            self.sent_nonces.append(match.group(1))

    def _note_sent(self, data: bytes) -> None:
        for line in data.split(b"\n")[:-1]:
            fields = line.rstrip(b"\r").split(b"\t")
            if len(fields) > 2 and fields[0] in (b"AUTH", b"CONT"):
                self._note_nonce(fields)
            if len(fields) > 1 and fields[0] in (b"AUTH", b"CONT"):
                self.owed.add(_request_id(fields[1]))
            elif len(fields) > 1 and fields[0] == b"CANCEL":
                self.owed.discard(_request_id(fields[1]))

    async def wait(self, quiet: float, owed_wait: float) -> None:
        """Until nothing is owed (or owed_wait passed), then until ``quiet`` of silence."""
        with trio.move_on_after(owed_wait):
            while self.owed and not self.record.closed:
                await self.changed.wait()
        while not self.record.closed:
            with trio.move_on_after(quiet) as scope:
                await self.changed.wait()
            if scope.cancelled_caught:
                return

    async def run(self) -> None:
        steps = self.case.steps
        #: A mutation left the last write's line without its LF: the next write's bytes
        #: join that line (a SCRAM final or CRAM answer then lands in, say, a user name).
        open_line = False
        for index, renders in enumerate(steps):
            lines = [render(self.state) + b"\n" for render in renders]
            data = apply_line_mutations(index, len(steps), lines, self.case.mutations)
            if byte_mutated(index, len(steps), renders, self.case.mutations) or (
                open_line and any(getattr(r, "volatile", False) for r in renders)
            ):
                self.record.inconclusive = True
            if data:
                open_line = not data.endswith(b"\n")
            self.record.sent.append(data)
            if self.record.closed:
                break
            self._note_sent(data)
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            last = index == len(steps) - 1
            # Between steps, a short quiet after the owed replies catches stray lines
            # before the next write depends on them; after the last, Dovecot's timer.
            await self.wait(FINAL_QUIET if last else 0.05, OWED_WAIT)


def normalise_handshake(line: bytes) -> bytes:
    for key in (b"SPID", b"CUID", b"COOKIE"):
        if line.startswith(key + b"\t"):
            return key + b"\t<" + key.lower() + b">"
    return line


async def run_case(socket_path: str, case: Case) -> Record:
    """Play ``case`` on a fresh connection to ``socket_path``."""
    stream = await trio.open_unix_socket(socket_path)
    conv = _Conversation(stream, case)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(conv.reader)
        await conv.run()
        nursery.cancel_scope.cancel()
    return conv.record


async def accepts_connections(socket_path: str, timeout: float = 10.0) -> bool:
    """A new client still gets a whole handshake (up to DONE)."""
    with trio.move_on_after(timeout):
        stream = await trio.open_unix_socket(socket_path)
        async with stream:
            data = b""
            while b"DONE\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return False
                data += chunk
            return True
    return False
