"""Stored-value parsing (protocol.md §8.1), encodings, and the passwd-file [NN] suffix."""

from __future__ import annotations

import pytest

from authbridge.schemes import (
    SchemeError,
    StoredPassword,
    apply_compat_suffix,
    parse_stored,
    verify_password,
)

MD5_CRYPT = "$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{PLAIN}test", StoredPassword("PLAIN", "test", None)),
        ("{plain}test", StoredPassword("PLAIN", "test", None)),
        ("{Plain.B64}dGVzdA==", StoredPassword("PLAIN", "dGVzdA==", "b64")),
        ("{plain.base64}dGVzdA==", StoredPassword("PLAIN", "dGVzdA==", "b64")),
        ("{sha1.HEX}ab", StoredPassword("SHA1", "ab", "hex")),
        ("{PLAIN.foo}x", StoredPassword("PLAIN.FOO", "x", None)),
        ("{PLAIN}a}b{c", StoredPassword("PLAIN", "a}b{c", None)),
        ("{PLAIN}", StoredPassword("PLAIN", "", None)),
        ("secret", StoredPassword("CRYPT", "secret", None)),
        ("{nobrace", StoredPassword("CRYPT", "{nobrace", None)),
        (MD5_CRYPT, StoredPassword("MD5-CRYPT", MD5_CRYPT, None)),
        (MD5_CRYPT + "$extra$x", StoredPassword("MD5-CRYPT", MD5_CRYPT, None)),
        ("$1$nosecond", StoredPassword("CRYPT", "$1$nosecond", None)),
        ("{PLAIN}$1$a$b", StoredPassword("PLAIN", "$1$a$b", None)),
    ],
)
def test_parse(value: str, expected: StoredPassword) -> None:
    assert parse_stored(value) == expected


def test_default_scheme_is_applied_and_case_folded() -> None:
    assert parse_stored("test", default_scheme="plain") == StoredPassword("PLAIN", "test", None)
    assert parse_stored("dGVzdA==", "PLAIN.b64") == StoredPassword("PLAIN", "dGVzdA==", "b64")


def test_unprefixed_value_is_crypt_and_does_not_match_itself() -> None:
    assert verify_password(parse_stored("secret"), b"secret", "u") is False


@pytest.mark.parametrize(
    "value",
    [
        "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=",  # base64 (default)
        "{SHA1}a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",  # hex, detected by length
        "{SHA1}A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",  # upper-case hex
        "{SHA1.b64}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
        "{SHA1} qUqP5cyxm6Yc TAhz05Hph5gvu9M=",  # whitespace skipped, like Dovecot
        "{PLAIN-MD5}CY9rzUYh03PK3k6DJie09g==",  # base64, detected by length
        "{LDAP-MD5}098f6bcd4621d373cade4e832627b4f6",  # hex, detected by length
        "{ldap-md5.HEX}098F6BCD4621D373CADE4E832627B4F6",
        "{CRAM-MD5}4C03T94Nx1oXpVcDmjpTOMd0MwR3fczTdvMyvuaNLPY=",
    ],
)
def test_encoding_detection(value: str) -> None:
    assert verify_password(parse_stored(value), b"test", "u") is True


@pytest.mark.parametrize(
    "value",
    [
        "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M",  # missing padding: Dovecot rejects
        "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M==",  # excess padding
        "{SHA1}qUqP5cyxm6YcTAhz05Hph5g!u9M=",  # not base64
        "{SHA1.hex}qUqP5cyxm6YcTAhz05Hph5gvu9M=",  # explicit hex: no base64 fallback
        "{SHA256}qUqP5cyxm6YcTAhz05Hph5gvu9M=",  # wrong length
        "{PLAIN.hex}7465737",  # odd hex
        "{SSHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",  # no salt
        "{SSHA512}AAAA",
        "{SMD5}CY9rzUYh03PK3k6DJie09g==",
        "{MD5}not-a-digest",
        "{MD5-CRYPT}$1$toolongsaltvalue$OjZhLh4P.gF1lxYEbLZ3e/",
        "{SHA512-CRYPT}$6$saltsalt$short",
        "{SHA512-CRYPT}plainly-wrong",
        "{SHA256-CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTq",
        "{DES-CRYPT}toolongforDESx",
        "{DES-CRYPT}!!!!!!!!!!!!!",
        "{BLF-CRYPT}$2y$05$tooshort",
        "{BLF-CRYPT}$2y$99$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$garbage",
        "{ARGON2I}not-argon",
        "{PBKDF2}$1$salt$notanumber$50a83cafdc517b9f46519415e53c6a858908680a",
        "{PBKDF2}$1$salt$5000$50a83caf",
        "{PBKDF2}$2$salt$5000$50a83cafdc517b9f46519415e53c6a858908680a",
        "{SCRAM-SHA-1}100,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
        "{SCRAM-SHA-1}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=",
        "{SCRAM-SHA-256}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
        "{PLAIN-TRUNC}test",
        "{PLAIN-TRUNC}x4-test",
        "{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db",
        "{NOSUCH}whatever",
        "{PLAIN.foo}test",
        "{}test",
    ],
)
def test_broken_data_is_a_scheme_error_that_hides_the_data(value: str) -> None:
    stored = parse_stored(value)
    with pytest.raises(SchemeError) as info:
        verify_password(stored, b"test", "testuser1")
    message = str(info.value)
    assert stored.scheme in message
    if len(stored.data) >= 4:
        assert stored.data not in message
    assert "test" not in message.replace(stored.scheme, "").lower().replace("testuser1", "")


@pytest.mark.parametrize("value", ["{CRYPT}", "{CRYPT}!", "{CRYPT}*", "{CRYPT}!$6$x$y", ""])
def test_locked_or_empty_crypt_never_matches(value: str) -> None:
    """Dovecot treats these as a mismatch, not an internal error (shadow's lock idiom)."""
    stored = parse_stored(value)
    assert verify_password(stored, b"", "u") is False
    assert verify_password(stored, b"!", "u") is False


def test_digest_md5_needs_a_user() -> None:
    with pytest.raises(SchemeError, match="DIGEST-MD5"):
        verify_password(parse_stored("{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db5d"), b"t", "")


def test_repr_and_str_hide_the_data() -> None:
    stored = parse_stored("{PLAIN}hunter2-secret")
    for text in (repr(stored), str(stored), f"{stored}", f"{stored!r}"):
        assert "hunter2" not in text
        assert "PLAIN" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("098f6bcd4621d373cade4e832627b4f6[34]", "{PLAIN-MD5}098f6bcd4621d373cade4e832627b4f6"),
        (
            "77c1a8c437c9b08ba2f460fe5d58db5d[56]",
            "{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db5d",
        ),
        ("//EsnG9FLTKjo[13]", "{CRYPT}//EsnG9FLTKjo"),
        ("//EsnG9FLTKjo[00]", "{CRYPT}//EsnG9FLTKjo"),
        ("{PLAIN}abc[34]", "{PLAIN}abc[34]"),
        ("$1$abc[34]", "$1$abc[34]"),
        ("[34]", "[34]"),
        ("a[3x]", "a[3x]"),
        ("plainvalue", "plainvalue"),
    ],
)
def test_passwd_file_compat_suffix(value: str, expected: str) -> None:
    assert apply_compat_suffix(value) == expected


def test_passwd_file_compat_digest_md5_must_be_32_chars() -> None:
    with pytest.raises(SchemeError, match="DIGEST-MD5"):
        apply_compat_suffix("77c1a8c4[56]")


def test_compat_suffix_values_verify() -> None:
    stored = parse_stored(apply_compat_suffix("098f6bcd4621d373cade4e832627b4f6[34]"))
    assert verify_password(stored, b"test", "u") is True
    stored = parse_stored(apply_compat_suffix("//EsnG9FLTKjo[13]"))
    assert verify_password(stored, b"test", "u") is True
