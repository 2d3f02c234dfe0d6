"""The ldap store: Dovecot's ldap passdb, in its two modes.

- Password lookup: ``pass_filter`` finds the user's entry, ``pass_attrs`` names its
  attributes as fields (``userPassword=password`` is the stored password, verified by
  authbridge's schemes; the others are extra fields, as in Dovecot).
- ``auth_bind = yes``: the directory checks the password by a bind as the user, with
  the DN the search found or, with ``auth_bind_userdn``, the DN the template makes
  (no search, except for a CRAM-MD5/SCRAM lookup, which searches as Dovecot does).
  Such an entry has no stored password; the check pipeline hands the password to
  :meth:`LdapStore.auth_bind`. Mechanisms that need a stored secret
  (CRAM-MD5, SCRAM) fail for these users, as in Dovecot.

python-ldap blocks, so each search and bind runs in a worker thread (at most
``pool_size`` per store, :class:`trio.CapacityLimiter`) and the event loop waits at
most ``timeout`` seconds. A directory that is down, slow, refusing TLS or answering
an error is :class:`LdapStoreError` (a StoreUnavailable): the request gets a temporary
failure (Exim 435, Postfix 454). Unexpected exceptions are contained like the sql
store's: logged by type and place, counted, answered as a temporary failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from authbridge.config_ldap import LdapSettings, PassAttr
from authbridge.core.records import record
from authbridge.observability.contained import report
from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.app_passwords import AppPasswordSource
from authbridge.passdb.base import PassdbEntry, StoreUnavailable
from authbridge.passdb.ldap_template import escape_dn, escape_filter, expand, values_of
from authbridge.passdb.sql_query import RequestContext
from authbridge.schemes import StoredPassword, parse_stored

log = get_stdlib_logger(__name__)

__all__ = ["LdapEntry", "LdapStore", "LdapStoreError", "ldap_driver_problem", "open_ldap_store"]

_PASSWORD_FIELDS = ("password", "password_noscheme")
#: Mechanisms whose password the directory can check with a bind.
_PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


class LdapStoreError(StoreUnavailable):
    """The directory did not answer a lookup or a bind; never carries a password."""


@record
class LdapEntry(PassdbEntry):
    """An entry with the DN a user's bind (``auth_bind``) uses."""

    dn: str = ""


def ldap_driver_problem() -> str | None:
    """``None`` when python-ldap imports; otherwise what is wrong and how to install it."""
    try:
        import ldap  # noqa: F401
    except ImportError as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (
            f"the ldap driver python-ldap cannot be imported ({detail}); install it with: "
            "apt-get install libldap2-dev libsasl2-dev python3-dev gcc && "
            "pip install 'authbridge[ldap]' (from the authbridge checkout: pip install '.[ldap]')"
        )
    return None


def _verifies_plaintext(info: RequestContext | None) -> bool:
    """Whether the lookup is for a password to check (PLAIN, LOGIN, or no request:
    ``authbridge check``), not for credentials (CRAM-MD5, SCRAM)."""
    return str(getattr(info, "mechanism", "PLAIN")).upper() in _PLAINTEXT_MECHANISMS


def _storable(value: str) -> bool:
    """Whether ``value`` can go to the directory: UTF-8 without NUL (a client's
    undecodable bytes arrive as lone surrogates)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def entry_from_attrs(
    user: str,
    dn: str,
    attrs: dict[str, list[bytes]],
    wanted: tuple[PassAttr, ...],
    default_scheme: str,
) -> LdapEntry:
    """Dovecot's reading of an LDAP entry by ``pass_attrs``.

    Attribute names compare without case (LDAP's rule); an absent attribute gives no
    field; several values are joined with ``,``. Values are literal: a ``%`` in them is
    escaped, because the pipeline %-expands field values.
    """
    lowered = {name.lower(): values for name, values in attrs.items()}
    password: StoredPassword | None = None
    fields: list[tuple[str, str | None]] = []
    for item in wanted:
        if not item.attr:
            assert item.template is not None
            fields.append((item.name, _fill(item.template, lowered)))
            continue
        values = lowered.get(item.attr.lower())
        if not values:
            continue
        if item.name in _PASSWORD_FIELDS:
            text = _text(values[0])
            if item.name == "password_noscheme":
                base = parse_stored("", default_scheme)
                password = StoredPassword(base.scheme, text, base.encoding)
            else:
                password = parse_stored(text, default_scheme)
            continue
        fields.append((item.name, ",".join(_text(v) for v in values).replace("%", "%%")))
    return LdapEntry(user, password, tuple(fields), dn)


def _fill(template: str, attrs: dict[str, list[bytes]]) -> str:
    """``%{ldap:attr}`` replaced by the attribute's value (empty when absent)."""
    out, rest = [], template
    while "%{ldap:" in rest:
        head, _, tail = rest.partition("%{ldap:")
        name, _, rest = tail.partition("}")
        values = attrs.get(name.lower()) or []
        out.append(head)
        out.append(",".join(_text(v) for v in values).replace("%", "%%"))
    out.append(rest)
    return "".join(out)


class LdapStore:
    """A Passdb backed by an LDAP directory (see the module's docstring)."""

    def __init__(self, settings: LdapSettings, pool: Any = None) -> None:
        if pool is None:
            from authbridge.passdb.ldap_conn import LdapPool  # python-ldap: LDAP sites only

            pool = LdapPool(settings)
        self.settings = settings
        self.pool = pool
        self.timeout = settings.timeout
        self.uses_request = settings.uses_request
        wanted = settings.pass_attrs
        if settings.auth_bind:
            # The directory checks the password: a stored one would be checked instead.
            wanted = tuple(a for a in wanted if a.name not in _PASSWORD_FIELDS)
        self.wanted = wanted
        attrs = [a.attr for a in wanted if a.attr]
        for item in wanted:
            for chunk in (item.template or "").split("%{ldap:")[1:]:
                attrs.append(chunk.partition("}")[0])
        self.attrs = list(dict.fromkeys(attrs))
        # Threads abandoned after a timeout keep their slot until libldap gives up (its
        # own timeouts are the same), so a hung directory never piles up threads.
        self._limiter = trio.CapacityLimiter(max(1, settings.pool_size))
        self.errors = 0
        self.on_internal_error: Callable[[str], None] | None = None
        self.app_passwords: AppPasswordSource | None = None
        if settings.auth_bind:
            # What the check pipeline looks for on an entry without a stored password.
            self.auth_bind = self._auth_bind

    @property
    def name(self) -> str:
        return self.settings.description

    async def lookup(self, user: str, info: RequestContext | None = None) -> PassdbEntry | None:
        """The entry for ``user``; raises LdapStoreError (a StoreUnavailable) on any failure."""
        try:
            return await self._lookup(user, info)
        except LdapStoreError:
            raise
        except Exception as exc:
            self._contained(exc, "ldap lookup failed unexpectedly; answered as a temporary failure")
            raise LdapStoreError(f"{self.name}: internal error ({type(exc).__name__})") from None

    async def _lookup(self, user: str, info: RequestContext | None) -> PassdbEntry | None:
        settings = self.settings
        values = values_of(user, info)
        if not all(_storable(value) for value in values.values()):
            return None  # no directory holds such a name (nor can a filter carry it)
        if settings.auth_bind_userdn and _verifies_plaintext(info):
            # Dovecot's template mode: no search, the bind decides (unknown users fail it).
            # For CRAM-MD5 or SCRAM Dovecot still searches: the entry (no password) may
            # rename the user for the next passdb.
            return LdapEntry(user, None, (), expand(settings.auth_bind_userdn, values, escape_dn))
        search_filter = expand(settings.pass_filter, values, escape_filter)
        found = await self._run(self.pool.search, search_filter, self.attrs)
        if not found:
            return None
        if len(found) > 1:
            raise self._failed("pass_filter matches more than one entry")
        dn, attrs = found[0]
        return entry_from_attrs(user, dn, attrs, self.wanted, settings.default_pass_scheme)

    async def _auth_bind(self, entry: PassdbEntry, password: bytes) -> bool:
        """Whether the user's bind succeeds with ``password``; raises LdapStoreError."""
        dn = getattr(entry, "dn", "")
        if not password or not dn:
            return False
        try:
            ok: bool = await self._run(self.pool.check_bind, dn, password)
        except LdapStoreError:
            raise
        except Exception as exc:
            self._contained(exc, "ldap bind failed unexpectedly; answered as a temporary failure")
            raise LdapStoreError(f"{self.name}: internal error ({type(exc).__name__})") from None
        return ok

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        from authbridge.passdb.ldap_conn import LdapDown

        with trio.move_on_after(self.timeout) as scope:
            try:
                return await trio.to_thread.run_sync(
                    fn, *args, limiter=self._limiter, abandon_on_cancel=True
                )
            except LdapDown as exc:
                raise self._failed(str(exc)) from None
        if scope.cancelled_caught:
            raise self._failed(f"no answer within {self.timeout:g} s")
        raise AssertionError("unreachable")

    def _failed(self, why: str) -> LdapStoreError:
        self.errors += 1
        # The authenticator logs the outage with the user; this is the detail.
        log.debug("ldap store failed", store=self.name, error=why)
        return LdapStoreError(f"{self.name}: {why}")

    def _contained(self, exc: Exception, message: str) -> None:
        self.errors += 1
        report("store", exc, message, self.on_internal_error, store=self.name)

    async def probe(self, user: str) -> PassdbEntry | None:
        """``authbridge check``: connect, read the base, then look ``user`` up."""
        await self._run(self.pool.probe)
        return await self.lookup(user)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.pool.close, abandon_on_cancel=True)


def open_ldap_store(settings: LdapSettings) -> LdapStore:
    """The store, without contacting the directory (it may be down at start)."""
    return LdapStore(settings)
