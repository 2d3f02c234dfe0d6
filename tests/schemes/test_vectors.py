"""Known-answer tests: Dovecot's own vectors (protocol.md §8.4) for the password ``test``."""

from __future__ import annotations

import pytest

from authbridge.schemes import parse_stored, verify_password

VECTORS = [
    "{PLAIN}test",
    "{PLAIN.b64}dGVzdA==",
    "{PLAIN.hex}74657374",
    "{CLEAR}test",
    "{CLEARTEXT}test",
    "{PLAIN-TRUNC}4-test",
    "{CRYPT}//EsnG9FLTKjo",
    "{DES-CRYPT}//EsnG9FLTKjo",
    "{MD5}$1$wmyrgRuV$kImF6.9MAFQNHe23kq5vI/",
    "{MD5-CRYPT}$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/",
    "$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/",
    "{PLAIN-MD5}098f6bcd4621d373cade4e832627b4f6",
    "{MD5}098f6bcd4621d373cade4e832627b4f6",
    "{MD5}CY9rzUYh03PK3k6DJie09g==",
    "{LDAP-MD5}CY9rzUYh03PK3k6DJie09g==",
    "{PLAIN-MD4}db346d691d7acc4dc2625db19f9e3f52",
    "{SMD5}JTu1KRwptKZJg/RLd+6Vn5GUd0M=",
    "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SHA1.hex}a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "{SSHA}H/zrDv8FXUu1JmwvVYijfrYEF34jVZcO",
    "{SHA256}n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
    "{SSHA256}jwj+CQrCPydeErByDFo1Bc5JY/MsJv6Wm56ryf4vkVMBAgME",
    "{SHA512}7iaw3Ur350mqGo7jwQrpkj9hiYB3Lkc/iBml1JQODbJ6wYX4oOHV+E+IvIh/1nsUNzLDBMxfqa2Ob1f1ACio/w==",
    "{SSHA512}0RQ6hGxoVcmcQWIUNjoVyzj9XW6gOyKKr9L9xq+BBuByeVJVtELXu14ZJnSKxZhfSqEbFyoDh4SNruH5LqT/EAECAwQ=",
    "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
    "{HMAC-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
    "{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db5d",
    "{PBKDF2}$1$bUnT4Pl7yFtYX0KU$5000$50a83cafdc517b9f46519415e53c6a858908680a",
    "{SCRAM-SHA-1}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
    "{SCRAM-SHA-256}4096,LfNGSFqiFykEZ1xDAYlnKQ==,HACNf9CII7cMz3XjRy/Oh3Ae2LHApoDyNw74d3YtFws=,AQH0j7Hf8J12g8eNBadvzlNB2am3PxgNwFCFd3RxEaw=",
    "{BLF-CRYPT}$2y$05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
    "{CRYPT}$2y$05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
    # OTP values made and checked with doveadm pw 2.3.19 (no vector in Dovecot's tests).
    "{OTP}sha1 1024 2bf299806f6136df c93e33d6888375a8",
    "{OTP}md5 77 abcdef12 150413ee29ec69cc",
    "{OTP}md4 77 abcdef12 f16ae47d6bd66147",
    "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$f2iuP4aUeNMrgu34fhOkkg$1XSZZMWlIs0zmE+snlUIcLADO3GXbA2O/hsQmmc317k",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$vBb99oJ12p3WAdYlaMHz1A$jtFOtbo/sYV9OSlTxDo/nVNq3uArHd5GJSEx0ty85Cc",
]

SHA_CRYPT_PASSWORD = b"08/15!test~4711"
SHA_CRYPT_VECTORS = [
    "{SHA256-CRYPT}$5$rounds=1000$0123456789abcdef$K/DksR0DT01hGc8g/kt9McEgrbFMKi9qrb1jehe7hn4",
    "{SHA512-CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1",
    "{CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1",
]


@pytest.mark.parametrize("value", VECTORS)
def test_dovecot_vector(value: str) -> None:
    stored = parse_stored(value)
    assert verify_password(stored, b"test", "testuser1") is True
    assert verify_password(stored, b"Test", "testuser1") is False
    assert verify_password(stored, b"tes", "testuser1") is False
    assert verify_password(stored, b"", "testuser1") is False


@pytest.mark.parametrize("value", SHA_CRYPT_VECTORS)
def test_sha_crypt_vector(value: str) -> None:
    stored = parse_stored(value)
    assert verify_password(stored, SHA_CRYPT_PASSWORD, "u") is True
    assert verify_password(stored, b"08/15!test~4712", "u") is False


def test_digest_md5_depends_on_user_and_realm() -> None:
    stored = parse_stored("{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db5d")
    assert verify_password(stored, b"test", "testuser2") is False
    # user@realm is split at the last '@': "testuser1@" is user testuser1, realm "".
    assert verify_password(stored, b"test", "testuser1@") is True
