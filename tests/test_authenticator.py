"""Dovecot passdb semantics in the authenticator, against an in-memory passwd-file."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.cache import AuthCache, CacheSettings
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import Credential, RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from tests.support.credentials import CramAnswer, authenticator_on, settle, verdict_on
from tests.support.memory_store import MemoryStore

USERS = """\
userx:{PLAIN}secret
cram:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56
sha:{SHA512-CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1
lan:{PLAIN}pw::::::allow_nets=192.168.0.0/24
open:::::::nopassword
marked:{PLAIN}pw::::::nologin reason=Moved
quick:{PLAIN}pw::::::nodelay
disabled:{PLAIN}pw::::::fail nodelay nologin reason=Account_disabled
renamed:{PLAIN}pw::::::user=canonical@example.org
broken:{NOSUCHSCHEME}xyz
twox:{BLF-CRYPT}$2x$04$a4Z.K7wnIApXPmOTJ3XbI./BXTGtop9ZdixRLeUQ3ROu9sR/eY2D.
"""


def info(rip: str | None = None) -> RequestInfo:
    return RequestInfo(id=1, mechanism="PLAIN", service="smtp", rip=rip, secured=True)


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator([MemoryStore(USERS)], Hasher())


async def test_right_password(auth: Authenticator) -> None:
    verdict = await auth.check(info(), VerifyPlain("userx", "", b"secret"))
    assert verdict.outcome is Outcome.OK and verdict.user == "userx"


async def test_wrong_password_and_unknown_user_look_the_same_on_the_wire(
    auth: Authenticator,
) -> None:
    wrong = await auth.check(info(), VerifyPlain("userx", "", b"nope"))
    unknown = await auth.check(info(), VerifyPlain("nobody", "", b"nope"))
    assert wrong.outcome is unknown.outcome is Outcome.FAIL
    assert wrong.reason is Reason.PASSWORD_MISMATCH and unknown.reason is Reason.USER_UNKNOWN
    assert (wrong.fields, unknown.fields) == ((), ())


async def test_username_is_lowercased_and_original_kept(auth: Authenticator) -> None:
    verdict = await auth.check(info(), VerifyPlain("UserX", "", b"secret"))
    assert verdict.ok and verdict.user == "userx" and verdict.original_user == "UserX"


async def test_disallowed_username_characters_fail(auth: Authenticator) -> None:
    verdict = await auth.check(info(), VerifyPlain("user+x", "", b"secret"))
    assert verdict.reason is Reason.INVALID_USERNAME
    assert verdict.user is None and verdict.original_user == "user+x"


async def test_a_different_authzid_is_refused(auth: Authenticator) -> None:
    verdict = await auth.check(info(), VerifyPlain("userx", "other", b"secret"))
    assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.AUTHZ_REFUSED


async def test_expensive_scheme_verifies_off_loop(auth: Authenticator) -> None:
    ok = await auth.check(info(), VerifyPlain("sha", "", b"08/15!test~4711"))
    bad = await auth.check(info(), VerifyPlain("sha", "", b"08/15!test~4712"))
    assert ok.ok and not bad.ok


async def test_allow_nets(auth: Authenticator) -> None:
    inside = await auth.check(info("192.168.0.7"), VerifyPlain("lan", "", b"pw"))
    outside = await auth.check(info("10.1.1.1"), VerifyPlain("lan", "", b"pw"))
    no_rip = await auth.check(info(None), VerifyPlain("lan", "", b"pw"))
    assert inside.ok and inside.had_store_fields and inside.fields == ()
    assert outside.reason is Reason.NETWORK_DENIED and no_rip.reason is Reason.NETWORK_DENIED


async def test_nopassword_accepts_anything(auth: Authenticator) -> None:
    assert (await auth.check(info(), VerifyPlain("open", "", b"whatever"))).ok


async def test_visible_fields_on_success_and_none_on_a_wrong_password(
    auth: Authenticator,
) -> None:
    auth.nologin_refuses = False  # Dovecot's own verdict (tests/policy/test_nologin.py)
    ok = await auth.check(info(), VerifyPlain("marked", "", b"pw"))
    bad = await auth.check(info(), VerifyPlain("marked", "", b"no"))
    assert ok.fields == (("nologin", None), ("reason", "Moved"))
    assert bad.fields == () and not bad.had_store_fields


async def test_a_forced_fail_refuses_the_right_password_and_carries_no_fields(
    auth: Authenticator,
) -> None:
    verdict = await auth.check(info(), VerifyPlain("disabled", "", b"pw"))
    assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.FORCED_FAIL
    assert verdict.fields == () and not verdict.nodelay  # rolled back, as Dovecot 2.3


async def test_nodelay_and_user_override(auth: Authenticator) -> None:
    # Fields of a failed lookup are rolled back, nodelay included (as Dovecot 2.3).
    assert not (await auth.check(info(), VerifyPlain("quick", "", b"no"))).nodelay
    renamed = await auth.check(info(), VerifyPlain("renamed", "", b"pw"))
    assert renamed.user == "canonical@example.org"


async def test_malformed_stored_password_is_a_plain_failure(auth: Authenticator) -> None:
    """The entry's fault, not the server's (issue #17): a FAIL, never a temporary failure."""
    verdict = await auth.check(info(), VerifyPlain("broken", "", b"x"))
    assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.BROKEN_HASH


async def test_a_wellformed_hash_we_cannot_verify_is_an_internal_failure(
    auth: Authenticator,
) -> None:
    """$2x$ (bcrypt's old 8-bit bug) cannot be verified for a non-ASCII password here."""
    assert (await auth.check(info(), VerifyPlain("twox", "", b"pw"))).ok
    verdict = await auth.check(info(), VerifyPlain("twox", "", "pw\u00e9".encode()))
    assert verdict.outcome is Outcome.TEMPFAIL and verdict.reason is Reason.BROKEN_HASH


async def test_cram_md5_from_stored_context_and_from_plain(auth: Authenticator) -> None:
    challenge = b"<8327461095827361.1700000000@mail.example.org>"

    async def cram(user: str, password: bytes) -> Verdict:
        answer = CramAnswer(user, password, challenge)
        return settle(answer.mechanism, await auth.check(info(), answer.credential))

    assert (await cram("cram", b"secret")).ok
    assert (await cram("userx", b"secret")).ok
    assert not (await cram("userx", b"other")).ok
    not_possible = await cram("sha", b"secret")
    assert not_possible.reason is Reason.SCHEME_NOT_AVAILABLE


FIELDS_USERS = """\
fieldx:{PLAIN}pw::::::quota=1G flagonly
moved:{PLAIN}pw::::::nologin reason=Mailbox_moved nodelay
renamex:{PLAIN}pw::::::user=renamed
failx:{PLAIN}pw::::::fail quota=1G
open:::::::nopassword
"""
CHALLENGE = b"<8327461095827361.1700000000@mail.example.org>"


def _cram(user: str, password: bytes) -> CramAnswer:
    return CramAnswer(user, password, CHALLENGE)


@pytest.fixture(params=["task", "inline"])
def fields_auth(request: pytest.FixtureRequest, tmp_path: Path) -> Authenticator:
    """FIELDS_USERS behind the task path (async lookup) and the inline path (check_now)."""
    return authenticator_on(request.param, FIELDS_USERS, tmp_path)


async def _verdict(auth: Authenticator, credential: Credential | CramAnswer) -> Verdict:
    return await verdict_on(auth, info(), credential)


@pytest.mark.parametrize("compat", [False, True], ids=["default", "compat"])
async def test_a_wrong_cram_md5_digest_keeps_the_entrys_fields_but_nologin(
    fields_auth: Authenticator, compat: bool
) -> None:
    """Dovecot compares the digest after its lookup imported the entry (SPEC §7)."""
    auth = fields_auth
    auth.nologin_refuses = not compat
    fields = await _verdict(auth, _cram("fieldx", b"guess"))
    assert fields.reason is Reason.PASSWORD_MISMATCH
    assert fields.fields == (("quota", "1G"), ("flagonly", None)) and not fields.nodelay
    moved = await _verdict(auth, _cram("moved", b"guess"))
    if compat:
        assert moved.fields == (("reason", "Mailbox_moved"), ("nodelay", None)) and moved.nodelay
    else:  # a nologin user refused by default: a guess learns nothing, waits the delay
        assert moved.fields == () and not moved.had_store_fields and not moved.nodelay
    renamed = await _verdict(auth, _cram("RenameX", b"guess"))
    assert renamed.user == "renamed" and renamed.original_user == "RenameX"
    assert renamed.fields == () and renamed.had_store_fields  # the empty field on the wire
    # A `fail` entry fails the lookup itself: no fields, right digest or not.
    for password in (b"pw", b"guess"):
        forced = await _verdict(auth, _cram("failx", password))
        assert forced.reason is Reason.FORCED_FAIL and forced.fields == ()
    # PLAIN's wrong password rolls the fields back, as before.
    plain = await _verdict(auth, VerifyPlain("fieldx", "", b"guess"))
    assert plain.fields == () and not plain.had_store_fields


@pytest.mark.parametrize("byte", [b"\x01", b"\t", b"\r", b"\n"])
@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
async def test_a_password_with_dovecots_illegal_bytes_is_refused_unlooked_up(
    fields_auth: Authenticator, byte: bytes, cache: bool
) -> None:
    """Even a nopassword user; the FAIL names the user as typed, no rename applied."""
    auth = fields_auth
    auth.cache = AuthCache(CacheSettings(enabled=cache))
    lookups: list[str] = []
    auth.on_lookup = lambda store, result, seconds: lookups.append(result)
    for typed in ("open", "RenameX", "nobody"):
        verdict = await _verdict(auth, VerifyPlain(typed, "", b"a" + byte + b"b"))
        assert verdict.outcome is Outcome.FAIL and verdict.reason is Reason.MALFORMED
        assert verdict.user == typed.lower() and verdict.original_user == typed
        assert verdict.fields == () and not verdict.had_store_fields
    assert lookups == []
    # Only the bytes before a NUL count (a C string), other control bytes are data.
    assert (await _verdict(auth, VerifyPlain("open", "", b"a\x00" + byte))).ok
    assert (await _verdict(auth, VerifyPlain("open", "", b"\x02\x1b\x7f\xff"))).ok
    # An invalid name is still refused as such first.
    invalid = await _verdict(auth, VerifyPlain("bad name", "", byte))
    assert invalid.reason is Reason.INVALID_USERNAME
