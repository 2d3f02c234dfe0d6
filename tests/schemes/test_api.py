"""The public API the core uses: generate/verify round trips, derived credentials, flags."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from authbridge.schemes import (
    SchemeError,
    available_schemes,
    digest_md5_secret,
    generate,
    is_expensive,
    mechanisms_allowed,
    parse_stored,
    plaintext,
    scram_credentials,
    verify_password,
)

PASSWORDS = [b"test", "pässwörd€".encode(), b"x" * 120, b"with space 'single' \"double\""]
# Dovecot 2.3.19 `doveadm pw -l`.
DOVECOT_SCHEMES = [
    "OTP",
    "SHA1",
    "SSHA512",
    "SCRAM-SHA-256",
    "BLF-CRYPT",
    "PLAIN",
    "HMAC-MD5",
    "SHA512",
    "SHA",
    "DES-CRYPT",
    "CRYPT",
    "SSHA",
    "MD5-CRYPT",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "SCRAM-SHA-1",
    "SHA512-CRYPT",
    "CLEAR",
    "CLEARTEXT",
    "ARGON2I",
    "ARGON2ID",
    "SSHA256",
    "MD5",
    "PBKDF2",
    "SHA256",
    "CRAM-MD5",
    "PLAIN-TRUNC",
    "SHA256-CRYPT",
    "SMD5",
    "DIGEST-MD5",
    "LDAP-MD5",
]


def test_every_dovecot_scheme_is_available() -> None:
    assert set(DOVECOT_SCHEMES) <= set(available_schemes())


@pytest.mark.parametrize("scheme", DOVECOT_SCHEMES)
@pytest.mark.parametrize("password", PASSWORDS, ids=["ascii", "utf8", "long", "quotes"])
def test_generate_then_verify(scheme: str, password: bytes) -> None:
    rounds = 4 if scheme in ("BLF-CRYPT", "CRYPT") else None
    value = generate(scheme, password, "user@example.org", rounds)
    assert value.startswith("{" + scheme + "}")
    stored = parse_stored(value)
    assert verify_password(stored, password, "user@example.org") is True
    # Change the first byte: DES reads 8 characters, bcrypt 72 bytes.
    wrong = bytes([password[0] ^ 1]) + password[1:]
    assert verify_password(stored, wrong, "user@example.org") is False


@pytest.mark.parametrize("suffix", [".b64", ".HEX", ".base64"])
def test_generate_with_suffix(suffix: str) -> None:
    value = generate("plain" + suffix, b"a:b", "u")
    assert value.startswith("{PLAIN" + suffix.upper() + "}")
    assert verify_password(parse_stored(value), b"a:b", "u") is True
    assert plaintext(parse_stored(value)) == b"a:b"


def test_generate_unknown_scheme() -> None:
    with pytest.raises(SchemeError, match="NOSUCH"):
        generate("nosuch", b"x", "u")


def test_bcrypt_uses_the_first_72_bytes_like_dovecot() -> None:
    password = bytes(range(65, 65 + 26)) * 3 + b"tail"  # 82 bytes
    stored = parse_stored(generate("BLF-CRYPT", password, "u", rounds=4))
    assert verify_password(stored, password, "u") is True
    assert verify_password(stored, password[:72], "u") is True
    assert verify_password(stored, password[:72] + b"different", "u") is True
    assert verify_password(stored, password[:71], "u") is False


def test_blf_crypt_output_format() -> None:
    value = generate("BLF-CRYPT", b"x", "u")
    assert value.startswith("{BLF-CRYPT}$2y$05$") and len(value) == len("{BLF-CRYPT}") + 60
    assert generate("BLF-CRYPT", b"x", "u", rounds=6).startswith("{BLF-CRYPT}$2y$06$")


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$"])
def test_bcrypt_variants(prefix: str) -> None:
    value = "{BLF-CRYPT}" + prefix + "05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW"
    assert verify_password(parse_stored(value), b"test", "u") is True


def test_sha512_crypt_rounds_format() -> None:
    assert generate("SHA512-CRYPT", b"x", "u").startswith("{SHA512-CRYPT}$6$")
    assert "rounds=" not in generate("SHA512-CRYPT", b"x", "u")
    assert generate("SHA512-CRYPT", b"x", "u", 2000).startswith("{SHA512-CRYPT}$6$rounds=2000$")
    assert generate("SHA256-CRYPT", b"x", "u", 10).startswith("{SHA256-CRYPT}$5$rounds=1000$")


def test_plaintext() -> None:
    assert plaintext(parse_stored("{PLAIN}pw")) == b"pw"
    assert plaintext(parse_stored("{cleartext}pw")) == b"pw"
    assert plaintext(parse_stored("{PLAIN.hex}7077")) == b"pw"
    assert plaintext(parse_stored("{PLAIN-TRUNC}2-pw")) == b"pw"
    assert plaintext(parse_stored("{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=")) is None
    assert plaintext(parse_stored("{NOSUCH}pw")) is None
    with pytest.raises(SchemeError):
        plaintext(parse_stored("{PLAIN.b64}!!!"))


@pytest.mark.parametrize(
    ("value", "extra"),
    [
        ("{PLAIN}x", {"CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "DIGEST-MD5"}),
        ("{PLAIN-TRUNC}1-x", {"CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "DIGEST-MD5"}),
        ("{CRAM-MD5}" + "00" * 32, {"CRAM-MD5"}),
        ("{HMAC-MD5}" + "00" * 32, {"CRAM-MD5"}),
        ("{SCRAM-SHA-1}x", {"SCRAM-SHA-1"}),
        ("{SCRAM-SHA-256}x", {"SCRAM-SHA-256"}),
        ("{DIGEST-MD5}x", {"DIGEST-MD5"}),
        ("{SHA512-CRYPT}x", set()),
        ("{NOSUCH}x", set()),
    ],
)
def test_mechanisms_allowed(value: str, extra: set[str]) -> None:
    assert mechanisms_allowed(parse_stored(value)) == frozenset({"PLAIN", "LOGIN"} | extra)


def _client_proof_ok(algorithm: str, creds: tuple[int, bytes, bytes, bytes], pw: bytes) -> bool:
    iterations, salt, stored_key, server_key = creds
    salted = hashlib.pbkdf2_hmac(algorithm, pw, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", algorithm).digest()
    return (
        hashlib.new(algorithm, client_key).digest() == stored_key
        and hmac.new(salted, b"Server Key", algorithm).digest() == server_key
    )


@pytest.mark.parametrize(("algorithm", "hash_name"), [("SHA-1", "sha1"), ("SHA-256", "sha256")])
def test_scram_credentials(algorithm: str, hash_name: str) -> None:
    from_plain = scram_credentials(parse_stored("{PLAIN}test"), algorithm, "u")
    assert from_plain is not None and from_plain[0] == 4096
    assert _client_proof_ok(hash_name, from_plain, b"test")
    stored = parse_stored(generate("SCRAM-" + algorithm, b"test", "u"))
    from_scram = scram_credentials(stored, algorithm, "u")
    assert from_scram is not None and _client_proof_ok(hash_name, from_scram, b"test")
    assert (
        scram_credentials(parse_stored("{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M="), algorithm, "u")
        is None
    )
    other = "SHA-256" if algorithm == "SHA-1" else "SHA-1"
    assert scram_credentials(stored, other, "u") is None


def test_scram_dovecot_vector() -> None:
    stored = parse_stored(
        "{SCRAM-SHA-1}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,"
        "QBiURvQaE6H6qYTmeghDHLANBFQ="
    )
    creds = scram_credentials(stored, "sha-1", "u")
    assert creds is not None and _client_proof_ok("sha1", creds, b"test")


def test_digest_md5_secret() -> None:
    expected = bytes.fromhex("77c1a8c437c9b08ba2f460fe5d58db5d")
    assert digest_md5_secret(parse_stored("{PLAIN}test"), "testuser1") == expected
    assert digest_md5_secret(parse_stored("{DIGEST-MD5}" + expected.hex()), "x") == expected
    assert digest_md5_secret(parse_stored("{SSHA}x"), "x") is None


@pytest.mark.parametrize(
    ("scheme", "expensive"),
    [
        ("PLAIN", False),
        ("SHA512", False),
        ("SSHA512", False),
        ("CRAM-MD5", False),
        ("SHA512-CRYPT", True),
        ("BLF-CRYPT", True),
        ("CRYPT", True),
        ("ARGON2ID", True),
        ("PBKDF2", True),
        ("SCRAM-SHA-256", True),
        ("MD5-CRYPT", True),
        ("NOSUCH", False),
    ],
)
def test_is_expensive(scheme: str, expensive: bool) -> None:
    assert is_expensive(parse_stored("{" + scheme + "}x")) is expensive


def test_verify_runs_in_a_process_pool() -> None:
    stored = parse_stored(generate("SHA512-CRYPT", b"pw", "u"))
    assert pickle.loads(pickle.dumps(stored)) == stored
    with ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(verify_password, stored, b"pw", "u").result() is True
        assert pool.submit(verify_password, stored, b"pX", "u").result() is False
