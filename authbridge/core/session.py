"""One client connection of the auth-client protocol, as a pure state machine.

:class:`Session` takes received bytes and returns :data:`Action` values: lines to send,
FAIL lines to send after the failure delay, credentials the shell must check, or a
decision to close the connection. It owns the handshake, the table of requests in flight
(keyed by the client's ids, many at once), the ``resp=`` rules and every
disconnect-on-violation rule of Dovecot 2.3. It never touches a socket or a clock: the
caller passes ``now`` in.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from authbridge.core import addresses, replies, wire
from authbridge.core.addresses import IPAddress
from authbridge.core.mechanisms.base import (
    Accepted,
    Challenge,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    Step,
    Success,
    VerifyPlain,
    VerifyToken,
)
from authbridge.core.records import record
from authbridge.core.states import (
    CONNECTION,
    REQUEST,
    Conn,
    ConnEvent,
    ConnEventKind,
    ConnState,
    IllegalTransition,
    Req,
    ReqEvent,
    ReqEventKind,
    ReqState,
)
from authbridge.core.usernames import InvalidUsername, UsernamePolicy
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.errors import ProtocolError

PROTOCOL_MAJOR = 1
#: What the handshake advertises: Dovecot 2.3's minor, so that the handshake stays byte
#: for byte Dovecot 2.3's (clients read only the major). The 2.4 behaviours below are
#: negotiated by the *client's* minor, as Dovecot 2.4 does.
PROTOCOL_MINOR = 2
#: Client minor from which a request is spoken to at Dovecot 2.4's level: ``protocol=``
#: names the service, ``transport=``/``tls_*``/``cert_username``/``local_name`` are
#: read, and a nologin refusal carries ``code=user_disabled`` (Dovecot 2.4, 1.3).
MINOR_24 = 3
#: Client minor from which a CANCEL is answered with ``CANCELLED`` (Dovecot 2.4.4, 1.4).
MINOR_CANCELLED = 4
#: Dovecot forgets a request that saw no progress for this long, without a reply.
REQUEST_TIMEOUT = 150.0
#: After this many held lines were released without new input, lines stop waiting for
#: checks: each release may run the next check inline, one stack level deeper.
MAX_UNBLOCKS_PER_READ = 32

#: What a mechanism asks the check pipeline: verify a plaintext password, or give the
#: user's credentials of a scheme (Dovecot's verify_plain / lookup_credentials), or
#: validate an OAuth 2.0 bearer token.
Credential = VerifyPlain | NeedCredentials | VerifyToken


@record
class CredentialsFound:
    """The answer to a :class:`NeedCredentials` check: the credentials, and the verdict
    to send when the client's answer matches them."""

    credentials: Credentials
    verdict: Verdict


#: RequestInfo's address not parsed yet.
_UNPARSED = object()


@record
class RequestInfo:
    """What the client told us about one AUTH request, parsed once."""

    id: int
    mechanism: str
    service: str
    rip: str | None = None
    lip: str | None = None
    rport: int | None = None
    lport: int | None = None
    secured: bool = False
    secured_tls: bool = False
    valid_client_cert: bool = False
    no_penalty: bool = False
    session: str | None = None
    client_minor: int = 0
    #: ``rip`` parsed (the session parses it once, with the text); built lazily by
    #: :attr:`address` for an info made without it.
    _address: object = field(default=_UNPARSED, compare=False, repr=False)

    @property
    def address(self) -> IPAddress | None:
        """The client's address as an :mod:`ipaddress` object (``None``: no rip)."""
        address = self._address
        if address is _UNPARSED:
            parsed = addresses.parse(self.rip) if self.rip else None
            address = None if parsed is None else parsed[1]
            object.__setattr__(self, "_address", address)
        return address  # type: ignore[return-value]


@record
class RequestInfo24(RequestInfo):
    """A request from a client at Dovecot 2.4's level (minor >= 3): what it adds.

    A subclass, so that a 2.3-level request (Exim, Postfix) builds exactly what it
    built before. The values are informational (logs, the event); ``transport`` also
    marks the session secured (see ``_request_info_24``).
    """

    transport: str | None = None
    tls_cipher: str | None = None
    tls_protocol: str | None = None
    cert_username: str | None = None
    local_name: str | None = None


@record
class Send:
    data: bytes


@record
class SendDelayed:
    """A FAIL reply to hold back for the failure delay (the id is already free)."""

    data: bytes
    info: RequestInfo


@record
class Check:
    """Ask the shell to check a credential; answer with :meth:`Session.complete`."""

    ticket: int
    info: RequestInfo
    credential: Credential


@record
class Finished:
    """A request ended; logs and metrics subscribe to this."""

    info: RequestInfo
    verdict: Verdict


@record
class Close:
    """Close the connection; ``reason`` is for the log only."""

    reason: str
    #: False when we close on purpose (temporary failure), not because of the client.
    violation: bool = True


Action = Send | SendDelayed | Check | Finished | Close


@dataclass(slots=True)
class _Request:
    info: RequestInfo
    mechanism: Mechanism
    ticket: int
    last_activity: float
    state: ReqState = Req.STEPPING
    #: The login name, once the mechanism has seen it (as typed, and normalised).
    typed: str | None = None
    user: str | None = None
    #: After the mechanism's final data went out, the OK that the next CONT releases
    #: (or, after an OAuth error status, the FAIL it releases).
    pending_ok: Verdict | None = None

    def to(self, event: ReqEventKind) -> None:
        try:
            self.state = REQUEST[self.state][event]
        except KeyError:
            raise IllegalTransition(f"{event.value} in state {self.state.value}") from None


class ProtocolViolation(ProtocolError):
    """The client broke a rule that makes Dovecot drop the connection."""


@dataclass
class SessionSettings:
    """What every connection of a server process shares: built once, not per connection
    (a reload builds a new one for the connections that follow)."""

    mechanisms: Sequence[type[Mechanism]]
    spid: int
    request_timeout: float = REQUEST_TIMEOUT
    #: More requests than this in flight at once (waiting for CONT, being checked) is
    #: abuse, not a mail server: the connection is closed.
    max_requests: int = 10000
    usernames: UsernamePolicy = field(default_factory=UsernamePolicy)
    #: On an internal failure, close the connection (so Exim says 435 and Postfix 454)
    #: instead of Dovecot's ``FAIL code=temp_fail`` that both MTAs turn into a 535.
    tempfail_disconnects: bool = False
    #: Answer a client whose minor asks for it at Dovecot 2.4's level (off: 2.3 always).
    protocol_24: bool = True
    #: The handshake up to ``SPID``, rendered on first use.
    _handshake_head: bytes | None = field(default=None, init=False, repr=False)

    def handshake_head(self) -> bytes:
        head = self._handshake_head
        if head is None:
            head = self._handshake_head = replies.handshake_head(
                PROTOCOL_MAJOR,
                PROTOCOL_MINOR,
                ((mech.name, mech.flags) for mech in self.mechanisms),
                self.spid,
            )
        return head


@dataclass
class Session:
    settings: SessionSettings
    #: The connection's id and cookie (the handshake's ``CUID`` and ``COOKIE``).
    cuid: int = 0
    cookie: str = ""
    #: Where the connection is; moved only through :meth:`_to` (``states.CONNECTION``).
    state: ConnState = Conn.AWAIT_VERSION
    #: ``state is Conn.CLOSED``, kept as a plain attribute for the shell's checks.
    closed: bool = False
    client_major: int | None = None
    client_minor: int = 0
    #: The minor the 2.4 behaviours go by: the client's, or at most 2.3's when the
    #: settings keep every client at Dovecot 2.3's level.
    level_minor: int = 0
    client_pid: int | None = None
    _buffer: wire.LineBuffer = field(default_factory=wire.LineBuffer)
    _requests: dict[int, _Request] = field(default_factory=dict)
    _next_ticket: int = 1
    #: Complete lines received so far (the server's idle timer restarts on progress,
    #: not on every byte, so a client trickling a partial line cannot hold on).
    lines_received: int = 0
    #: Lines read but not yet handled: a line about a request that is being checked
    #: waits (with every line after it) until the check completes, see :meth:`_drain`.
    _held: collections.deque[str] = field(default_factory=collections.deque)
    _blocked_on: int | None = None
    #: Unblocks since the last receive(): bounds the shell's inline-check recursion.
    _unblocks: int = 0
    #: A violation seen while checks were running (state DRAINING): the close waits.
    _closing: str | None = None

    def _to(self, event: ConnEventKind) -> None:
        try:
            self.state = state = CONNECTION[self.state][event]
        except KeyError:
            raise IllegalTransition(f"{event.value} in state {self.state.value}") from None
        self.closed = state is Conn.CLOSED

    # ------------------------------------------------------------------ handshake

    def handshake(self) -> bytes:
        """Everything the server says on accept, for one single write."""
        return self.settings.handshake_head() + replies.handshake_tail(self.cuid, self.cookie)

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes | bytearray, now: float) -> list[Action]:
        """Feed bytes from the client; returns what to do, in order."""
        if self.state is Conn.CLOSED or self.state is Conn.DRAINING:
            return []
        try:
            lines = self._buffer.feed(data)
        except wire.LineTooLong:
            # Lines before the overlong one are still handled, as Dovecot reads them first.
            actions = self._drain(now)
            return actions + self._violation(
                f"client sent more than {wire.MAX_LINE_LENGTH} bytes in a line"
            )
        self.lines_received += len(lines)
        self._held.extend(lines)
        self._unblocks = 0
        return self._drain(now)

    def _violation(self, reason: str) -> list[Action]:
        """Close for a client error, once the checks already running have answered.

        Dovecot finishes each check before it reads the next line, so whatever a check
        answers goes out before the close that a later line causes.
        """
        if self.closed:
            return []
        if any(request.state is Req.CHECKING for request in self._requests.values()):
            self._to(ConnEvent.VIOLATION_WHILE_CHECKING)
            self._closing = reason
            self._held.clear()
            return []
        return self._close(reason)

    def _drain(self, now: float) -> list[Action]:
        """Handle held lines in order, stopping at one that needs a check to finish.

        Dovecot checks a passwd-file password before it reads the next line, so a CONT,
        CANCEL or AUTH for a request that is being checked sees the request finished.
        authbridge checks asynchronously; holding such a line (and all after it) until
        :meth:`complete` gives the same result. Lines about other requests are not held,
        so independent pipelined requests are still checked concurrently.
        """
        actions: list[Action] = []
        held = self._held
        while held and not self.closed and self._blocked_on is None and self._closing is None:
            line = held[0]
            waits_for = self._checking_id(line)
            if waits_for is not None and self._unblocks < MAX_UNBLOCKS_PER_READ:
                self._blocked_on = waits_for
                break
            held.popleft()
            try:
                actions.extend(self._handle_line(line, now))
            except ProtocolViolation as exc:
                actions.extend(self._violation(str(exc)))
        return actions

    def _checking_id(self, line: str) -> int | None:
        """The id of the request being checked that ``line`` is about, if any."""
        if self.state is not Conn.READY or not self._requests:
            return None
        for command in ("AUTH\t", "CONT\t", "CANCEL\t"):
            if line.startswith(command):
                rest = line[len(command) :]
                break
        else:
            return None
        word = rest.split("\t", 1)[0]
        request_id = wire.parse_uint(wire.split_fields(word)[0] if line[0] == "A" else word)
        request = self._requests.get(request_id) if request_id else None
        checking = request is not None and request.state is Req.CHECKING
        return request_id if checking else None

    def _close(self, reason: str, violation: bool = True) -> list[Action]:
        self._to(ConnEvent.CLOSE)
        self._requests.clear()
        self._held.clear()
        return [Close(reason, violation)]

    def _handle_line(self, line: str, now: float) -> list[Action]:
        state = self.state
        if state is Conn.AWAIT_VERSION:
            self._handle_version(line)
            return []
        if state is Conn.AWAIT_CPID:
            self._handle_cpid(line)
            return []
        if line.startswith("AUTH\t"):
            return self._handle_auth(line[5:], now)
        if line.startswith("CONT\t"):
            return self._handle_cont(line[5:], now)
        if line.startswith("CANCEL\t"):
            return self._handle_cancel(line[7:])
        # Only the command word: the rest of a malformed line may carry a credential.
        raise ProtocolViolation(f"unknown command: {_command_word(line)}")

    def _handle_version(self, line: str) -> None:
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] != "VERSION":
            raise ProtocolViolation(f"invalid VERSION line (starts with {_command_word(line)})")
        major, minor = wire.parse_uint(parts[1]), wire.parse_uint(parts[2])
        if major is None or minor is None:
            raise ProtocolViolation(f"invalid VERSION line (starts with {_command_word(line)})")
        if major != PROTOCOL_MAJOR:
            raise ProtocolViolation(f"client speaks major version {major}, not {PROTOCOL_MAJOR}")
        self.client_major, self.client_minor = major, minor
        self.level_minor = minor if self.settings.protocol_24 else min(minor, MINOR_24 - 1)
        self._to(ConnEvent.VERSION)

    def _handle_cpid(self, line: str) -> None:
        if not line.startswith("CPID\t"):
            raise ProtocolViolation(f"unknown handshake command: {_command_word(line)}")
        pid = wire.parse_uint(line[5:])
        if not pid:
            raise ProtocolViolation("client said its PID is 0 or sent a malformed CPID")
        self.client_pid = pid
        self._to(ConnEvent.CPID)

    # ------------------------------------------------------------------ AUTH

    def _handle_auth(self, rest: str, now: float) -> list[Action]:
        args = wire.split_fields(rest)
        request_id = wire.parse_uint(args[0])
        if not request_id or len(args) < 2:
            raise ProtocolViolation("broken AUTH request")
        mech_cls = self._find_mechanism(args[1])
        if mech_cls is None:
            raise ProtocolViolation(f"unsupported mechanism {_sanitize(args[1], 32)}")
        params: dict[str, str] = {}
        resp: str | None = None
        for index, arg in enumerate(args[2:], start=2):
            name, _, value = arg.partition("=")
            if name == "resp":
                resp = value
                if index != len(args) - 1:
                    raise ProtocolViolation("AUTH parameters after 'resp'")
                continue
            # A bare parameter has the empty value (so a bare "service" is a service).
            params[name] = value
        if request_id in self._requests:
            raise ProtocolViolation(f"duplicate request id {request_id}")
        if len(self._requests) >= self.settings.max_requests:
            raise ProtocolViolation(
                f"more than {self.settings.max_requests} requests in flight on one connection"
            )

        minor = self.client_minor
        info: RequestInfo
        if self.level_minor < MINOR_24:
            service = params.get("service")
            if service is None:
                raise ProtocolViolation("AUTH without service=")
            info = _request_info(request_id, mech_cls.name, service, params, minor)
        else:
            info = _request_info_24(request_id, mech_cls.name, params, minor)
        ticket = self._next_ticket
        self._next_ticket += 1
        request = _Request(info, mech_cls(), ticket, now)
        self._requests[request_id] = request

        initial: bytes | None
        if resp is None or (resp == "" and self.client_minor < 2):
            # Exim always sends "resp=", empty when the SMTP client gave no initial
            # response; Dovecot reads that as "absent" for clients older than 1.2.
            initial = None
        elif resp in ("", "="):
            initial = b""
        else:
            try:
                initial = wire.b64decode_strict(resp)
            except wire.InvalidBase64:
                return self._fail_now(
                    request, "Invalid base64 data in initial response", replies.INVALID_BASE64
                )
        return self._apply_step(request, request.mechanism.initial(initial), now)

    def _find_mechanism(self, name: str) -> type[Mechanism] | None:
        upper = name.upper()
        for mech in self.settings.mechanisms:
            if mech.name == upper:
                return mech
        return None

    # ------------------------------------------------------------------ CONT / CANCEL

    def _handle_cont(self, rest: str, now: float) -> list[Action]:
        id_text, sep, data = rest.partition("\t")
        request_id = wire.parse_uint(id_text)
        if not sep or request_id is None:
            raise ProtocolViolation("broken CONT request")
        request = self._requests.get(request_id)
        if request is None:
            return [Send(replies.fail_reason_line(request_id, replies.TIMED_OUT))]
        state = request.state
        if ReqEvent.CONT not in REQUEST[state]:
            return self._fail_now(request, "Unexpected continuation")
        request.to(ReqEvent.CONT)
        request.last_activity = now
        try:
            decoded = wire.b64decode_strict(data)
        except wire.InvalidBase64:
            return self._fail_now(
                request, "Invalid base64 data in continued response", replies.INVALID_BASE64
            )
        if state is Req.AWAITING_FINAL_CONT and request.pending_ok is not None:
            # The client acknowledged our final data. What it sent means nothing (not
            # even a NUL fails it), but it must be base64, as in Dovecot.
            return self._finish(request, request.pending_ok)
        return self._apply_step(request, request.mechanism.step(decoded), now)

    def _handle_cancel(self, rest: str) -> list[Action]:
        request_id = wire.parse_uint(rest)
        if request_id is None:
            raise ProtocolViolation("broken CANCEL request")
        self._requests.pop(request_id, None)
        if self.level_minor >= MINOR_CANCELLED:
            # Dovecot 2.4.4 confirms every CANCEL, of a known id or not.
            return [Send(replies.cancelled_line(request_id))]
        return []

    # ------------------------------------------------------------------ steps & verdicts

    def _apply_step(self, request: _Request, step: Step, now: float) -> list[Action]:
        if isinstance(step, Challenge):
            # The mechanism may have learned the login name mid-exchange (LOGIN): Dovecot
            # validates it right there, before prompting for the password.
            if step.username is not None and not self._learn_username(request, step.username):
                return self._invalid_username(request)
            request.to(ReqEvent.CHALLENGE)
            return [Send(replies.cont_line(request.info.id, step.data))]
        if isinstance(step, Failure):
            reason = Reason.PASSWORD_MISMATCH if step.password_mismatch else Reason.MALFORMED
            if request.pending_ok is not None:
                return self._finish(request, failed_after_lookup(request.pending_ok, reason))
            if step.username is not None and not self._learn_username(request, step.username):
                return self._invalid_username(request)
            verdict = Verdict(Outcome.FAIL, request.user, reason, original_user=request.typed)
            return self._finish(request, verdict)
        if isinstance(step, Accepted):
            assert request.pending_ok is not None
            return self._finish(request, request.pending_ok)
        if isinstance(step, Success):
            request.to(ReqEvent.FINAL_DATA)
            return [Send(replies.cont_line(request.info.id, step.data))]
        if (
            isinstance(step, NeedCredentials)
            and step.early_username
            and not self._learn_username(request, step.username)
        ):
            return self._invalid_username(request)
        request.to(ReqEvent.CHECK)
        request.last_activity = now
        return [Check(request.ticket, request.info, step)]

    def _learn_username(self, request: _Request, typed: str) -> bool:
        request.typed = typed
        try:
            request.user = self.settings.usernames.normalise(typed)
        except InvalidUsername:
            return False
        return True

    def _invalid_username(self, request: _Request) -> list[Action]:
        verdict = Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user=request.typed)
        return self._finish(request, verdict)

    def complete(
        self, ticket: int, request_id: int, result: Verdict | CredentialsFound, now: float = 0.0
    ) -> list[Action]:
        """Deliver the answer to a :class:`Check`; stale tickets are dropped silently."""
        request = self._requests.get(request_id)
        if self.closed or request is None or request.ticket != ticket:
            return self._unblock(now)
        request.to(ReqEvent.CHECKED)
        if isinstance(result, CredentialsFound):
            request.pending_ok = result.verdict
            request.last_activity = now
            step = request.mechanism.resume(result.credentials)
            actions = self._apply_step(request, step, now)
        elif result.outcome is Outcome.FAIL and request.mechanism.failure_status is not None:
            actions = self._failure_status(request, request.mechanism.failure_status, result)
        else:
            actions = self._finish(request, result)
        return actions + self._unblock(now)

    def _failure_status(self, request: _Request, status: bytes, verdict: Verdict) -> list[Action]:
        """RFC 7628: the error status goes out as server data; the client's answer (any
        base64, the dummy ``%x01`` by the RFC) releases the FAIL."""
        request.pending_ok = verdict
        request.to(ReqEvent.FINAL_DATA)
        return [Send(replies.cont_line(request.info.id, status))]

    def _unblock(self, now: float) -> list[Action]:
        """Go on with held lines once the request they wait for is no longer checked."""
        if self.state is Conn.DRAINING:
            if any(request.state is Req.CHECKING for request in self._requests.values()):
                return []
            return self._close(self._closing or "")
        blocked = self._blocked_on
        if blocked is None or self.closed:
            return []
        request = self._requests.get(blocked)
        if request is not None and request.state is Req.CHECKING:
            return []
        self._blocked_on = None
        self._unblocks += 1
        return self._drain(now)

    def _finish(self, request: _Request, verdict: Verdict) -> list[Action]:
        del self._requests[request.info.id]
        info = request.info
        done = Finished(info, verdict)
        if verdict.outcome is Outcome.OK:
            return [Send(replies.ok_line(info.id, verdict)), done]
        if verdict.outcome is Outcome.TEMPFAIL and self.settings.tempfail_disconnects:
            return [done, *self._close("temporary failure: closing so the MTA defers", False)]
        if type(info) is not RequestInfo24:
            line = replies.fail_line(info.id, verdict)
        else:
            line = replies.fail_line(info.id, verdict, _FAIL_CODES_24.get(verdict.reason))
        if verdict.nodelay:
            return [Send(line), done]
        return [SendDelayed(line, info), done]

    def _fail_now(self, request: _Request, reason: str, code: str | None = None) -> list[Action]:
        """Dovecot's immediate FAILs: no delay, no penalty, request forgotten."""
        del self._requests[request.info.id]
        verdict = Verdict(Outcome.FAIL, None, Reason.MALFORMED)
        line = replies.fail_reason_line(request.info.id, reason, code)
        return [Send(line), Finished(request.info, verdict)]

    # ------------------------------------------------------------------ housekeeping

    def expire(self, now: float) -> list[RequestInfo]:
        """Forget requests idle past the timeout, silently (as Dovecot does)."""
        limit = now - self.settings.request_timeout
        stale = [r for r in self._requests.values() if r.last_activity < limit]
        for request in stale:
            del self._requests[request.info.id]
        return [r.info for r in stale]

    def abandon_all(self) -> list[RequestInfo]:
        """The connection is gone: every request still in flight is dropped."""
        infos = [r.info for r in self._requests.values()]
        self._requests.clear()
        self._held.clear()
        self._to(ConnEvent.CLOSE)
        return infos


def failed_after_lookup(found: Verdict, reason: Reason) -> Verdict:
    """The FAIL of a mechanism that failed after its credentials lookup succeeded.

    ``found`` is the verdict the lookup alone would give. Mechanisms that look up
    credentials and compare them themselves (CRAM-MD5's digest, SCRAM's proof) fail
    after Dovecot has imported the entry: its FAIL names the user as the store does
    (``user=`` renames apply) and carries the entry's fields, except ``nologin``.
    PLAIN and LOGIN hand the password to the store instead, whose failed lookup rolls
    the fields back: their FAIL carries none.
    """
    if found.reason is Reason.NOLOGIN:
        # authbridge refused this user for nologin (default mode, ``refuse_nologin``):
        # a wrong digest or proof tells a guesser no more than a wrong password does.
        return Verdict(Outcome.FAIL, found.user, reason, original_user=found.original_user)
    fields = tuple((key, value) for key, value in found.fields if key != "nologin")
    # The separating TAB stays for hidden fields, but not for a removed nologin alone.
    had_fields = bool(fields) or (found.had_store_fields and len(fields) == len(found.fields))
    return Verdict(
        Outcome.FAIL,
        found.user,
        reason,
        fields=fields,
        had_store_fields=had_fields,
        original_user=found.original_user,
        # The entry's nodelay field makes the FAIL immediate and flagged, and is also
        # still among the fields: Dovecot then writes it twice.
        nodelay=any(key == "nodelay" for key, _ in found.fields),
    )


def _sanitize(text: str, limit: int = 80) -> str:
    """A loggable excerpt of client text: control bytes replaced, length capped."""
    out = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _command_word(line: str) -> str:
    """Just the first word of a client line, for logs.

    Dovecot quotes the whole offending line; that can be an AUTH whose ``resp=`` holds a
    base64 password, so authbridge never logs more than the command word.
    """
    return _sanitize(line.split("\t", 1)[0].split(" ", 1)[0], 20) or "(empty line)"


def _parse_ip(value: str | None) -> str | None:
    return addresses.normalise(value) if value else None


_NO_ADDRESS: tuple[None, None] = (None, None)


def _parse_port(value: str | None) -> int | None:
    port = wire.parse_uint(value or "")
    return port if port is not None and port <= 65535 else None


def _request_info(
    request_id: int,
    mechanism: str,
    service: str,
    params: dict[str, str],
    client_minor: int,
) -> RequestInfo:
    secured = params.get("secured")
    rip_text = params.get("rip")
    # The one parse of the client address: its text and its object travel together.
    rip, address = (addresses.parse(rip_text) if rip_text else None) or _NO_ADDRESS
    return RequestInfo(
        id=request_id,
        mechanism=mechanism,
        service=service,
        rip=rip,
        lip=_parse_ip(params.get("lip")),
        rport=_parse_port(params.get("rport")),
        lport=_parse_port(params.get("lport")),
        secured=secured is not None,
        secured_tls=secured == "tls",
        valid_client_cert="valid-client-cert" in params,
        no_penalty="no-penalty" in params,
        session=params.get("session"),
        client_minor=client_minor,
        _address=address,
    )


#: Transport values (Dovecot 2.4's names, any case) that mark the session secured.
_SECURED_TRANSPORTS = {"tls": True, "trusted": False, "secured": False}

#: The FAIL codes a 2.4-level client gets for authbridge's verdicts: a nologin refusal
#: (right password, disabled account) is Dovecot's user_disabled. authz_fail is for a
#: master user refused as the target user; with no master users, Dovecot 2.4 fails a
#: different authzid as an unknown user, without a code, and so does authbridge. No
#: store knows password expiry: no pass_expired.
_FAIL_CODES_24 = {Reason.NOLOGIN: replies.USER_DISABLED}


def _request_info_24(
    request_id: int, mechanism: str, params: dict[str, str], client_minor: int
) -> RequestInfo24:
    """A 2.4-level request: ``protocol=`` is the service's name too (it wins when both
    are given), and the TLS facts Dovecot 2.4 documents are kept."""
    service = params.get("protocol")
    if service is None:
        service = params.get("service")
        if service is None:
            raise ProtocolViolation("AUTH without protocol= or service=")
    # The 2.3 record, then what 2.4 adds (this path is cold: a copy is fine).
    base = _request_info(request_id, mechanism, service, params, client_minor)
    values = {f.name: getattr(base, f.name) for f in fields(RequestInfo)}
    transport = params.get("transport")
    tls = _SECURED_TRANSPORTS.get(transport.lower()) if transport else None
    values["secured"] = base.secured or tls is not None
    values["secured_tls"] = base.secured_tls or tls is True
    return RequestInfo24(
        **values,
        transport=transport,
        tls_cipher=params.get("tls_cipher"),
        tls_protocol=params.get("tls_protocol"),
        cert_username=params.get("cert_username"),
        local_name=params.get("local_name"),
    )


def flatten(actions: Iterable[Action]) -> bytes:
    """Concatenate the immediate :class:`Send` data of ``actions`` (a test convenience)."""
    return b"".join(a.data for a in actions if isinstance(a, Send))
