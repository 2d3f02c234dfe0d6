"""``nologin`` refuses by default (issue 15, SPEC §12): the authenticator's verdicts.

Dovecot 2.3 answers OK with ``nologin`` and ``reason=`` on the auth-client socket; Exim
and Postfix ignore both, so authbridge turns that OK into a FAIL unless it runs in
Dovecot-compatible mode. Every mechanism's path and every store kind is checked here; the
wire lines are in test_nologin_wire.py and the real MTAs in tests/mta/test_nologin.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.cache import AuthCache, CacheSettings
from authbridge.checks.hashing import Hasher
from authbridge.config import parse_config
from authbridge.core.mechanisms.base import NeedCredentials, VerifyPlain
from authbridge.core.session import Credential, CredentialsFound, RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict, refuse_nologin
from authbridge.observability.events import FAIL2BAN_WORDS
from authbridge.observability.metrics import result_label
from authbridge.passdb.sql import SqlStore
from authbridge.passdb.sql_sqlite import SqliteBackend
from tests.sql.conftest import DEPLOY, make_sqlite
from tests.support.credentials import CramAnswer, authenticator_on, verdict_on
from tests.support.memory_store import MemoryStore

USERS = """\
alice:{PLAIN}alice-pw
moved:{PLAIN}moved-pw::::::nologin reason=Mailbox_moved
silent:{PLAIN}silent-pw::::::nologin
quick:{PLAIN}quick-pw::::::nologin nodelay reason=Gone
noted:{PLAIN}noted-pw::::::reason=Just_a_note
many:{PLAIN}many-pw::::::quota=1G nologin proxy host=192.0.2.9 reason=Elsewhere
cram:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56::::::nologin
"""
CHALLENGE = b"<1896.697170952@postoffice.example.net>"


def info() -> RequestInfo:
    return RequestInfo(id=1, mechanism="PLAIN", service="smtp", rip="192.0.2.1", secured=True)


def cram(user: str, password: bytes, challenge: bytes = CHALLENGE) -> CramAnswer:
    return CramAnswer(user, password, challenge)


@pytest.fixture(params=["task", "inline"])
def auth(request: pytest.FixtureRequest, tmp_path: Path) -> Authenticator:
    """The same users behind the task path (async lookup) and the inline path (get)."""
    return authenticator_on(request.param, USERS, tmp_path)


async def verdict_of(auth: Authenticator, credential: Credential | CramAnswer) -> Verdict:
    return await verdict_on(auth, info(), credential)


@pytest.mark.parametrize(
    "credential",
    [VerifyPlain("moved", "", b"moved-pw"), VerifyPlain("MOVED", "moved", b"moved-pw")],
    ids=["plain", "authzid-and-case"],
)
async def test_right_password_of_a_nologin_user_fails_with_its_reason(
    auth: Authenticator, credential: VerifyPlain
) -> None:
    verdict = await verdict_of(auth, credential)
    assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.NOLOGIN
    assert verdict.user == "moved" and verdict.original_user == credential.authcid
    assert verdict.fields == (("reason", "Mailbox_moved"),) and verdict.had_store_fields
    assert not verdict.nodelay


async def test_wrong_password_of_a_nologin_user_is_a_plain_mismatch(auth: Authenticator) -> None:
    # Exactly Dovecot's FAIL: no reason=, nothing that tells the account is disabled.
    verdict = await verdict_of(auth, VerifyPlain("moved", "", b"guess"))
    assert verdict.reason is Reason.PASSWORD_MISMATCH
    assert verdict.fields == () and not verdict.had_store_fields


async def test_compat_keeps_dovecots_ok(auth: Authenticator) -> None:
    auth.nologin_refuses = False
    verdict = await verdict_of(auth, VerifyPlain("moved", "", b"moved-pw"))
    assert verdict.ok and verdict.fields == (("nologin", None), ("reason", "Mailbox_moved"))


async def test_without_a_reason_the_fail_has_no_fields(auth: Authenticator) -> None:
    verdict = await verdict_of(auth, VerifyPlain("silent", "", b"silent-pw"))
    assert verdict.reason is Reason.NOLOGIN
    assert verdict.fields == () and not verdict.had_store_fields  # no empty field on the wire


async def test_only_reason_survives_and_nodelay_is_kept(auth: Authenticator) -> None:
    many = await verdict_of(auth, VerifyPlain("many", "", b"many-pw"))
    assert many.reason is Reason.NOLOGIN and many.fields == (("reason", "Elsewhere"),)
    quick = await verdict_of(auth, VerifyPlain("quick", "", b"quick-pw"))
    assert quick.reason is Reason.NOLOGIN and quick.nodelay


async def test_reason_alone_and_ordinary_users_still_log_in(auth: Authenticator) -> None:
    noted = await verdict_of(auth, VerifyPlain("noted", "", b"noted-pw"))
    assert noted.ok and noted.fields == (("reason", "Just_a_note"),)
    assert (await verdict_of(auth, VerifyPlain("alice", "", b"alice-pw"))).ok


async def test_cram_md5(auth: Authenticator) -> None:
    right = await verdict_of(auth, cram("moved", b"moved-pw"))
    assert right.reason is Reason.NOLOGIN and right.fields == (("reason", "Mailbox_moved"),)
    wrong = await verdict_of(auth, cram("moved", b"guess"))
    # A wrong digest fails after the lookup; Dovecot's FAIL (compat mode, SPEC §7) then
    # carries the entry's fields but nologin. The default mode refuses nologin users and
    # tells a guesser nothing of it (SPEC §12): no fields, as for a wrong password.
    assert wrong.reason is Reason.PASSWORD_MISMATCH
    assert wrong.fields == () and not wrong.had_store_fields
    auth.nologin_refuses = False
    compat = await verdict_of(auth, cram("moved", b"guess"))
    assert compat.reason is Reason.PASSWORD_MISMATCH
    assert compat.fields == (("reason", "Mailbox_moved"),)
    auth.nologin_refuses = True
    # From a {CRAM-MD5} stored context (the password is "secret").
    stored = await verdict_of(auth, cram("cram", b"secret"))
    assert stored.reason is Reason.NOLOGIN
    auth.nologin_refuses = False
    assert (await verdict_of(auth, cram("moved", b"moved-pw"))).ok


@pytest.mark.parametrize("algorithm", ["SHA-1", "SHA-256"])
async def test_scram_gets_the_refusal_in_place_of_the_final_ok(
    auth: Authenticator, algorithm: str
) -> None:
    """The proof is checked later by the mechanism: the lookup hands it the keys and the
    verdict to send once the proof holds; a wrong proof still fails as a mismatch there."""
    found = await auth.check(info(), NeedCredentials("moved", "SCRAM-" + algorithm))
    assert isinstance(found, CredentialsFound)
    assert found.verdict.reason is Reason.NOLOGIN
    assert found.verdict.fields == (("reason", "Mailbox_moved"),)
    auth.nologin_refuses = False
    found = await auth.check(info(), NeedCredentials("moved", "SCRAM-" + algorithm))
    assert isinstance(found, CredentialsFound) and found.verdict.ok


async def test_cache_keeps_dovecots_verdict_and_the_rule_applies_on_top() -> None:
    cache = AuthCache(CacheSettings(enabled=True))
    auth = Authenticator([MemoryStore(USERS)], Hasher(), cache=cache)
    first = await auth.check(info(), VerifyPlain("moved", "", b"moved-pw"))
    assert isinstance(first, Verdict) and first.reason is Reason.NOLOGIN
    assert cache.misses == 1 and len(cache) == 1
    second = await auth.check(info(), VerifyPlain("moved", "", b"moved-pw"))
    assert cache.hits == 1 and second == first
    # The cached entry is Dovecot's OK, so switching the rule off needs no flush.
    auth.nologin_refuses = False
    third = await auth.check(info(), VerifyPlain("moved", "", b"moved-pw"))
    assert isinstance(third, Verdict) and third.ok and cache.hits == 2


def test_refuse_nologin_leaves_every_other_verdict_alone() -> None:
    fields = (("nologin", None), ("reason", "x"))
    for verdict in (
        Verdict(Outcome.FAIL, "u", Reason.FORCED_FAIL, fields=fields),
        Verdict(Outcome.TEMPFAIL, "u", Reason.STORE_ERROR, fields=fields),
        Verdict(Outcome.OK, "u", fields=(("nologinx", None),), had_store_fields=True),
        Verdict(Outcome.OK, "u"),
    ):
        assert refuse_nologin(verdict) is verdict


def test_setting_defaults_on_and_compat_turns_it_off() -> None:
    assert parse_config("").policy.nologin_refuses
    assert not parse_config("[policy]\nnologin_refuses = false\n").policy.nologin_refuses
    assert not parse_config("").dovecot_compatible().policy.nologin_refuses


# ---------------------------------------------------------------------- SQL (SQLite)


def deploy_sqlite_query() -> str:
    """The password_query shipped in deploy/sql/authbridge-sqlite.toml."""
    shipped = tomllib.loads((DEPLOY / "authbridge-sqlite.toml").read_text())
    return str(shipped["store"][0]["password_query"])


@pytest.fixture
def sql_auth(tmp_path: Path) -> Authenticator:
    path = make_sqlite(
        tmp_path / "users.sqlite",
        [
            # username, password, active, allow_nets, nologin, reason
            ("alice@example.org", "{PLAIN}alice-pw", 1, None, None, "not sent: nologin is off"),
            ("moved@example.org", "{PLAIN}moved-pw", 1, None, 1, "Moved to example.net"),
            ("silent@example.org", "{PLAIN}silent-pw", 1, None, 1, None),
        ],
    )
    return Authenticator([SqlStore(SqliteBackend(str(path)), deploy_sqlite_query())], Hasher())


async def test_sql_nologin_column_refuses(sql_auth: Authenticator) -> None:
    moved = await verdict_of(sql_auth, VerifyPlain("moved@example.org", "", b"moved-pw"))
    assert moved.reason is Reason.NOLOGIN
    assert moved.fields == (("reason", "Moved to example.net"),)
    silent = await verdict_of(sql_auth, VerifyPlain("silent@example.org", "", b"silent-pw"))
    assert silent.reason is Reason.NOLOGIN and silent.fields == ()
    wrong = await verdict_of(sql_auth, VerifyPlain("moved@example.org", "", b"guess"))
    assert wrong.reason is Reason.PASSWORD_MISMATCH and wrong.fields == ()
    alice = await verdict_of(sql_auth, VerifyPlain("alice@example.org", "", b"alice-pw"))
    assert alice.ok and alice.fields == ()  # the CASE leaves reason out when nologin is NULL
    cram_md5 = await verdict_of(sql_auth, cram("moved@example.org", b"moved-pw"))
    assert cram_md5.reason is Reason.NOLOGIN


async def test_sql_nologin_in_compat_mode_is_dovecots_ok(sql_auth: Authenticator) -> None:
    sql_auth.nologin_refuses = False
    moved = await verdict_of(sql_auth, VerifyPlain("moved@example.org", "", b"moved-pw"))
    assert moved.ok
    assert moved.fields == (("nologin", "1"), ("reason", "Moved to example.net"))


def test_counted_as_fail_and_never_as_a_guess_for_fail2ban() -> None:
    refused = refuse_nologin(Verdict(Outcome.OK, "u", fields=(("nologin", None),)))
    assert result_label(refused) == "fail"  # like a store entry marked "fail"
    assert Reason.NOLOGIN not in FAIL2BAN_WORDS
