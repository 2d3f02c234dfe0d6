"""python-ldap connections for the ldap store; every method blocks and runs in a thread.

python-ldap (libldap underneath) is the maintained LDAP client for Python; libldap gives
failover over a list of URIs, StartTLS and LDAPS with its CA checks, and timeouts of its
own. Two small pools: connections bound as ``dn`` for searches, and connections used
only for the users' binds (``auth_bind``), so a user's bind never changes the identity
a search runs as. Each connection serves one thread at a time.

Every libldap wait is bounded by the store timeout (each operation; a connect gets its
share of it per URI),
so a thread the event loop abandoned after its own timeout ends soon after. A
connection that failed in any way is closed, never reused; a pooled connection found
dead (the server restarted) is replaced by a fresh one once, which is how the store
comes back without a restart.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import ldap

from authbridge.config_ldap import LdapSettings

_SCOPES = {"base": ldap.SCOPE_BASE, "onelevel": ldap.SCOPE_ONELEVEL, "subtree": ldap.SCOPE_SUBTREE}
_DEREF = {
    "never": ldap.DEREF_NEVER,
    "searching": ldap.DEREF_SEARCHING,
    "finding": ldap.DEREF_FINDING,
    "always": ldap.DEREF_ALWAYS,
}
_REQUIRE_CERT = {
    "never": ldap.OPT_X_TLS_NEVER,
    "allow": ldap.OPT_X_TLS_ALLOW,
    "try": ldap.OPT_X_TLS_TRY,
    "demand": ldap.OPT_X_TLS_DEMAND,
    "hard": ldap.OPT_X_TLS_HARD,
}
#: A user's bind that fails with these is a wrong password (or no such user), not an
#: outage (OpenLDAP answers invalidCredentials for a DN that does not exist, too).
_REFUSED = (ldap.INVALID_CREDENTIALS, ldap.INVALID_DN_SYNTAX, ldap.NO_SUCH_OBJECT)
#: Errors of a pooled connection that may just have died with a restarted server.
_STALE = (ldap.SERVER_DOWN, ldap.CONNECT_ERROR)

SearchResult = list[tuple[str, dict[str, list[bytes]]]]


class LdapDown(Exception):
    """The directory did not answer as it should; the message is libldap's, one line."""


def describe(exc: ldap.LDAPError) -> str:
    """``desc (info)`` of a python-ldap error: libldap's words, never a credential."""
    detail: Any = exc.args[0] if exc.args else {}
    if isinstance(detail, dict):
        desc = str(detail.get("desc") or type(exc).__name__)
        info = str(detail.get("info") or "").strip()
        return f"{desc} ({info})" if info else desc
    return type(exc).__name__


class LdapPool:
    """The connections of one ldap store (at most ``pool_size`` idle of each kind)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.uri = " ".join(settings.uris)
        self.timeout = settings.timeout
        self._lock = threading.Lock()
        self._idle: dict[str, list[Any]] = {"search": [], "bind": []}
        self._closed = False
        #: Connections opened so far (tests check that the pool reuses them).
        self.opened = 0

    def _connect(self, kind: str) -> Any:
        s = self.settings
        conn = ldap.initialize(self.uri)
        try:
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
            conn.set_option(ldap.OPT_REFERRALS, 0)  # AD's referrals are not followed
            # Each URI's connect gets its share, so that a server that swallows packets
            # leaves time to fail over to the next one within the store timeout.
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, self.timeout / len(s.uris))
            conn.set_option(ldap.OPT_TIMEOUT, self.timeout)
            conn.set_option(ldap.OPT_DEREF, _DEREF[s.deref])
            conn.timeout = self.timeout
            if s.tls or any(uri.startswith("ldaps://") for uri in s.uris):
                for option, value in (
                    (ldap.OPT_X_TLS_CACERTFILE, s.tls_ca_cert_file),
                    (ldap.OPT_X_TLS_CACERTDIR, s.tls_ca_cert_dir),
                    (ldap.OPT_X_TLS_CERTFILE, s.tls_cert_file),
                    (ldap.OPT_X_TLS_KEYFILE, s.tls_key_file),
                ):
                    if value:
                        conn.set_option(option, value)
                conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, _REQUIRE_CERT[s.tls_require_cert])
                conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # the options above, for this one
            if s.tls and not s.uris[0].startswith("ldaps://"):
                conn.start_tls_s()
            if kind == "search" and s.dn:
                conn.simple_bind_s(s.dn, s.dnpass)
        except BaseException:
            _close(conn)
            raise
        self.opened += 1
        return conn

    def _take(self, kind: str) -> tuple[Any, bool]:
        """An idle connection (False) or a new one (True)."""
        with self._lock:
            idle = self._idle[kind]
            if idle:
                return idle.pop(), False
        return self._connect(kind), True

    def _give(self, kind: str, conn: Any) -> None:
        with self._lock:
            idle = self._idle[kind]
            if not self._closed and len(idle) < self.settings.pool_size:
                idle.append(conn)
                return
        _close(conn)

    def search(self, filterstr: str, attrs: list[str]) -> SearchResult:
        """The entries (at most two) ``filterstr`` finds under the base; raises LdapDown."""
        s = self.settings
        for attempt in range(2):
            conn = None
            fresh = True
            try:
                conn, fresh = self._take("search")
                found = conn.search_ext_s(
                    s.base,
                    _SCOPES[s.scope],
                    filterstr,
                    attrs or ["1.1"],
                    timeout=self.timeout,
                    sizelimit=2,
                )
            except ldap.SIZELIMIT_EXCEEDED:
                self._give("search", conn)
                raise LdapDown("pass_filter matches more than one entry") from None
            except ldap.LDAPError as exc:
                if conn is not None:
                    _close(conn)
                if attempt == 0 and not fresh and isinstance(exc, _STALE):
                    continue
                raise LdapDown(describe(exc)) from None
            self._give("search", conn)
            # AD answers search references (dn None) beside the entries: not users.
            return [(dn, entry) for dn, entry in found if dn is not None]
        raise AssertionError("unreachable")

    def check_bind(self, dn: str, password: bytes) -> bool:
        """Whether ``dn`` binds with ``password``; raises LdapDown when the directory
        cannot say. An empty password is never sent (it would be an anonymous bind)."""
        if not password or not dn:
            return False
        for attempt in range(2):
            conn = None
            fresh = True
            try:
                conn, fresh = self._take("bind")
                conn.simple_bind_s(dn, password)
            except _REFUSED:
                self._give("bind", conn)
                return False
            except ldap.LDAPError as exc:
                if conn is not None:
                    _close(conn)
                if attempt == 0 and not fresh and isinstance(exc, _STALE):
                    continue
                raise LdapDown(describe(exc)) from None
            self._give("bind", conn)
            return True
        raise AssertionError("unreachable")

    def probe(self) -> None:
        """Connect (and bind as ``dn``) and read the base entry: ``authbridge check``."""
        s = self.settings
        conn = None
        try:
            conn, _ = self._take("search")
            conn.search_ext_s(
                s.base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"], timeout=self.timeout
            )
        except ldap.NO_SUCH_OBJECT:
            if conn is not None:
                _close(conn)
            raise LdapDown(f"the base {s.base!r} does not exist") from None
        except ldap.LDAPError as exc:
            if conn is not None:
                _close(conn)
            raise LdapDown(describe(exc)) from None
        self._give("search", conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            for conns in self._idle.values():
                conns.clear()
        for conn in idle:
            _close(conn)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing a dead connection: nothing to report
        conn.unbind_s()
