"""Every password scheme takes any password bytes and any user text as data.

The check path hands the schemes the password exactly as the client sent it (any bytes
but NUL, any length) and the user name as client text (bytes that are not UTF-8 held as
surrogates). A usable stored value must then give True or False, never an exception:
an exception there would be counted as an internal error and answered TEMPFAIL, which
a client could trigger at will.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authbridge import schemes
from authbridge.schemes import StoredPassword
from tests.fuzz.settings import EXAMPLES, FUZZ

#: Schemes whose verification takes real CPU get fewer examples.
CHEAP_EXAMPLES = settings(FUZZ, max_examples=max(20, EXAMPLES // 3))
COSTLY_EXAMPLES = settings(FUZZ, max_examples=max(5, EXAMPLES // 30))

#: Lowest rounds each costly scheme accepts, so the test stays quick.
ROUNDS = {"BLF-CRYPT": 4, "SHA256-CRYPT": 1000, "SHA512-CRYPT": 1000, "PBKDF2": 1}
SCRAM_ROUNDS = 4096
USER = "user@example.org"
PASSWORD = b"secret"

PASSWORDS = st.binary(max_size=200).map(lambda data: data.replace(b"\0", b""))
#: Never empty: an empty name is refused before any store or scheme sees it.
USERS = st.one_of(
    st.just(USER),
    st.binary(min_size=1, max_size=40).map(lambda data: data.decode("utf-8", "surrogateescape")),
)


@functools.cache
def _stored(scheme: str) -> StoredPassword:
    rounds = SCRAM_ROUNDS if scheme.startswith("SCRAM-") else ROUNDS.get(scheme)
    return schemes.parse_stored(schemes.generate(scheme, PASSWORD, USER, rounds))


def _is_costly(scheme: str) -> bool:
    return schemes.is_expensive(_stored(scheme))


ALL = schemes.available_schemes()
CHEAP = [s for s in ALL if not _is_costly(s)]
COSTLY = [s for s in ALL if _is_costly(s)]


def _verify_any(scheme: str, password: bytes, user: str) -> None:
    assert isinstance(schemes.verify_password(_stored(scheme), password, user), bool)


@pytest.mark.parametrize("scheme", CHEAP)
@CHEAP_EXAMPLES
@given(password=PASSWORDS, user=USERS)
def test_cheap_scheme_takes_any_password_and_user(scheme: str, password: bytes, user: str) -> None:
    _verify_any(scheme, password, user)


@pytest.mark.parametrize("scheme", COSTLY)
@COSTLY_EXAMPLES
@given(password=PASSWORDS, user=USERS)
def test_costly_scheme_takes_any_password_and_user(scheme: str, password: bytes, user: str) -> None:
    _verify_any(scheme, password, user)


@pytest.mark.parametrize("scheme", ALL)
@CHEAP_EXAMPLES
@given(user=USERS)
def test_derived_secrets_take_any_user(scheme: str, user: str) -> None:
    """What CRAM-MD5, SCRAM and DIGEST-MD5 derive from a stored value, for any user."""
    stored = _stored(scheme)
    # A scheme that cannot serve the mechanism says so; it does not crash.
    with contextlib.suppress(schemes.SchemeError):
        schemes.cram_md5_context(stored)
    with contextlib.suppress(schemes.SchemeError):
        schemes.digest_md5_secret(stored, user)
    for algorithm in ("SHA-1", "SHA-256"):
        with contextlib.suppress(schemes.SchemeError):
            schemes.scram_credentials(stored, algorithm, user)
