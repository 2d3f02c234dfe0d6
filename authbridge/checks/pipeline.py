"""The check pipeline, written once: from a credential to a verdict.

    normalise → policy gates → penalty → cache → store lookup → scheme verify → fields
    → verdict

:meth:`CheckPipeline.run` is sync-first. The steps are one generator
(:meth:`CheckPipeline._steps`) that yields each operation which might have to wait: a
store lookup, a hash verification, the penalty delay. The sync driver answers what can
be answered at once (an in-memory store's ``get``, a cheap scheme) and goes on; at the
first operation that must really wait it stops and returns a :class:`Pending`, which
holds the generator where it stopped. The trio shell awaits :meth:`Pending.wait` in a
task: the rest runs from there, the first half is never done twice. Most logins (a
passwd-file, a salted SHA or plaintext password, no penalty) never leave the sync path.

A mechanism asks either for a plaintext password to be verified (:class:`VerifyPlain`)
or for the user's credentials of a scheme (:class:`NeedCredentials`); the second is
answered with :class:`CredentialsFound`, which the mechanism checks the client's answer
against (the penalty of that comparison is recorded by :meth:`CheckPipeline.finished`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from authbridge import schemes
from authbridge.checks.app_passwords import AppPasswordCheck
from authbridge.checks.authpolicy import AuthPolicy, Decision, PolicyRequest
from authbridge.checks.cache import AuthCache
from authbridge.checks.chain import ChainRun, Link, lookup_name
from authbridge.checks.chain import Result as LinkResult
from authbridge.checks.expand import ExpansionError
from authbridge.checks.fields import Applied, apply_fields, plain_entry
from authbridge.checks.fleet import Fleet
from authbridge.checks.hashing import Hasher, HasherUnavailable
from authbridge.checks.penalty import PenaltyTracker
from authbridge.checks.policy import PolicyGate
from authbridge.config import PassdbRules
from authbridge.core.mechanisms import REGISTRY
from authbridge.core.mechanisms.base import (
    Credentials,
    NeedCredentials,
    ScramKeys,
    VerifyPlain,
    VerifyToken,
)
from authbridge.core.session import Credential, CredentialsFound, RequestInfo
from authbridge.core.usernames import InvalidUsername, UsernamePolicy
from authbridge.core.verdict import Outcome, Reason, Verdict, refuse_nologin
from authbridge.observability import userlog
from authbridge.observability.logs import get_logger, get_stdlib_logger
from authbridge.passdb.base import Passdb, PassdbEntry, StoreUnavailable
from authbridge.schemes import StoredPassword, wellformed

if TYPE_CHECKING:  # the validator (and httpx, PyJWT) are imported only with [oauth]
    from authbridge.checks.oauth import TokenValidator
    from authbridge.checks.oauth_result import TokenResult

log = get_logger("authbridge.checks")
#: The store-side failures, under the logger name they always had (operators filter
#: on it); delivered through the standard library like the stores' own warnings.
_std_log = get_stdlib_logger("authbridge.authenticator")

#: A store lookup plus hash check that takes longer than this is an internal failure
#: (Postfix gives up after 10 s anyway).
CHECK_TIMEOUT = 8.0

#: Verdicts the cache may keep: plain successes and password mismatches; anything that
#: depends on the client address (allow_nets) or on a broken store is never cached.
_CACHEABLE = frozenset({Reason.NONE, Reason.PASSWORD_MISMATCH, Reason.USER_UNKNOWN})

#: Bytes Dovecot 2.3 refuses in a PLAIN/LOGIN password before any lookup ("password
#: having illegal chars"): they mean something in its internal protocols. The password
#: is a C string there, so only the bytes before a NUL count.
ILLEGAL_PASSWORD_BYTES = frozenset(b"\x01\t\r\n")

Result = Verdict | CredentialsFound


def password_has_illegal_bytes(password: bytes) -> bool:
    """Whether Dovecot would refuse ``password`` unchecked, even for a nopassword user."""
    head = password.partition(b"\x00")[0]
    return any(byte in ILLEGAL_PASSWORD_BYTES for byte in head)


# ---------------------------------------------------------------------- operations


class _Lookup:
    """Ask ``store`` for ``user``: answered at once by a store with ``get``."""

    __slots__ = ("info", "store", "user")

    def __init__(self, store: Passdb, user: str, info: RequestInfo) -> None:
        self.store, self.user, self.info = store, user, info


class _Verify:
    """Verify ``password`` against ``stored``: at once for a cheap scheme."""

    __slots__ = ("password", "stored", "user")

    def __init__(self, stored: StoredPassword, password: bytes, user: str) -> None:
        self.stored, self.password, self.user = stored, password, user


class _Bind:
    """Let the store check ``password`` itself (an LDAP ``auth_bind``): always waits."""

    __slots__ = ("bind", "entry", "password")

    def __init__(
        self, bind: Callable[[PassdbEntry, bytes], Any], entry: PassdbEntry, password: bytes
    ) -> None:
        self.bind, self.entry, self.password = bind, entry, password


class _PenaltyWait:
    """Hold the request for the address's penalty, then take its turn."""

    __slots__ = ("delay", "key")

    def __init__(self, delay: float, key: str) -> None:
        self.delay, self.key = delay, key


class _Hold:
    """Hold a FAIL for a sprayed account (outside the check's timeout)."""

    __slots__ = ("delay",)

    def __init__(self, delay: float) -> None:
        self.delay = delay


class _AskPolicy:
    """Ask the auth-policy server (``[auth_policy]``); before the lookup, hold the
    request for the delay it answers."""

    __slots__ = ("before", "client", "request")

    def __init__(self, client: AuthPolicy, request: PolicyRequest, before: bool) -> None:
        self.client, self.request, self.before = client, request, before


class _Validate:
    """Validate a bearer token with I/O (a JWKS fetch, an introspection request)."""

    __slots__ = ("token", "validator")

    def __init__(self, validator: TokenValidator, token: bytes) -> None:
        self.validator, self.token = validator, token


_Op = _Lookup | _Verify | _PenaltyWait | _AskPolicy | _Hold | _Bind | _Validate
_Steps = Generator[_Op, Any, Result]


class Pending:
    """The part of a check that must wait; ``await pending.wait()`` for the result."""

    __slots__ = ("_pipeline", "_steps", "info", "op", "typed")

    def __init__(
        self, pipeline: CheckPipeline, steps: _Steps, op: _Op, typed: str, info: RequestInfo
    ) -> None:
        self._pipeline, self._steps, self.op, self.typed, self.info = (
            pipeline,
            steps,
            op,
            typed,
            info,
        )

    async def wait(self) -> Result:
        return await self._pipeline._wait(self)

    def close(self) -> None:
        """Give up: the rest is never run."""
        self._steps.close()


@contextlib.contextmanager
def _closing(steps: _Steps) -> Any:
    try:
        yield
    finally:
        steps.close()


class _Found:
    """A user the stores know, with its extra fields applied: ready for the secret."""

    __slots__ = ("applied", "entry", "store", "typed", "user")

    def __init__(
        self, user: str, typed: str, entry: PassdbEntry, applied: Applied, store: Passdb
    ) -> None:
        self.user, self.typed, self.entry, self.applied = user, typed, entry, applied
        self.store = store

    def verdict(self, outcome: Outcome, reason: Reason) -> Verdict:
        applied = self.applied
        if outcome is not Outcome.OK:
            # Dovecot rolls back the fields of a failed lookup: the FAIL carries none
            # (not even reason= or nodelay, as the conformance corpus shows for 2.3).
            return Verdict(
                outcome,
                applied.user,
                reason,
                original_user=self.typed,
                client_specific=applied.client_specific,
            )
        return Verdict(
            outcome,
            applied.user,
            reason,
            fields=applied.visible,
            had_store_fields=applied.has_fields,
            original_user=self.typed,
            client_specific=applied.client_specific,
        )


class StoreAccess(Protocol):
    """What the pipeline reads of the stores and how to read them.

    :class:`authbridge.checks.authenticator.Authenticator` is the one implementation; it runs
    this pipeline itself, so the pipeline names only this shape, not that class, and the
    import goes one way (authenticator → pipeline).
    """

    @property
    def stores(self) -> Sequence[Passdb]: ...
    @property
    def hasher(self) -> Hasher: ...
    @property
    def usernames(self) -> UsernamePolicy: ...
    @property
    def cache(self) -> AuthCache: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def dummy_password(self) -> StoredPassword | None: ...
    @property
    def broken_hash_is_tempfail(self) -> bool: ...
    @property
    def nologin_refuses(self) -> bool: ...
    @property
    def on_lookup(self) -> Callable[[str, str, float], None] | None: ...
    @property
    def client_dependent(self) -> bool: ...
    @property
    def chain(self) -> Sequence[Link] | None: ...


class RehashOffer(Protocol):
    """Takes a verified password whose stored value may be weak (checks.rehash.Rehasher)."""

    def offer(self, store: object, user: str, stored: StoredPassword, password: bytes) -> None: ...


class CheckPipeline:
    """Every rule between a credential and its verdict, in order.

    ``authenticator`` holds the stores and how to read them (user name policy, cache,
    hasher, dummy hash, mode switches: a :class:`StoreAccess`); ``policy`` and
    ``penalty`` are the gates before any store is asked (``None``: no gate, as for
    :meth:`Authenticator.check <authbridge.checks.authenticator.Authenticator.check>`).
    """

    def __init__(
        self,
        authenticator: StoreAccess,
        policy: PolicyGate | None = None,
        penalty: PenaltyTracker | None = None,
        *,
        on_penalty: Callable[[], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
        timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self.auth = authenticator
        self.policy = policy
        self.penalty = penalty
        self.on_penalty = on_penalty
        self.clock = clock
        self.timeout = timeout
        self._turns: dict[str, trio.Lock] = {}
        #: ``[rehash]`` on: told of each successful PLAIN/LOGIN login (``None``: off).
        self.rehash: RehashOffer | None = None
        #: App passwords on (any store has them): see :meth:`_plain_app` (``None``: off).
        self.app_passwords: AppPasswordCheck | None = None
        #: ``[auth_policy]`` on: the policy server's client (``None``: off).
        self.authpolicy: AuthPolicy | None = None
        #: ``[oauth]`` on: the bearer token validator (``None``: off).
        self.oauth: TokenValidator | None = None

    # ------------------------------------------------------------------ drivers

    def run(self, info: RequestInfo, credential: Credential, now: float) -> Result | Pending:
        """The verdict now, or a :class:`Pending` for the part that must wait."""
        steps = self._steps(info, credential, now)
        return self._advance(steps, None, None, info, credential)

    def _advance(
        self,
        steps: _Steps,
        value: Any,
        error: BaseException | None,
        info: RequestInfo,
        credential: Credential | str,
    ) -> Result | Pending:
        """Run ``steps`` on, answering operations that need not wait, until the end or
        one that must."""
        try:
            op = steps.send(value) if error is None else steps.throw(error)
            while True:
                kind = type(op)
                if kind is _Lookup:
                    get = getattr(op.store, "get", None)  # type: ignore[union-attr]
                    if get is None:
                        break
                    try:
                        value = get(op.user)  # type: ignore[union-attr]
                    except StoreUnavailable as exc:
                        op = steps.throw(exc)
                        continue
                elif kind is _Verify:
                    if schemes.is_expensive(op.stored):  # type: ignore[union-attr]
                        break
                    try:
                        value = schemes.verify_password(op.stored, op.password, op.user)  # type: ignore[union-attr]
                    except schemes.SchemeError as exc:
                        op = steps.throw(exc)
                        continue
                else:
                    break
                op = steps.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        typed = credential if isinstance(credential, str) else _typed(credential)
        return Pending(self, steps, op, typed, info)

    async def _wait(self, pending: Pending) -> Result:
        op = pending.op
        if type(op) is _Hold:
            return await self._fleet_wait(pending)
        if type(op) is _PenaltyWait:
            if self.on_penalty is not None:
                self.on_penalty()
            await trio.sleep(op.delay)
            # A penalised address is checked one request at a time: a burst of
            # thousands that wakes up together then takes its turns between everyone
            # else's work instead of holding the event loop for one long batch.
            async with self._penalty_turn(op.key):
                return await self._rest(pending, None)
        return await self._rest(pending, op)

    async def _fleet_wait(self, pending: Pending) -> Result:
        """The FAIL hold of a sprayed account, after the check: outside the check's
        timeout, which is for the stores."""
        steps, info, typed, op = pending._steps, pending.info, pending.typed, pending.op
        try:
            while True:
                if type(op) is _Hold:
                    await trio.sleep(op.delay)
                    value: Any = None
                elif type(op) is _PenaltyWait:
                    if self.on_penalty is not None:
                        self.on_penalty()
                    await trio.sleep(op.delay)
                    async with self._penalty_turn(op.key):
                        return await self._rest(Pending(self, steps, op, typed, info), None)
                else:
                    return await self._rest(Pending(self, steps, op, typed, info), op)
                result = self._advance(steps, value, None, info, typed)
                if not isinstance(result, Pending):
                    return result
                op = result.op
        except BaseException:
            steps.close()
            raise

    async def _rest(self, pending: Pending, op: _Op | None) -> Result:
        steps, info = pending._steps, pending.info
        held: _Hold | None = None
        with _closing(steps):
            with trio.move_on_after(self.timeout) as scope:
                if op is None:
                    result = self._advance(steps, None, None, info, pending.typed)
                else:
                    result = await self._perform(steps, op, info, pending.typed, scope)
                while isinstance(result, Pending):
                    if type(result.op) is _Hold:
                        held = result.op  # the verdict is there: held outside the timeout
                        break
                    result = await self._perform(steps, result.op, info, pending.typed, scope)
                else:
                    return result
            if held is not None:
                await trio.sleep(held.delay)
                return self._advance(steps, None, None, info, pending.typed)  # type: ignore[return-value]
        log.error("credential check timed out", request=info.id, timeout=self.timeout)
        return Verdict(Outcome.TEMPFAIL, pending.typed, Reason.STORE_ERROR)

    async def _perform(
        self, steps: _Steps, op: _Op, info: RequestInfo, typed: str, scope: trio.CancelScope
    ) -> Result | Pending:
        """Carry out one operation that waits, then go on as far as possible."""
        value: Any = None
        try:
            if type(op) is _Lookup:
                value = await op.store.lookup(op.user, op.info)
            elif type(op) is _Verify:
                value = await self.auth.hasher.verify(op.stored, op.password, op.user)
            elif type(op) is _AskPolicy:
                value = await self._ask_policy(op, info, scope)
            elif type(op) is _Bind:
                value = await op.bind(op.entry, op.password)
            elif type(op) is _Validate:
                value = await op.validator.validate(op.token)
        except (StoreUnavailable, HasherUnavailable, schemes.SchemeError) as exc:
            return self._advance(steps, None, exc, info, typed)
        return self._advance(steps, value, None, info, typed)

    @staticmethod
    async def _ask_policy(op: _AskPolicy, info: RequestInfo, scope: trio.CancelScope) -> Decision:
        """The policy server's decision; its time (and the delay it asks for before the
        lookup) does not count against the check timeout, as the penalty does not."""
        started = trio.current_time()
        decision = await op.client.check(op.request, info)
        if op.before and decision.status > 0 and not info.no_penalty:
            await trio.sleep(decision.status)
        scope.deadline += trio.current_time() - started
        return decision

    @contextlib.asynccontextmanager
    async def _penalty_turn(self, key: str) -> AsyncIterator[None]:
        lock = self._turns.get(key)
        if lock is None:
            lock = self._turns[key] = trio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._turns.pop(key, None)

    # ------------------------------------------------------------------ the steps

    def _steps(self, info: RequestInfo, credential: Credential, now: float) -> _Steps:
        # Plaintext-like: a password or a bearer token crosses the wire as is.
        plain = not isinstance(credential, NeedCredentials)
        typed = _typed(credential)
        penalty = self.penalty
        policy = self.policy
        if policy is not None:
            services = policy.services
            gates = policy.default if services is None else policy.gates(info)
            refusal = gates.refusal(info, plain)
            if refusal is not None:
                log.info("request refused by policy", request=info.id, why=refusal.why)
                return Verdict(
                    Outcome.FAIL,
                    typed,
                    refusal.reason,
                    fields=refusal.fields,
                    had_store_fields=bool(refusal.fields),
                )
            if not gates.penalty:  # [policy.service.NAME] penalty = false
                penalty = None
        if info.no_penalty:
            penalty = None
        bucket = None
        fleet = None
        hold = 0.0
        if penalty is not None:
            bucket = penalty.key(info.rip, info.address)
            fleet = penalty.fleet if bucket is not None else None
            # Local spraying with no account failing yet (the usual case): the
            # address's own penalty is all there is, as without the fleet parts.
            if fleet is None or (fleet.shared is None and not fleet.counts):
                delay = penalty.delay_of(bucket, now)
                if delay > 0:
                    yield _PenaltyWait(delay, bucket or "")
            else:
                assert bucket is not None
                hold = yield from self._fleet_before(fleet, bucket, typed, now)
        asked = None
        if self.authpolicy is not None:  # the only cost of the feature when it is off
            asked = self._policy_request(self.authpolicy, info, credential, typed)
            if asked is not None and self.authpolicy.settings.check_before_auth:
                decision = yield _AskPolicy(self.authpolicy, asked, True)
                if decision.refused:
                    return _policy_refusal(info, decision, asked, typed)
        if type(credential) is VerifyPlain:
            result: Result = yield from self._plain_cached(info, credential)
        elif type(credential) is NeedCredentials:
            result = yield from self._credentials(info, credential)
        else:
            assert isinstance(credential, VerifyToken)
            result = yield from self._token(info, credential)
        if self.auth.nologin_refuses:
            # authbridge's own rule on top of Dovecot's verdict (off in compat mode),
            # applied after the cache, which keeps Dovecot's verdict as it is.
            if type(result) is Verdict:
                result = refuse_nologin(result)
            else:
                assert isinstance(result, CredentialsFound)
                result = CredentialsFound(result.credentials, refuse_nologin(result.verdict))
        if penalty is not None and type(result) is Verdict:
            if fleet is not None:
                assert bucket is not None
                if self._fleet_after(fleet, bucket, result, credential, hold):
                    yield _Hold(hold)
            elif result.outcome is Outcome.OK:
                penalty.succeeded_in(bucket)
            elif result.outcome is Outcome.FAIL and result.reason is not Reason.NOLOGIN:
                # A nologin refusal came with the right password: not a guess.
                secret = _secret(credential)
                penalty.failed_in(bucket, result.user or "", secret, self.clock())
        if (
            asked is not None
            and type(result) is Verdict
            and result.outcome is Outcome.OK
            and self.authpolicy is not None
            and self.authpolicy.settings.check_after_auth
        ):
            # Dovecot asks again after a success (a refusal now is a FAIL; a delay is
            # not applied). Mechanisms that compare credentials themselves (CRAM-MD5,
            # SCRAM) decide after the pipeline: only the check before covers them.
            decision = yield _AskPolicy(self.authpolicy, asked, False)
            if decision.refused:
                return _policy_refusal(info, decision, asked, typed, result.user)
        return result

    def _fleet_before(
        self, fleet: Fleet, bucket: str, typed: str, now: float
    ) -> Generator[_Op, Any, float]:
        """Spraying and shared state before the check: the fleet's counts (when Redis is
        in use and its mirror current), the penalty wait; returns the FAIL hold, or
        -1.0 for an address that was clean (its success then has nothing to clear)."""
        try:
            user = self.auth.usernames.normalise(typed)
        except InvalidUsername:
            user = typed
        remote = None
        shared = fleet.shared
        if shared is not None:  # the fleet's counts, as the subscription keeps them
            remote = shared.lookup(bucket, fleet.account(user))
            fleet.on_shared("hit" if remote is not None else "fallback")
        before, hold, clean = fleet.delays(bucket, user, remote, now)
        if before > 0:
            yield _PenaltyWait(before, bucket)
        return hold if hold > 0 or not clean else -1.0

    def _fleet_after(
        self,
        fleet: Fleet,
        bucket: str,
        result: Verdict,
        credential: Credential,
        hold: float,
    ) -> bool:
        """Record the verdict; whether its FAIL is to be held for ``hold`` seconds
        (``hold`` -1.0: the address was clean, nothing held)."""
        if result.outcome is Outcome.OK:
            fleet.succeeded(bucket, hold < 0)
        elif result.outcome is Outcome.FAIL and result.reason is not Reason.NOLOGIN:
            fleet.failed(bucket, result.user or "", _secret(credential), self.clock())
            if hold > 0:
                fleet.on_spray("after", hold)
                return True
        return False

    def _policy_request(
        self, client: AuthPolicy, info: RequestInfo, credential: Credential, typed: str
    ) -> PolicyRequest | None:
        """The login as the policy server sees it: the normalised name (Dovecot's
        ``%{requested_username}``), and the password for PLAIN/LOGIN only."""
        try:
            user = self.auth.usernames.normalise(typed)
        except InvalidUsername:
            return None  # refused by the lookup, as by Dovecot before any policy request
        password = credential.password if isinstance(credential, VerifyPlain) else None
        return client.request(info, user, password)

    def finished(self, info: RequestInfo, verdict: Verdict) -> None:
        """The penalty of a mechanism that compared credentials itself (CRAM-MD5's
        digest, SCRAM's proof): recorded when the request ends. The policy server's
        report of every request is queued here (sent after the reply)."""
        if self.authpolicy is not None:
            self.authpolicy.finished(info, verdict.ok)
        penalty = self.penalty
        if penalty is None or info.no_penalty:
            return
        policy = self.policy
        if policy is not None and policy.services is not None and not policy.gates(info).penalty:
            return
        mechanism = REGISTRY.get(info.mechanism)
        if mechanism is None or mechanism.plaintext:
            return  # PLAIN, LOGIN: recorded with the verdict, in _steps
        bucket = penalty.key(info.rip, info.address)
        fleet = penalty.fleet if bucket is not None else None
        if fleet is not None:
            # The FAIL hold needs the verdict before the mechanism's own comparison:
            # these mechanisms get the address penalty and the counts, not the hold.
            assert bucket is not None
            if verdict.ok:
                fleet.succeeded(bucket)
            elif verdict.reason is Reason.PASSWORD_MISMATCH:
                secret = b"" if info.mechanism.startswith("SCRAM-") else None
                fleet.failed(bucket, verdict.user or "", secret, self.clock())
        elif verdict.ok:
            penalty.succeeded_in(bucket)
        elif verdict.reason is Reason.PASSWORD_MISMATCH:
            secret = b"" if info.mechanism.startswith("SCRAM-") else None
            penalty.failed_in(bucket, verdict.user or "", secret, self.clock())

    def _plain_cached(self, info: RequestInfo, cred: VerifyPlain) -> Generator[_Op, Any, Verdict]:
        auth = self.auth
        cache = auth.cache
        if not cache.enabled or cred.authzid or auth.client_dependent:
            # A store whose query depends on the client (%s, %r, %l) answers per
            # request, but the cache is keyed by user and password only.
            return (yield from self._plain(info, cred))
        try:
            user = auth.usernames.normalise(cred.authcid)
        except InvalidUsername:
            return (yield from self._plain(info, cred))
        now = auth.clock()
        cached = cache.lookup(user, cred.password, now)
        if cached is not None:
            return cached
        verdict = yield from self._plain(info, cred, user)
        if verdict.outcome is Outcome.TEMPFAIL:
            stale = cache.stale_success(user, cred.password)
            if stale is not None:
                _std_log.warning("store failing; serving a cached success", user=user)
                return stale
        elif verdict.reason in _CACHEABLE and not verdict.client_specific:
            cache.store(user, cred.password, verdict, now)
        return verdict

    def _plain(
        self, info: RequestInfo, cred: VerifyPlain, user: str | None = None
    ) -> Generator[_Op, Any, Verdict]:
        chain = self.auth.chain
        if chain is not None:  # a dovecot.conf passdb chain; off, this check is its cost
            return (yield from self._plain_chain(chain, info, cred, user))
        found = yield from self._find(info, cred.authcid, cred.authzid, cred.password, user)
        if isinstance(found, Verdict):
            return found
        stored = found.entry.password
        if found.applied.nopassword:
            matched = True
        elif stored is None:
            # A store that checks passwords itself (LDAP auth_bind) has no stored one;
            # asked here only, so entries with a stored password never pay for it.
            bind = getattr(found.store, "auth_bind", None)
            if bind is None:
                matched = False
            else:
                try:
                    matched = yield _Bind(bind, found.entry, cred.password)
                except StoreUnavailable as exc:
                    _std_log.error("cannot verify now", user=found.user, error=str(exc))
                    return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
        else:
            try:
                matched = yield _Verify(stored, cred.password, found.user)
            except HasherUnavailable as exc:
                _std_log.error("cannot verify now", user=found.user, error=str(exc))
                return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
            except schemes.SchemeError as exc:
                return self._unusable(found, exc)
        app = self.app_passwords
        if app is not None:  # the only cost of app passwords when they are off
            return (yield from self._plain_app(app, info, found, cred.password, matched))
        return self._plain_tail(found, cred.password, matched)

    def _plain_app(
        self,
        app: AppPasswordCheck,
        info: RequestInfo,
        found: _Found,
        password: bytes,
        matched: bool,
    ) -> Generator[_Op, Any, Verdict]:
        """The end of a PLAIN/LOGIN check with app passwords on: the main password if it
        matched and the service allows it, else the user's app passwords that are valid
        for the service and not expired. Every verdict here depends on the service (and
        an app password on a file that changes), so none is cached."""
        service = info.service.lower()
        if matched and service in app.require_for:
            app.count("main_password_refused")
            matched = False
        if matched:
            verdict = self._plain_tail(found, password, True)
            if app.require_for:  # the same password fails for another service
                return dataclasses.replace(verdict, client_specific=True)
            return verdict
        source = getattr(found.store, "app_passwords", None)
        if source is not None:
            try:
                candidates = yield _Lookup(source, found.user, info)
            except StoreUnavailable as exc:
                _std_log.error("app passwords unavailable", user=found.user, error=str(exc))
                return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
            now = app.clock()
            tried = False
            for candidate in candidates:
                if not candidate.usable(service, now):
                    continue
                tried = True
                try:
                    ok = yield _Verify(candidate.password, password, found.user)
                except HasherUnavailable as exc:
                    _std_log.error("cannot verify now", user=found.user, error=str(exc))
                    return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
                except schemes.SchemeError:
                    continue  # the file's load or the row's read refused it already
                if ok:
                    app.count("ok")
                    source.used(found.user, candidate.label, now)
                    if found.applied.forced_fail:
                        return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
                    verdict = found.verdict(Outcome.OK, Reason.NONE)
                    return dataclasses.replace(
                        verdict, app_password=candidate.label, client_specific=True
                    )
            if tried:
                app.count("failed")
        verdict = self._plain_tail(found, password, False)
        return dataclasses.replace(verdict, client_specific=True)

    def _plain_tail(self, found: _Found, password: bytes, matched: bool) -> Verdict:
        """The verdict of the main password once it is known whether it matched."""
        if not matched:
            invalid = _invalid_entry(found)
            if invalid is not None:  # {CRYPT}garbage, no password field: never matches
                return self._refused_invalid(found, invalid)
            return found.verdict(Outcome.FAIL, Reason.PASSWORD_MISMATCH)
        if found.applied.forced_fail:
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
        if self.rehash is not None:  # the only cost of the feature when it is off
            self._offer_rehash(self.rehash, found, password)
        return found.verdict(Outcome.OK, Reason.NONE)

    @staticmethod
    def _offer_rehash(rehash: RehashOffer, found: _Found, password: bytes) -> None:
        """A verified password (not a nopassword or nologin entry) goes to the rehash."""
        stored = found.entry.password
        if stored is None or found.applied.nopassword or found.entry.has("nologin"):
            return
        rehash.offer(found.store, found.user, stored, password)

    def _credentials(self, info: RequestInfo, cred: NeedCredentials) -> Generator[_Op, Any, Result]:
        """The user's credentials of the scheme the mechanism asked for, and the OK it
        answers with when the client's answer matches them."""
        chain = self.auth.chain
        if chain is not None:
            return (yield from self._credentials_chain(chain, info, cred))
        found = yield from self._find(info, cred.username)
        if isinstance(found, Verdict):
            return found
        stored = found.entry.password
        if stored is None:
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        try:
            answer = schemes.credentials(stored, cred.scheme, found.user)
        except schemes.SchemeError as exc:
            return self._unusable(found, exc)
        if answer is None:
            _std_log.info(
                "mechanism needs a plaintext or same-scheme stored password",
                user=found.user,
                needs=cred.scheme,
                stored=stored.scheme,
            )
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        if found.applied.forced_fail:
            # Dovecot's lookup itself fails for a `fail` entry: a plain FAIL either way.
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
        data, plaintext = answer
        if cred.scheme.startswith("SCRAM-"):
            data = ScramKeys(*data)  # type: ignore[misc]
        credentials = Credentials(cred.scheme, data, plaintext)
        return CredentialsFound(credentials, found.verdict(Outcome.OK, Reason.NONE))

    def _token(self, info: RequestInfo, cred: VerifyToken) -> Generator[_Op, Any, Verdict]:
        """A bearer token's verdict: the token's user (``username_attribute``), who must
        be the user the client named, if it named one and ``check_authzid`` is on. No
        store is asked: the provider vouches for the user, as with Dovecot's oauth2
        passdb. A FAIL names the user the client named (none: no ``user=``), as
        Dovecot's does: it has taken that name before it asks the provider."""
        typed = cred.authzid or None
        named = self._named(typed)
        validator = self.oauth
        if validator is None:  # [oauth] removed by a reload while this was on its way
            return Verdict(Outcome.TEMPFAIL, None, Reason.STORE_ERROR, original_user=typed)
        checked: TokenResult | None = validator.validate_now(cred.token)
        if checked is None:
            checked = yield _Validate(validator, cred.token)
        assert checked is not None
        if checked.outcome == "unavailable":
            _std_log.error("OAuth provider unavailable", request=info.id, why=checked.why)
            return Verdict(Outcome.TEMPFAIL, None, Reason.STORE_ERROR, original_user=typed)
        if not checked.ok or checked.user is None:
            log.info("bearer token refused", request=info.id, rip=info.rip, why=checked.why)
            return Verdict(Outcome.FAIL, named, Reason.INVALID_TOKEN, original_user=typed)
        try:
            user = self.auth.usernames.normalise(checked.user)
        except InvalidUsername:
            log.info("bearer token refused", request=info.id, why="user name not acceptable")
            return Verdict(Outcome.FAIL, named, Reason.INVALID_USERNAME, original_user=typed)
        if typed is not None and validator.settings.check_authzid and named != user:
            log.info("bearer token refused", request=info.id, why="authzid is not the token's user")
            return Verdict(Outcome.FAIL, named, Reason.AUTHZ_REFUSED, original_user=typed)
        return Verdict(Outcome.OK, user, original_user=typed or checked.user)

    def _named(self, typed: str | None) -> str | None:
        """The user a bearer-token client named, normalised; ``None``: none, or unusable."""
        if typed is None:
            return None
        try:
            return self.auth.usernames.normalise(typed)
        except InvalidUsername:
            return None

    def _unusable(self, found: _Found, exc: schemes.SchemeError) -> Verdict:
        """A stored password that could not be used. Malformed data (the store's, which
        its load already reported) is a plain failure in both modes, as in Dovecot 2.3;
        anything else is ours: an internal failure unless ``broken_hash_is_tempfail``
        is off."""
        invalid = _invalid_entry(found)
        if invalid is None and found.entry.password is not None:
            reason = wellformed.problem(found.entry.password)  # a SQL row: checked now
            if reason is not None:
                invalid = (f"store={found.store.name} user={found.user} row", reason)
        if invalid is not None:
            return self._refused_invalid(found, invalid)
        _std_log.error("unusable stored password", user=found.user, error=str(exc))
        outcome = Outcome.TEMPFAIL if self.auth.broken_hash_is_tempfail else Outcome.FAIL
        return found.verdict(outcome, Reason.BROKEN_HASH)

    def _refused_invalid(self, found: _Found, invalid: tuple[str, str]) -> Verdict:
        """The plain failure of an entry that can never log in, logged with its place
        (``invalid``: where, as ``file:line``, and why)."""
        where, reason = invalid
        _std_log.error(
            "login refused: invalid store entry", user=found.user, where=where, reason=reason
        )
        return found.verdict(Outcome.FAIL, Reason.BROKEN_HASH)

    def _find(
        self,
        info: RequestInfo,
        typed: str,
        authzid: str = "",
        password: bytes | None = None,
        user: str | None = None,
    ) -> Generator[_Op, Any, _Found | Verdict]:
        """Normalise, look up and apply the extra fields: everything before the secret
        is checked. Returns the failure verdict when it ends there.

        ``password`` (PLAIN, LOGIN) is screened for bytes Dovecot refuses, and verified
        against the dummy hash when the user is unknown. ``user``: already normalised.
        """
        auth = self.auth
        screened = self._screen(typed, authzid, password, user)
        if isinstance(screened, Verdict):
            return screened
        user = screened
        entry = None
        on_lookup = auth.on_lookup
        for store in auth.stores:
            started = time.perf_counter()
            try:
                entry = yield _Lookup(store, user, info)
            except StoreUnavailable as exc:
                if on_lookup is not None:
                    on_lookup(store.name, "error", time.perf_counter() - started)
                # No store confirmed the name: it may be a password typed as a user name.
                shown = userlog.unknown_name(user)
                _std_log.error("store unavailable while authenticating", user=shown, error=str(exc))
                return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)
            if on_lookup is not None:
                result = "not_found" if entry is None else "found"
                on_lookup(store.name, result, time.perf_counter() - started)
            if entry is not None:
                break
        if entry is None:
            dummy = auth.dummy_password
            if password is not None and dummy is not None:
                # Verified and ignored: an unknown user costs what a wrong password does.
                with contextlib.suppress(schemes.SchemeError, HasherUnavailable):
                    yield _Verify(dummy, password, "")
            return Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        if entry.fields:
            try:
                applied = apply_fields(entry, user, info)
            except ExpansionError as exc:
                _std_log.error("extra fields cannot be expanded", user=user, error=str(exc))
                return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)
        else:
            applied = plain_entry(user)
        found = _Found(user, typed, entry, applied, store)
        if applied.nets_denied:
            return found.verdict(Outcome.FAIL, Reason.NETWORK_DENIED)
        return found

    def _screen(
        self, typed: str, authzid: str, password: bytes | None, user: str | None
    ) -> str | Verdict:
        """The normalised user, or the FAIL of a request no store is asked about."""
        if user is None:
            try:
                user = self.auth.usernames.normalise(typed)
            except InvalidUsername:
                return Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user=typed)
        if authzid and authzid != user:
            # A different authorization identity is a master-user login, which needs
            # master stores; authbridge has none, so it is refused like Dovecot does.
            return Verdict(Outcome.FAIL, user, Reason.AUTHZ_REFUSED, original_user=typed)
        if password is not None and password_has_illegal_bytes(password):
            # Refused before the lookup, as by Dovecot: no store saw the name (so no
            # user= rename) and no nopassword entry can accept such a password.
            _std_log.info(
                "password with control characters refused", user=userlog.unknown_name(user)
            )
            return Verdict(Outcome.FAIL, user, Reason.MALFORMED, original_user=typed)
        return user

    # ------------------------------------------------------------------ dovecot.conf chain

    def _chain_find(
        self, store: Passdb, rules: PassdbRules, user: str, typed: str, info: RequestInfo
    ) -> Generator[_Op, Any, _Found | LinkResult]:
        """One passdb's entry for ``user`` (looked up by its username_format), with the
        extra fields applied; or UNKNOWN, or INTERNAL when the store cannot answer."""
        on_lookup = self.auth.on_lookup
        started = time.perf_counter()
        try:
            entry = yield _Lookup(store, lookup_name(rules, user), info)
        except StoreUnavailable as exc:
            if on_lookup is not None:
                on_lookup(store.name, "error", time.perf_counter() - started)
            shown = userlog.unknown_name(user)
            _std_log.error("store unavailable while authenticating", user=shown, error=str(exc))
            return LinkResult.INTERNAL
        if on_lookup is not None:
            result = "not_found" if entry is None else "found"
            on_lookup(store.name, result, time.perf_counter() - started)
        if entry is None:
            return LinkResult.UNKNOWN
        if not entry.fields:
            return _Found(user, typed, entry, plain_entry(user), store)
        try:
            applied = apply_fields(entry, user, info)
        except ExpansionError as exc:
            _std_log.error("extra fields cannot be expanded", user=user, error=str(exc))
            return LinkResult.INTERNAL
        return _Found(user, typed, entry, applied, store)

    def _chain_verify(
        self, found: _Found, rules: PassdbRules, run: ChainRun, password: bytes
    ) -> Generator[_Op, Any, tuple[Verdict, LinkResult]]:
        """One passdb's verdict on a PLAIN/LOGIN password, and its result for the chain."""
        if rules.deny:
            _std_log.info("user found in a deny passdb", user=found.user, passdb=rules.where)
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL), LinkResult.DISABLED
        stored = found.entry.password
        if run.skip_password:  # an earlier passdb verified it: this one adds its fields
            if found.applied.forced_fail:
                verdict = found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
            else:
                verdict = found.verdict(Outcome.OK, Reason.NONE)
        else:
            if found.applied.nopassword:
                matched = True
            elif stored is None:
                bind = getattr(found.store, "auth_bind", None)  # an ldap passdb's auth_bind
                if bind is None:
                    matched = False
                else:
                    try:
                        matched = yield _Bind(bind, found.entry, password)
                    except StoreUnavailable as exc:
                        _std_log.error("cannot verify now", user=found.user, error=str(exc))
                        tempfail = found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
                        return tempfail, LinkResult.INTERNAL
            else:
                try:
                    matched = yield _Verify(stored, password, found.user)
                except HasherUnavailable as exc:
                    _std_log.error("cannot verify now", user=found.user, error=str(exc))
                    return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR), LinkResult.INTERNAL
                except schemes.SchemeError as exc:
                    verdict = self._unusable(found, exc)
                    failed = verdict.outcome is Outcome.TEMPFAIL
                    return verdict, LinkResult.INTERNAL if failed else LinkResult.MISMATCH
            verdict = self._plain_tail(found, password, matched)
        if verdict.outcome is Outcome.OK:
            if found.applied.nets_denied:  # Dovecot: the passdb's OK becomes "unknown"
                return found.verdict(Outcome.FAIL, Reason.NETWORK_DENIED), LinkResult.UNKNOWN
            return verdict, LinkResult.OK
        return verdict, LinkResult.MISMATCH

    def _chain_begin(
        self,
        chain: Sequence[Link],
        info: RequestInfo,
        typed: str,
        authzid: str,
        password: bytes | None,
        user: str | None,
    ) -> Verdict | tuple[str, ChainRun, int]:
        """The login name checked, and the walk's first passdb; or the verdict when the
        name is refused or every passdb is skipped."""
        screened = self._screen(typed, authzid, password, user)
        if isinstance(screened, Verdict):
            return screened
        run = ChainRun(chain, info.mechanism, screened)
        index = run.first()
        if index is None:
            return _all_skipped(screened, typed)
        return screened, run, index

    def _plain_chain(
        self, chain: Sequence[Link], info: RequestInfo, cred: VerifyPlain, user: str | None
    ) -> Generator[_Op, Any, Verdict]:
        """PLAIN/LOGIN through the passdbs of a dovecot.conf, by Dovecot's rules."""
        typed = cred.authcid
        begun = self._chain_begin(chain, info, typed, cred.authzid, cred.password, user)
        if isinstance(begun, Verdict):
            return begun
        user, run, first = begun
        index: int | None = first
        ok: Verdict | None = None
        failure = Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        seen = False
        result = LinkResult.UNKNOWN
        while index is not None:
            store, rules = chain[index]
            found = yield from self._chain_find(store, rules, user, typed, info)
            if type(found) is _Found:
                seen = True
                user = run.user = found.applied.user  # a user field renames for the next
                verdict, result = yield from self._chain_verify(found, rules, run, cred.password)
                if result is LinkResult.OK:
                    ok = verdict
                else:
                    failure = verdict
            else:
                result = found  # type: ignore[assignment]
            index, result = run.after(index, result)
        if result is LinkResult.OK:
            return ok or Verdict(Outcome.OK, user, Reason.NONE, original_user=typed)
        ended = _chain_ended(result, user, typed)
        if ended is not None:
            return ended
        dummy = self.auth.dummy_password
        if not seen and dummy is not None:
            # Verified and ignored: an unknown user costs what a wrong password does.
            with contextlib.suppress(schemes.SchemeError, HasherUnavailable):
                yield _Verify(dummy, cred.password, "")
        return failure

    def _credentials_chain(
        self, chain: Sequence[Link], info: RequestInfo, cred: NeedCredentials
    ) -> Generator[_Op, Any, Result]:
        """CRAM-MD5/SCRAM credentials through the passdbs of a dovecot.conf: a passdb
        that has them for the scheme is an OK for its rules, one that has not a failure."""
        typed = cred.username
        begun = self._chain_begin(chain, info, typed, "", None, None)
        if isinstance(begun, Verdict):
            return begun
        user, run, first = begun
        index: int | None = first
        answer: CredentialsFound | None = None
        failure = Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        result = LinkResult.UNKNOWN
        while index is not None:
            store, rules = chain[index]
            found = yield from self._chain_find(store, rules, user, typed, info)
            if type(found) is _Found:
                user = run.user = found.applied.user  # a user field renames for the next
                outcome = self._chain_credentials(found, rules, run, cred)
                if type(outcome) is CredentialsFound:
                    answer, result = outcome, LinkResult.OK
                elif type(outcome) is tuple:
                    failure, result = outcome
                else:
                    result = LinkResult.OK  # no new credentials: the earlier ones stand
            else:
                result = found  # type: ignore[assignment]
            index, result = run.after(index, result)
        if result is LinkResult.OK:
            if answer is None:
                return Verdict(Outcome.FAIL, user, Reason.SCHEME_NOT_AVAILABLE, original_user=typed)
            return answer
        ended = _chain_ended(result, user, typed)
        if ended is not None:
            return ended
        if result is LinkResult.SCHEME and run.seen_unknown:
            return Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        return failure

    def _chain_credentials(
        self, found: _Found, rules: PassdbRules, run: ChainRun, cred: NeedCredentials
    ) -> CredentialsFound | tuple[Verdict, LinkResult] | None:
        """One passdb's credentials of the asked scheme, or its failure and result;
        ``None``: it has none but an earlier passdb's stand (after a ``continue``)."""
        if rules.deny:
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL), LinkResult.DISABLED
        if found.applied.forced_fail:
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL), LinkResult.MISMATCH
        if found.applied.nets_denied:
            return found.verdict(Outcome.FAIL, Reason.NETWORK_DENIED), LinkResult.UNKNOWN
        stored = found.entry.password
        answer = None
        if stored is not None:
            try:
                answer = schemes.credentials(stored, cred.scheme, found.user)
            except schemes.SchemeError as exc:
                verdict = self._unusable(found, exc)
                failed = verdict.outcome is Outcome.TEMPFAIL
                return verdict, LinkResult.INTERNAL if failed else LinkResult.MISMATCH
        if answer is None:
            if run.skip_password:
                return None
            scheme_missing = found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
            return scheme_missing, LinkResult.SCHEME
        data, plaintext = answer
        if cred.scheme.startswith("SCRAM-"):
            data = ScramKeys(*data)  # type: ignore[misc]
        credentials = Credentials(cred.scheme, data, plaintext)
        return CredentialsFound(credentials, found.verdict(Outcome.OK, Reason.NONE))


def _all_skipped(user: str, typed: str) -> Verdict:
    """Every passdb passed this request by (mechanisms, username_filter, skip): an
    internal failure, as in Dovecot ("All password databases were skipped")."""
    _std_log.error("all passdbs were skipped", user=userlog.unknown_name(user))
    return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)


def _chain_ended(result: LinkResult, user: str, typed: str) -> Verdict | None:
    """The chain's answer when its last result is an internal failure or a refusal by
    the rules (the same for passwords and credentials); ``None`` otherwise."""
    if result is LinkResult.INTERNAL:
        return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)
    if result is LinkResult.REFUSED:
        return Verdict(Outcome.FAIL, user, Reason.FORCED_FAIL, original_user=typed)
    return None


def _policy_refusal(
    info: RequestInfo,
    decision: Decision,
    asked: PolicyRequest,
    typed: str,
    user: str | None = None,
) -> Verdict:
    """The FAIL of a policy server refusal: Dovecot's, with ``reason=`` its ``msg``."""
    fields = (("reason", decision.msg),) if decision.msg else ()
    log.info("login refused by the policy server", request=info.id, rip=info.rip)
    return Verdict(
        Outcome.FAIL,
        user or asked.user,
        Reason.POLICY_SERVER,
        fields=fields,
        had_store_fields=bool(fields),
        original_user=typed,
    )


def _invalid_entry(found: _Found) -> tuple[str, str] | None:
    """Where (``file:line``) and why, when the store's load found the entry unusable."""
    invalid_entry = getattr(found.store, "invalid_entry", None)
    if invalid_entry is None:
        return None
    problem = invalid_entry(found.user)
    return None if problem is None else (problem.where, problem.reason)


def _secret(credential: Credential) -> bytes | None:
    """What the penalty tracker fingerprints with the user: the password; SCRAM has none
    (one record per user); a CRAM-MD5 digest answers a fresh challenge, always a new
    guess (``None``)."""
    if isinstance(credential, VerifyPlain):
        return credential.password
    if isinstance(credential, VerifyToken):
        return credential.token  # an old token replayed is one guess, not many
    return b"" if credential.scheme.startswith("SCRAM-") else None


def _typed(credential: Credential) -> str:
    if isinstance(credential, VerifyPlain):
        return credential.authcid
    if isinstance(credential, NeedCredentials):
        return credential.username
    return credential.authzid
