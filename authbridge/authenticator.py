"""From a credential to a :class:`Verdict`: normalise, look up, apply fields, verify.

This is the one place where Dovecot's passdb semantics live: extra fields such as
``nopassword``, ``allow_nets``, ``fail``, ``nodelay`` and ``user=`` rewriting, the
hidden/visible split of fields in replies, and which failures are the user's fault
(``FAIL``) and which are ours (internal failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authbridge import addresses, schemes, userlog
from authbridge.cache import AuthCache
from authbridge.expand import ExpansionError, expand, variables
from authbridge.hashing import Hasher, HasherUnavailable
from authbridge.mechanisms.base import NeedScramKeys, ScramKeys, VerifyCramMd5, VerifyPlain
from authbridge.passdb.base import Passdb, PassdbEntry, StoreUnavailable
from authbridge.schemes import StoredPassword
from authbridge.session import Credential, KeysFound, RequestInfo, failed_after_lookup
from authbridge.usernames import InvalidUsername, UsernamePolicy
from authbridge.verdict import Outcome, Reason, Verdict, refuse_nologin

log = logging.getLogger(__name__)

#: Verdicts the cache may keep: plain successes and password mismatches; anything that
#: depends on the client address (allow_nets) or on a broken store is never cached.
_CACHEABLE = frozenset({Reason.NONE, Reason.PASSWORD_MISMATCH, Reason.USER_UNKNOWN})

#: Fields that only switch password checking off: not returned, not even counted.
_CONSUMED = frozenset({"nopassword", "noauthenticate"})

#: Bytes Dovecot 2.3 refuses in a PLAIN/LOGIN password before any lookup ("password
#: having illegal chars"): they mean something in its internal protocols. The password
#: is a C string there, so only the bytes before a NUL count.
ILLEGAL_PASSWORD_BYTES = frozenset(b"\x01\t\r\n")


def password_has_illegal_bytes(password: bytes) -> bool:
    """Whether Dovecot would refuse ``password`` unchecked, even for a nopassword user."""
    head = password.partition(b"\x00")[0]
    return any(byte in ILLEGAL_PASSWORD_BYTES for byte in head)


#: Extra fields Dovecot acts on itself and never returns to the client.
HIDDEN_FIELDS = frozenset(
    {
        *_CONSUMED,
        "user",
        "username",
        "domain",
        "login_user",
        "allow_nets",
        "allow_real_nets",
        "fail",
        "delay_until",
        "password",
        "password_noscheme",
        "passdb_import",
    }
)


@dataclass(frozen=True, slots=True)
class _Applied:
    """An entry's extra fields, interpreted."""

    user: str
    visible: tuple[tuple[str, str | None], ...]
    has_fields: bool
    nopassword: bool
    forced_fail: bool
    nets_denied: bool
    client_specific: bool


def _networks_allow(spec: str, rip: str | None) -> bool:
    """Dovecot's allow_nets: CIDRs separated by commas/spaces; ``local`` = no rip."""
    address = addresses.parse(rip) if rip else None
    for token in spec.replace(",", " ").split():
        if token == "local":
            if address is None:
                return True
            continue
        if address is None:
            continue
        try:
            if address in ipaddress.ip_network(token, strict=False):
                return True
        except ValueError:
            log.warning("ignoring unparsable allow_nets entry %r", token)
    return False


def _apply_fields(entry: PassdbEntry, user: str, info: RequestInfo) -> _Applied:
    """Interpret the entry's extra fields; raises ExpansionError for an unknown %var."""
    if not entry.fields:  # most users: nothing to expand, nothing to look for
        return _Applied(
            user=user,
            visible=(),
            has_fields=False,
            nopassword=False,
            forced_fail=False,
            nets_denied=False,
            client_specific=False,
        )
    visible: list[tuple[str, str | None]] = []
    nets_denied = False
    values = variables(user, info.service, info.rip, info.lip)
    for key, raw in entry.fields:
        value = expand(raw, values) if raw else raw
        if value == "":
            value = None  # a value that expands to nothing is sent as a bare key
        if key in ("user", "username") and value:
            user = value
        elif key == "domain" and value:
            user = f"{user.partition('@')[0]}@{value}"
        elif key == "allow_nets" and value is not None:
            nets_denied = nets_denied or not _networks_allow(value, info.rip)
        if key not in HIDDEN_FIELDS and not key.startswith("userdb_"):
            visible.append((key, value))
    return _Applied(
        user=user,
        visible=tuple(visible),
        # nopassword/noauthenticate are consumed here and never counted (Dovecot 2.3).
        has_fields=any(k not in _CONSUMED for k, _ in entry.fields),
        nopassword=entry.has("nopassword") or entry.has("noauthenticate"),
        forced_fail=entry.has("fail"),
        nets_denied=nets_denied,
        client_specific=entry.has("allow_nets") or entry.has("allow_real_nets"),
    )


def _make_verdict(outcome: Outcome, applied: _Applied, reason: Reason, typed: str) -> Verdict:
    fields, has_fields = applied.visible, applied.has_fields
    if outcome is not Outcome.OK:
        # Dovecot rolls back the fields of a failed lookup: the FAIL carries none
        # (not even reason= or nodelay, as the conformance corpus shows for 2.3).
        fields, has_fields = (), False
    return Verdict(
        outcome,
        applied.user,
        reason,
        fields=fields,
        had_store_fields=has_fields,
        original_user=typed,
        client_specific=applied.client_specific,
    )


@dataclass(frozen=True, slots=True)
class _Found:
    """A user the stores know, with its extra fields applied: ready for the secret."""

    user: str
    typed: str
    entry: PassdbEntry
    applied: _Applied

    def verdict(self, outcome: Outcome, reason: Reason) -> Verdict:
        return _make_verdict(outcome, self.applied, reason, self.typed)


class Authenticator:
    """Checks credentials against an ordered list of stores."""

    def __init__(
        self,
        stores: Sequence[Passdb],
        hasher: Hasher,
        usernames: UsernamePolicy | None = None,
        cache: AuthCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stores = list(stores)
        self.hasher = hasher
        self.usernames = usernames or UsernamePolicy()
        self.cache = cache if cache is not None else AuthCache()
        self.clock = clock
        #: A real stored hash verified (and ignored) for unknown users, so that an
        #: unknown user costs the same time as a wrong password.
        self.dummy_password: StoredPassword | None = None
        #: A stored hash that cannot be used is our problem, not a wrong password:
        #: an internal failure. Dovecot 2.3 answers a plain FAIL; compat mode does too.
        self.broken_hash_is_tempfail = True
        #: An OK whose fields carry ``nologin`` is answered as a FAIL (see
        #: :func:`authbridge.verdict.refuse_nologin`); Dovecot 2.3, and compat mode, say OK.
        self.nologin_refuses = True
        #: Called with (store name, "found" | "not_found" | "error", seconds) per lookup.
        self.on_lookup: Callable[[str, str, float], None] | None = None
        self._inline_lookups: list[tuple[str, str, float]] = []

    @property
    def _broken_outcome(self) -> Outcome:
        return Outcome.TEMPFAIL if self.broken_hash_is_tempfail else Outcome.FAIL

    async def check(self, info: RequestInfo, credential: Credential) -> Verdict | KeysFound:
        if isinstance(credential, VerifyPlain):
            verdict = await self._check_plain_cached(info, credential)
        elif isinstance(credential, VerifyCramMd5):
            verdict = await self._check_cram_md5(info, credential)
        else:
            found = await self._scram_keys(info, credential)
            if isinstance(found, Verdict):
                return self._policy(found)
            # The proof is checked later, by the mechanism: a wrong one still fails as a
            # mismatch, the right one gets this (refused) verdict instead of the OK.
            return KeysFound(found.keys, self._policy(found.verdict))
        return self._policy(verdict)

    def _policy(self, verdict: Verdict) -> Verdict:
        """authbridge's own rules on top of Dovecot's verdict (off in compat mode).

        Applied after the cache, which keeps Dovecot's verdict as it is.
        """
        return refuse_nologin(verdict) if self.nologin_refuses else verdict

    async def _check_plain_cached(self, info: RequestInfo, cred: VerifyPlain) -> Verdict:
        # A store whose query depends on the client (%s, %r, %l) answers per request,
        # but the cache is keyed by user and password only: no caching then.
        client_dependent = any(getattr(s, "uses_request", False) for s in self.stores)
        if not self.cache.enabled or cred.authzid or client_dependent:
            return await self._check_plain(info, cred)
        try:
            user = self.usernames.normalise(cred.authcid)
        except InvalidUsername:
            return await self._check_plain(info, cred)
        now = self.clock()
        cached = self.cache.lookup(user, cred.password, now)
        if cached is not None:
            return cached
        verdict = await self._check_plain(info, cred)
        if verdict.outcome is Outcome.TEMPFAIL:
            stale = self.cache.stale_success(user, cred.password)
            if stale is not None:
                log.warning("store failing; serving a cached success for %s", user)
                return stale
        elif verdict.reason in _CACHEABLE and not verdict.client_specific:
            self.cache.store(user, cred.password, verdict, now)
        return verdict

    async def _dummy_verify(self, password: bytes) -> None:
        if self.dummy_password is None:
            return
        with contextlib.suppress(schemes.SchemeError, HasherUnavailable):
            await self.hasher.verify(self.dummy_password, password, "")

    # ------------------------------------------------------------------ helpers

    def _normalise(self, typed: str) -> str | Verdict:
        try:
            return self.usernames.normalise(typed)
        except InvalidUsername:
            return Verdict(Outcome.FAIL, None, Reason.INVALID_USERNAME, original_user=typed)

    @staticmethod
    def _apply(entry: PassdbEntry, user: str, info: RequestInfo, typed: str) -> _Applied | Verdict:
        try:
            return _apply_fields(entry, user, info)
        except ExpansionError as exc:
            log.error("user %s: extra fields cannot be expanded: %s", user, exc)
            return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)

    async def _lookup(self, user: str, info: RequestInfo) -> PassdbEntry | None:
        for store in self.stores:
            started = time.perf_counter()
            try:
                entry = await store.lookup(user, info)
            except StoreUnavailable:
                self._looked_up(store.name, "error", started)
                raise
            self._looked_up(store.name, "not_found" if entry is None else "found", started)
            if entry is not None:
                return entry
        return None

    def _looked_up(self, store: str, result: str, started: float) -> None:
        if self.on_lookup is not None:
            self.on_lookup(store, result, time.perf_counter() - started)

    # ------------------------------------------------------------------ the shared part

    def _prelude(self, typed: str, authzid: str, password: bytes | None = None) -> str | Verdict:
        user = self._normalise(typed)
        if isinstance(user, Verdict):
            return user
        if authzid and authzid != user:
            # A different authorization identity is a master-user login, which needs
            # master stores; authbridge has none, so it is refused like Dovecot does.
            return Verdict(Outcome.FAIL, user, Reason.AUTHZ_REFUSED, original_user=typed)
        if password is not None and password_has_illegal_bytes(password):
            # Refused before the lookup, as by Dovecot: no store saw the name (so no
            # user= rename) and no nopassword entry can accept such a password.
            log.info(
                "user %s: password with control characters refused", userlog.unknown_name(user)
            )
            return Verdict(Outcome.FAIL, user, Reason.MALFORMED, original_user=typed)
        return user

    def _found(
        self, info: RequestInfo, typed: str, user: str, entry: PassdbEntry
    ) -> _Found | Verdict:
        applied = self._apply(entry, user, info, typed)
        if isinstance(applied, Verdict):
            return applied
        found = _Found(user, typed, entry, applied)
        if applied.nets_denied:
            return found.verdict(Outcome.FAIL, Reason.NETWORK_DENIED)
        return found

    async def _find(
        self, info: RequestInfo, typed: str, authzid: str = "", password: bytes | None = None
    ) -> _Found | Verdict:
        """Normalise, look up and apply the extra fields: everything before the secret
        is checked. Returns the failure verdict when it ends there.

        ``password`` (PLAIN, LOGIN) is screened for bytes Dovecot refuses, and verified
        against the dummy hash when the user is unknown."""
        user = self._prelude(typed, authzid, password)
        if isinstance(user, Verdict):
            return user
        try:
            entry = await self._lookup(user, info)
        except StoreUnavailable as exc:
            # No store confirmed the name: it may be a password typed as a user name.
            shown = userlog.unknown_name(user)
            log.error("store unavailable while authenticating %s: %s", shown, exc)
            return Verdict(Outcome.TEMPFAIL, user, Reason.STORE_ERROR, original_user=typed)
        if entry is None:
            if password is not None:
                await self._dummy_verify(password)
            return Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        return self._found(info, typed, user, entry)

    def _find_now(
        self, info: RequestInfo, typed: str, authzid: str = "", password: bytes | None = None
    ) -> _Found | Verdict | None:
        """:meth:`_find` without waiting, for in-memory stores; ``None`` when it would
        have to wait (an expensive dummy verification for an unknown user)."""
        user = self._prelude(typed, authzid, password)
        if isinstance(user, Verdict):
            return user
        entry = None
        for store in self.stores:
            started = time.perf_counter()
            entry = store.get(user)  # type: ignore[attr-defined]
            result = "not_found" if entry is None else "found"
            # Reported by check_now only if the inline path gives the verdict, so a
            # lookup redone by the async path is not counted twice.
            self._inline_lookups.append((store.name, result, time.perf_counter() - started))
            if entry is not None:
                break
        if entry is None:
            if password is not None and self.dummy_password is not None:
                if schemes.is_expensive(self.dummy_password):
                    return None
                with contextlib.suppress(schemes.SchemeError):
                    schemes.verify_password(self.dummy_password, password, "")
            return Verdict(Outcome.FAIL, user, Reason.USER_UNKNOWN, original_user=typed)
        return self._found(info, typed, user, entry)

    def check_now(self, info: RequestInfo, credential: Credential) -> Verdict | None:
        """The verdict right away when nothing has to wait: every store is in memory,
        the stored scheme is cheap and the cache is off. ``None``: use :meth:`check`.

        Most logins on a passwd-file with salted SHA or plaintext take this path, which
        saves a task, a cancel scope and a scheduler round trip per authentication.
        """
        if self.cache.enabled or not all(hasattr(s, "get") for s in self.stores):
            return None
        self._inline_lookups.clear()
        verdict = self._check_now(info, credential)
        if verdict is None:
            return None
        if self.on_lookup is not None:
            for store, result, seconds in self._inline_lookups:
                self.on_lookup(store, result, seconds)
        return self._policy(verdict)

    def _check_now(self, info: RequestInfo, credential: Credential) -> Verdict | None:
        if isinstance(credential, VerifyPlain):
            found = self._find_now(
                info, credential.authcid, credential.authzid, password=credential.password
            )
            if found is None or isinstance(found, Verdict):
                return found
            stored = found.entry.password
            if found.applied.nopassword or stored is None:
                return self._finish(found, found.applied.nopassword)
            if schemes.is_expensive(stored):
                return None
            try:
                matched = schemes.verify_password(stored, credential.password, found.user)
            except schemes.SchemeError as exc:
                return self._unusable(found, exc)
            return self._finish(found, matched)
        if isinstance(credential, VerifyCramMd5):
            found = self._find_now(info, credential.username)
            if found is None or isinstance(found, Verdict):
                return found
            return self._cram_md5_verdict(found, credential)
        return None

    def _unusable(self, found: _Found, exc: schemes.SchemeError) -> Verdict:
        log.error("user %s: unusable stored password: %s", found.user, exc)
        return found.verdict(self._broken_outcome, Reason.BROKEN_HASH)

    @staticmethod
    def _finish(found: _Found, matched: bool) -> Verdict:
        if not matched:
            return found.verdict(Outcome.FAIL, Reason.PASSWORD_MISMATCH)
        if found.applied.forced_fail:
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
        return found.verdict(Outcome.OK, Reason.NONE)

    # ------------------------------------------------------------------ PLAIN / LOGIN

    async def _check_plain(self, info: RequestInfo, cred: VerifyPlain) -> Verdict:
        found = await self._find(info, cred.authcid, cred.authzid, password=cred.password)
        if isinstance(found, Verdict):
            return found
        stored = found.entry.password
        if found.applied.nopassword:
            matched = True
        elif stored is None:
            matched = False
        else:
            try:
                matched = await self.hasher.verify(stored, cred.password, found.user)
            except HasherUnavailable as exc:
                log.error("cannot verify %s now: %s", found.user, exc)
                return found.verdict(Outcome.TEMPFAIL, Reason.STORE_ERROR)
            except schemes.SchemeError as exc:
                return self._unusable(found, exc)
        return self._finish(found, matched)

    # ------------------------------------------------------------------ CRAM-MD5

    async def _check_cram_md5(self, info: RequestInfo, cred: VerifyCramMd5) -> Verdict:
        found = await self._find(info, cred.username)
        if isinstance(found, Verdict):
            return found
        return self._cram_md5_verdict(found, cred)

    def _cram_md5_verdict(self, found: _Found, cred: VerifyCramMd5) -> Verdict:
        stored = found.entry.password
        if stored is None:
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        try:
            secret = schemes.plaintext(stored)
            context = None if secret is not None else schemes.cram_md5_context(stored)
        except schemes.SchemeError as exc:
            return self._unusable(found, exc)
        if secret is not None:
            # From a plaintext password the C HMAC gives the same digest ~50x faster than
            # going through the precomputed-context path in pure Python.
            expected = hmac.new(secret, cred.challenge, hashlib.md5).hexdigest().encode()
        elif context is not None:
            expected = schemes.cram_md5_digest(context, cred.challenge).hex().encode()
        else:
            log.info(
                "user %s: CRAM-MD5 needs a plaintext or CRAM-MD5 stored password, not %s",
                found.user,
                stored.scheme,
            )
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        given = cred.response_hex.encode("utf-8", "surrogateescape")[:32]
        if found.applied.forced_fail:
            # Dovecot's lookup itself fails for a `fail` entry: a plain FAIL either way.
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
        if len(given) == 32 and hmac.compare_digest(expected, given):
            return found.verdict(Outcome.OK, Reason.NONE)
        # The lookup succeeded and the mechanism compared: Dovecot's FAIL keeps the
        # entry's name and fields, exactly as SCRAM's wrong proof does.
        found_ok = self._policy(found.verdict(Outcome.OK, Reason.NONE))
        return failed_after_lookup(found_ok, Reason.PASSWORD_MISMATCH)

    # ------------------------------------------------------------------ SCRAM

    async def _scram_keys(self, info: RequestInfo, cred: NeedScramKeys) -> Verdict | KeysFound:
        """The stored (or derived) SCRAM keys, and the OK to send if the proof holds."""
        found = await self._find(info, cred.username)
        if isinstance(found, Verdict):
            return found
        stored = found.entry.password
        if stored is None:
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        try:
            keys = schemes.scram_credentials(stored, cred.algorithm, found.user)
        except schemes.SchemeError as exc:
            return self._unusable(found, exc)
        if keys is None:
            log.info(
                "user %s: SCRAM-%s needs a plaintext or SCRAM-%s stored password, not %s",
                found.user,
                cred.algorithm,
                cred.algorithm,
                stored.scheme,
            )
            return found.verdict(Outcome.FAIL, Reason.SCHEME_NOT_AVAILABLE)
        if found.applied.forced_fail:
            return found.verdict(Outcome.FAIL, Reason.FORCED_FAIL)
        return KeysFound(ScramKeys(*keys), found.verdict(Outcome.OK, Reason.NONE))
