"""The ldap store on a real slapd: both of Dovecot's modes through the check pipeline
(stored hashes verified by authbridge's schemes; binds as the user), an AD-style
layout, RFC 4515 escaping, pool reuse, failover, StartTLS/LDAPS with CA checks, and a
directory that does not answer ending as a temporary failure within the timeout."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.usernames import UsernamePolicy
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb.base import StoreUnavailable
from authbridge.passdb.ldap import LdapStore, open_ldap_store
from authbridge.schemes import generate
from tests.ldap.conftest import settings_for
from tests.ldap.slapd import AD_BASE, PEOPLE, SUFFIX, Slapd, ad_user_ldif, person_ldif
from tests.support import free_tcp_port, require_binary
from tests.support.tls import make_self_signed

PASSWORD = "ldap-pass-1"
USERS = {
    # userPassword values as Dovecot's LDAP sites store them.
    "ssha": generate("SSHA", PASSWORD.encode(), "ssha"),
    "crypt": "{CRYPT}" + generate("SHA512-CRYPT", PASSWORD.encode(), "crypt").split("}", 1)[1],
    "argon": generate("ARGON2ID", PASSWORD.encode(), "argon"),
    "noscheme": generate("SHA512-CRYPT", PASSWORD.encode(), "noscheme").split("}", 1)[1],
}
AD_USERS = {"jdoe": "John Doe", "msmith": "Mary Smith"}


@pytest.fixture(scope="module")
def directory(slapd: Slapd) -> Iterator[Slapd]:
    """The shared slapd with this module's users: one per scheme, bind users (their
    {SSHA} hash is slapd's own to check), a disabled one, the AD-style users."""
    ldif = "".join(person_ldif(uid, value) for uid, value in USERS.items())
    ldif += person_ldif("binder", generate("SSHA", PASSWORD.encode(), "x"))
    ldif += person_ldif("other", generate("SSHA", b"other-pass", "x"))
    ldif += person_ldif("gone", generate("SSHA", PASSWORD.encode(), "x"), "mailNologin: moved")
    for sam, cn in AD_USERS.items():
        ldif += ad_user_ldif(cn, sam, generate("SSHA", PASSWORD.encode(), "x"))
    slapd.add(ldif)
    yield slapd


def info() -> RequestInfo:
    return RequestInfo(id=1, mechanism="PLAIN", service="smtp", rip="192.0.2.1", secured=True)


@pytest.fixture
async def stores() -> AsyncIterator[list[LdapStore]]:
    """Stores a test opened, closed after it."""
    opened: list[LdapStore] = []
    yield opened
    for store in opened:
        await store.aclose()


async def login(
    store: LdapStore, user: str, password: str, usernames: UsernamePolicy | None = None
) -> Verdict:
    auth = Authenticator([store], Hasher(), usernames)
    verdict = await auth.check(info(), VerifyPlain(user, "", password.encode()))
    assert isinstance(verdict, Verdict)
    return verdict


def opened(stores: list[LdapStore], server: Slapd, **values: Any) -> LdapStore:
    store = open_ldap_store(settings_for(server, **values))
    stores.append(store)
    return store


@pytest.mark.parametrize("user", sorted(USERS))
async def test_password_lookup_verifies_the_stored_hash(
    directory: Slapd, stores: list[LdapStore], user: str
) -> None:
    store = opened(stores, directory, default_pass_scheme="SHA512-CRYPT")
    ok = await login(store, user, PASSWORD)
    assert ok.outcome is Outcome.OK and ok.user == user
    wrong = await login(store, user, PASSWORD + "x")
    assert (wrong.outcome, wrong.reason) == (Outcome.FAIL, Reason.PASSWORD_MISMATCH)


async def test_unknown_user_and_extra_fields(directory: Slapd, stores: list[LdapStore]) -> None:
    store = opened(stores, directory)
    unknown = await login(store, "nobody", PASSWORD)
    assert (unknown.outcome, unknown.reason) == (Outcome.FAIL, Reason.USER_UNKNOWN)
    # mailNologin=nologin: the right password of a disabled account is still refused.
    gone = await login(store, "gone", PASSWORD)
    assert (gone.outcome, gone.reason) == (Outcome.FAIL, Reason.NOLOGIN)
    entry = await store.lookup("gone")
    assert entry is not None and entry.field("nologin") == "moved"
    assert entry.dn == f"uid=gone,{PEOPLE}"  # type: ignore[attr-defined]


async def test_template_fields_read_ldap_attributes(
    directory: Slapd, stores: list[LdapStore]
) -> None:
    store = opened(stores, directory, pass_attrs="userPassword=password,=reason=%{ldap:mail} %u")
    entry = await store.lookup("ssha")
    assert entry is not None and entry.fields == (("reason", "ssha@example.org %u"),)
    assert store.attrs == ["userPassword", "mail"]


async def test_injection_in_the_user_name_matches_nobody(
    directory: Slapd, stores: list[LdapStore]
) -> None:
    evil = "*)(uid=*"
    # Dovecot's auth_username_chars refuse these names before any store is asked; with
    # that check off (an empty auth_username_chars), the escaping alone must hold.
    anything = UsernamePolicy(allowed_chars=frozenset())
    for mode in ({}, {"auth_bind": True}):
        store = opened(stores, directory, **mode)
        assert await store.lookup(evil) is None
        assert (await login(store, evil, PASSWORD)).reason is Reason.INVALID_USERNAME
        for name in (evil, "ssh*", "*"):
            verdict = await login(store, name, PASSWORD, anything)
            assert (verdict.outcome, verdict.reason) == (Outcome.FAIL, Reason.USER_UNKNOWN)
        assert (await login(store, "ssha", PASSWORD, anything)).outcome is Outcome.OK
        # Bytes no directory can hold (NUL, undecodable): unknown, never an outage.
        for name in ("ssha\x00x", "ssh\udcff"):
            assert await store.lookup(name) is None
            assert (await login(store, name, PASSWORD, anything)).outcome is Outcome.FAIL
        assert store.errors == 0
    # The same text put into the filter unescaped matches every user: the test would
    # see an error (more than one entry), not "unknown", if escaping were missing.
    from authbridge.passdb.ldap_conn import LdapDown  # python-ldap: see conftest

    with pytest.raises(LdapDown, match="more than one entry"):
        store.pool.search(f"(&(objectClass=inetOrgPerson)(uid={evil}))", ["uid"])


async def test_auth_bind_search_then_bind(directory: Slapd, stores: list[LdapStore]) -> None:
    # userPassword=password is in pass_attrs, but auth_bind never reads it: slapd decides.
    store = opened(stores, directory, auth_bind=True)
    assert "userPassword" not in store.attrs
    ok = await login(store, "binder", PASSWORD)
    assert ok.outcome is Outcome.OK and ok.user == "binder"
    wrong = await login(store, "binder", "wrong")
    assert (wrong.outcome, wrong.reason) == (Outcome.FAIL, Reason.PASSWORD_MISMATCH)
    other = await login(store, "binder", "other-pass")  # another user's password
    assert other.outcome is Outcome.FAIL
    unknown = await login(store, "nobody", PASSWORD)
    assert (unknown.outcome, unknown.reason) == (Outcome.FAIL, Reason.USER_UNKNOWN)
    # An empty password would be an anonymous bind, which "succeeds": never sent.
    empty = await login(store, "binder", "")
    assert empty.outcome is Outcome.FAIL
    entry = await store.lookup("binder")
    assert entry is not None and entry.password is None
    assert not await store.auth_bind(entry, b"")


async def test_auth_bind_userdn_template(directory: Slapd, stores: list[LdapStore]) -> None:
    store = opened(
        stores, directory, auth_bind=True, auth_bind_userdn=f"uid=%Ln,{PEOPLE}", dn="", dnpass=""
    )
    assert (await login(store, "Binder@example.org", PASSWORD)).outcome is Outcome.OK
    wrong = await login(store, "binder", "wrong")
    assert (wrong.outcome, wrong.reason) == (Outcome.FAIL, Reason.PASSWORD_MISMATCH)
    # No search in this mode: an unknown user is a bind that fails.
    assert (await login(store, "nobody", PASSWORD)).outcome is Outcome.FAIL
    # A name that would add an RDN stays one value (RFC 4514): no such DN, no login.
    entry = await store.lookup(f"binder,{PEOPLE}")
    assert entry is not None and entry.dn.startswith(r"uid=binder\,ou\=people")  # type: ignore[attr-defined]
    assert (await login(store, f"binder,{PEOPLE}", PASSWORD)).outcome is Outcome.FAIL
    assert store.pool.opened == 1  # bind connections only: no search ever ran


async def test_auth_bind_userdn_still_searches_for_credentials(
    directory: Slapd, stores: list[LdapStore]
) -> None:
    """CRAM-MD5 or SCRAM: Dovecot searches with pass_filter even with a DN template; the
    entry (never a password) may rename the user for the passdbs after it."""
    store = opened(stores, directory, auth_bind=True, auth_bind_userdn=f"uid=%n,{PEOPLE}")
    cram = RequestInfo(id=1, mechanism="CRAM-MD5", service="smtp", secured=True)
    entry = await store.lookup("binder@example.org", cram)
    assert entry is not None and entry.password is None
    assert entry.dn == f"uid=binder,{PEOPLE}" and entry.field("user") == "binder"  # type: ignore[attr-defined]
    assert await store.lookup("nobody", cram) is None
    made = await store.lookup("nobody", info())
    assert made is not None and made.dn == f"uid=nobody,{PEOPLE}"  # type: ignore[attr-defined]


async def test_active_directory_layout(directory: Slapd, stores: list[LdapStore]) -> None:
    """sAMAccountName=%n under CN=Users; the DN names the person, not the login, so the
    store finds it and binds as it (AD's usual Dovecot setup)."""
    store = opened(
        stores,
        directory,
        base=f"dc=corp,{SUFFIX}",
        pass_filter="(&(objectClass=user)(sAMAccountName=%n))",
        pass_attrs="sAMAccountName=user",
        auth_bind=True,
    )
    ok = await login(store, "JDoe@corp.example.org", PASSWORD)
    assert ok.outcome is Outcome.OK and ok.user == "jdoe"
    entry = await store.lookup("msmith")
    assert entry is not None and entry.dn == f"cn=Mary Smith,{AD_BASE}"  # type: ignore[attr-defined]
    assert (await login(store, "msmith", "nope")).outcome is Outcome.FAIL
    # The posix users below ou=people are not AD users: not found under this filter.
    assert (await login(store, "binder", PASSWORD)).reason is Reason.USER_UNKNOWN


async def test_pool_reuses_connections(directory: Slapd, stores: list[LdapStore]) -> None:
    store = opened(stores, directory, auth_bind=True)
    before = directory.accepted()
    for _ in range(20):
        assert (await login(store, "binder", PASSWORD)).outcome is Outcome.OK
    # One search connection and one bind connection served all 20 logins.
    assert store.pool.opened == 2
    assert directory.accepted() - before == 2


async def test_failover_to_the_next_uri(directory: Slapd, stores: list[LdapStore]) -> None:
    refusing = f"ldap://127.0.0.1:{free_tcp_port()}"  # nothing listens there
    store = opened(stores, directory, uris=[refusing, directory.uri], auth_bind=True)
    assert (await login(store, "binder", PASSWORD)).outcome is Outcome.OK
    assert (await login(store, "other", PASSWORD)).outcome is Outcome.FAIL  # not other's
    # A first server that swallows the connection (a full backlog, as a host that drops
    # packets): its share of the timeout runs out and the second one answers in time.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        filler = [socket.socket() for _ in range(3)]
        for sock in filler:
            sock.setblocking(False)
            sock.connect_ex(silent.getsockname())  # the backlog takes one; then SYNs drop
        try:
            uris = [f"ldap://127.0.0.1:{silent.getsockname()[1]}", directory.uri]
            store = opened(stores, directory, uris=uris, auth_bind=True, timeout=2.0)
            # Given the whole timeout, the first connect would use it up: a TEMPFAIL.
            # Two connections fail over here (the search's and the bind's), 1 s each.
            started = time.monotonic()
            assert (await login(store, "binder", PASSWORD)).outcome is Outcome.OK
            assert time.monotonic() - started < 2 * 2.0
        finally:
            for sock in filler:
                sock.close()


async def test_hashes_made_by_slappasswd(directory: Slapd, stores: list[LdapStore]) -> None:
    """userPassword values as OpenLDAP's own tool writes them verify here too."""
    slappasswd = require_binary("slappasswd")
    for scheme in ("{SSHA}", "{SHA}", "{SMD5}", "{MD5}"):
        made = subprocess.run(
            [slappasswd, "-h", scheme, "-s", PASSWORD], capture_output=True, text=True, check=True
        ).stdout.strip()
        uid = "slap" + scheme.strip("{}").lower()
        directory.add(person_ldif(uid, made))
        store = opened(stores, directory)
        assert (await login(store, uid, PASSWORD)).outcome is Outcome.OK, scheme
        assert (await login(store, uid, "nope")).outcome is Outcome.FAIL, scheme


def tls_settings(server: Slapd, ca: str, **values: Any) -> dict[str, Any]:
    return {"tls_ca_cert_file": ca, "auth_bind": True, **values}


async def test_starttls_and_ldaps_check_the_ca(
    directory: Slapd, stores: list[LdapStore], tmp_path: Any
) -> None:
    assert directory.tls is not None
    good = str(directory.tls.cert)  # self-signed: its own CA
    wrong = str(make_self_signed(tmp_path / "other", "127.0.0.1").cert)
    for values in ({"tls": True}, {"uris": directory.ldaps_uri}):
        store = opened(stores, directory, **tls_settings(directory, good, **values))
        assert (await login(store, "binder", PASSWORD)).outcome is Outcome.OK
        # A certificate no configured CA signed: an outage (temporary), never a login.
        store = opened(stores, directory, **tls_settings(directory, wrong, **values))
        verdict = await login(store, "binder", PASSWORD)
        assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, Reason.STORE_ERROR)
        with pytest.raises(StoreUnavailable):
            await store.lookup("binder")
        # tls_require_cert = never: the operator's explicit choice to skip the check.
        values = {**values, "tls_require_cert": "never"}
        store = opened(stores, directory, **tls_settings(directory, wrong, **values))
        assert (await login(store, "binder", PASSWORD)).outcome is Outcome.OK


async def test_a_directory_that_never_answers_times_out(
    directory: Slapd, stores: list[LdapStore]
) -> None:
    """A listener that accepts (the kernel completes the handshake) and never answers,
    as a hung slapd does: each lookup is an outage after ``timeout``, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        uri = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        store = opened(stores, directory, uris=uri, timeout=0.5)
        for _ in range(3):
            started = time.monotonic()
            verdict = await login(store, "ssha", PASSWORD)
            assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, Reason.STORE_ERROR)
            assert time.monotonic() - started < 1.5
