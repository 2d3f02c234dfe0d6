"""The auth-policy client: asks a weakforced/Nauthilus server before and after a login,
and reports the outcome, as Dovecot 2.3 does with ``auth_policy_server_url``.

One :class:`AuthPolicy` per serving process: one httpx connection pool (keep-alive),
shared by every request. The allow checks are awaited by the pipeline (a delay holds
only that request); reports go through a bounded queue that a background task empties,
after the reply went out. A server that is down, slow or answers garbage is an error:
``reject_on_fail`` decides (default: let the login through, as Dovecot does). The
password and its hash are never logged; only the verdict, the request id and ``msg``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import trio

from authbridge import __version__
from authbridge.checks import authpolicy_wire as wire
from authbridge.config import AuthPolicySettings
from authbridge.core.session import RequestInfo
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.authpolicy")
#: httpx logs every request at INFO: our own lines say what matters, once per outage.
logging.getLogger("httpx").setLevel(logging.WARNING)

#: Dovecot's policy HTTP client: idle connections closed after 10 s, at most 100.
KEEPALIVE_EXPIRY = 10.0
MAX_CONNECTIONS = 100
#: Tasks sending reports at once (each waits for its answer).
REPORT_SENDERS = 4
#: At shutdown, the reports still queued are sent for at most this long (systemd's
#: stop waits; a policy server that counts failures should hear of every login).
DRAIN_SECONDS = 2.0
#: Bound on requests whose report is still to be sent (lost connections never finish).
MAX_OPEN_REQUESTS = 10_000


class Observer(Protocol):
    """Where the client counts what happened (the daemon's Metrics)."""

    def policy_verdict(self, verdict: str) -> None: ...
    def policy_request(self, command: str, seconds: float) -> None: ...
    def policy_error(self, command: str, kind: str) -> None: ...


class _NoObserver:
    def policy_verdict(self, verdict: str) -> None:
        pass

    def policy_request(self, command: str, seconds: float) -> None:
        pass

    def policy_error(self, command: str, kind: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Decision:
    """What an allow check decided for the request."""

    #: Dovecot's result: < 0 refuse, 0 go on, > 0 hold this many seconds.
    status: int
    #: The server's ``msg`` (the ``reason=`` of the FAIL), if any.
    msg: str | None = None
    #: The refusal came from the server's answer (``policy_reject`` in the report);
    #: ``reject_on_fail`` after an HTTP error does not set it, as in Dovecot.
    from_answer: bool = False

    @property
    def refused(self) -> bool:
        return self.status < 0


ALLOW = Decision(0)


class _PolicyError(Exception):
    def __init__(self, kind: str, answered: bool = False) -> None:
        super().__init__(kind)
        self.kind, self.answered = kind, answered


@dataclass(slots=True)
class PolicyRequest:
    """One login as the policy server sees it: its attributes (pwhash included, the
    password itself is not kept) and what the checks decided so far."""

    attributes: dict[str, Any]
    tls: bool
    #: The normalised login name (the FAIL's ``user=``).
    user: str
    policy_reject: bool = False


class AuthPolicy:
    """The client for one ``[auth_policy]`` configuration."""

    def __init__(
        self,
        settings: AuthPolicySettings,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.observer: Observer = observer or _NoObserver()
        self.clock = clock
        self.template = wire.Template.parse(settings.request_attributes)
        self._nonce = settings.hash_nonce.encode()
        self._timeout = settings.timeout_msecs / 1000
        self._base, headers, auth = _split_url(settings.server_url)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = f"authbridge/{__version__} (auth-policy-client)"
        if settings.api_header:
            name, colon, value = settings.api_header.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
            else:
                headers["X-API-Key"] = settings.api_header
        if auth is not None:
            headers["Authorization"] = auth
        import httpx  # only processes with [auth_policy] pay for the import

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self._timeout),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            trust_env=False,
        )
        self._reports_in, self._reports_out = trio.open_memory_channel[bytes](
            settings.report_queue_size
        )
        self._open: dict[int, tuple[RequestInfo, PolicyRequest]] = {}
        self._failing = False

    # ------------------------------------------------------------------ requests

    def request(self, info: RequestInfo, user: str, password: bytes | None) -> PolicyRequest:
        """The attributes of ``info``'s login by ``user`` (normalised); remembered for
        its report until :meth:`finished`."""
        s = self.settings
        local, _, domain = user.partition("@")
        pwhash = wire.hashed_password(s.hash_mech, self._nonce, user, password, s.hash_truncate)
        values = {
            "user": user,
            "username": local,
            "domain": domain,
            "requested_username": user,
            "service": info.service,
            "rip": info.rip or "",
            "lip": info.lip or "",
            "rport": str(info.rport or 0),
            "lport": str(info.lport or 0),  # Dovecot: "0" when unknown
            "mech": info.mechanism,
            "session": info.session or "",
            "client_id": "",
            "hashed_password": pwhash,
        }
        request = PolicyRequest(self.template.render(values), info.secured_tls, user)
        if s.report_after_auth:
            opened = self._open
            if len(opened) >= MAX_OPEN_REQUESTS:
                del opened[next(iter(opened))]
            opened[id(info)] = (info, request)
        return request

    async def check(self, request: PolicyRequest, info: RequestInfo) -> Decision:
        """Ask ``command=allow``; the decision with ``log_only`` and ``reject_on_fail``
        applied."""
        s = self.settings
        fail = -1 if s.reject_on_fail else 0
        try:
            answer = await self._post("allow", wire.body(request.attributes, request.tls))
        except _PolicyError as exc:
            self.observer.policy_verdict("error")
            decision = Decision(fail, from_answer=exc.answered and fail < 0)
        else:
            self._recovered()
            status = fail if answer.status is None else answer.status
            verdict = "reject" if status < 0 else "delay" if status > 0 else "allow"
            self.observer.policy_verdict(verdict)
            decision = Decision(status, answer.msg, from_answer=True)
            if status != 0:
                log.info(
                    "policy server verdict",
                    request=info.id,
                    rip=info.rip,
                    verdict=verdict,
                    status=status,
                    msg=answer.msg,
                    log_only=s.log_only,
                )
        if decision.refused and decision.from_answer:
            request.policy_reject = True  # also under log_only, as in Dovecot
        if s.log_only and decision.status != 0:
            return ALLOW
        return decision

    def finished(self, info: RequestInfo, success: bool) -> None:
        """Queue the ``report`` of ``info``'s login (sent by :meth:`run`, not here)."""
        entry = self._open.pop(id(info), None)
        if entry is None or entry[0] is not info:
            return
        request = entry[1]
        data = wire.body(request.attributes, request.tls, success, request.policy_reject)
        try:
            self._reports_in.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.observer.policy_error("report", "queue_full")

    # ------------------------------------------------------------------ the reports

    async def run(self) -> None:
        """Send queued reports until :meth:`close`; then close the connection pool.
        Cancelled (the daemon stops), it first sends what is still queued, for at most
        :data:`DRAIN_SECONDS`."""
        leftover = self._reports_out.clone()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(REPORT_SENDERS):
                    nursery.start_soon(self._send_reports, self._reports_out.clone())
                await self._reports_out.aclose()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(DRAIN_SECONDS):
                    await self._drain(leftover)
                with trio.move_on_after(1):
                    await self._client.aclose()

    async def _send_reports(self, reports: trio.MemoryReceiveChannel[bytes]) -> None:
        async with reports:
            async for data in reports:
                try:
                    await self._post("report", data, expect_answer=False)
                except _PolicyError:
                    continue
                self._recovered()

    async def _drain(self, reports: trio.MemoryReceiveChannel[bytes]) -> None:
        """The reports still queued, one after the other (the senders are gone)."""
        async with reports:
            while True:
                try:
                    data = reports.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    return
                try:
                    await self._post("report", data, expect_answer=False)
                except _PolicyError:
                    continue

    def close(self) -> None:
        """No more reports: :meth:`run` sends what is queued and ends."""
        self._reports_in.close()

    # ------------------------------------------------------------------ HTTP

    async def _post(self, command: str, data: bytes, expect_answer: bool = True) -> wire.Answer:
        started = self.clock()
        httpx = self._httpx
        kind = None
        answered = False
        with trio.move_on_after(self._timeout):
            try:
                response = await self._client.post(
                    wire.command_url(self._base, command), content=data
                )
            except httpx.TimeoutException:
                kind = "timeout"
            except (httpx.HTTPError, OSError):
                kind = "connect"
            else:
                self.observer.policy_request(command, self.clock() - started)
                # Dovecot takes 200-209 only.
                if not 200 <= response.status_code < 210:
                    self._failed(command, "http", f"HTTP {response.status_code}")
                    raise _PolicyError("http")
                if not expect_answer:
                    return wire.Answer(0, None)
                answered = True
                try:
                    return wire.parse_answer(response.content)
                except wire.MalformedAnswer as exc:
                    self._failed(command, "malformed", str(exc))
                    raise _PolicyError("malformed", answered) from None
        kind = kind or "timeout"
        self._failed(command, kind, kind)
        raise _PolicyError(kind)

    def _failed(self, command: str, kind: str, why: str) -> None:
        """Count every failure; log the first of an outage only."""
        self.observer.policy_error(command, kind)
        if not self._failing:
            self._failing = True
            log.warning(
                "policy server failing",
                command=command,
                error=why,
                reject_on_fail=self.settings.reject_on_fail,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("policy server answering again")


def _split_url(url: str) -> tuple[str, dict[str, str], str | None]:
    """The URL without ``user:password@`` (sent as HTTP basic auth, as Dovecot does)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, {}, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    plain = urlunsplit(parts._replace(netloc=netloc))
    if url.endswith("&") and not plain.endswith("&"):
        plain += "&"
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return plain, {}, f"Basic {token}"
