"""The crypt family gives the same answers through libc crypt(3) and through passlib.

libc is preferred for speed; passlib is the fallback on Python 3.13+ (no ``crypt``
module) and for passwords libc cannot take (non-UTF-8 bytes).
"""

from __future__ import annotations

import pytest

from authbridge.schemes import generate, libc_crypt, parse_stored, verify_password

VECTORS = [
    ("{CRYPT}//EsnG9FLTKjo", b"test"),
    ("{DES-CRYPT}//EsnG9FLTKjo", b"test"),
    ("{MD5-CRYPT}$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/", b"test"),
    ("{CRYPT}$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/", b"test"),
    (
        "{SHA256-CRYPT}$5$rounds=1000$0123456789abcdef$K/DksR0DT01hGc8g/kt9McEgrbFMKi9qrb1jehe7hn4",
        b"08/15!test~4711",
    ),
    (
        "{CRYPT}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3t"
        "VrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1",
        b"08/15!test~4711",
    ),
]
SCHEMES = ["DES-CRYPT", "MD5-CRYPT", "MD5", "SHA256-CRYPT", "SHA512-CRYPT"]


@pytest.fixture(params=["libc", "passlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "libc":
        if not libc_crypt.available():
            pytest.skip("no crypt module on this Python")
    else:
        monkeypatch.setattr(libc_crypt, "_crypt_r", None)
    return str(request.param)


@pytest.mark.parametrize(("value", "password"), VECTORS)
def test_vectors_on_both_backends(backend: str, value: str, password: bytes) -> None:
    stored = parse_stored(value)
    assert verify_password(stored, password, "u") is True
    assert verify_password(stored, b"x" + password, "u") is False


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hash_from_one_backend_verifies_on_the_other(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not libc_crypt.available():
        pytest.skip("no crypt module on this Python")
    password = "pässwörd€ 'x'".encode()
    by_libc = parse_stored(generate(scheme, password, "u"))
    monkeypatch.setattr(libc_crypt, "_crypt_r", None)
    by_passlib = parse_stored(generate(scheme, password, "u"))
    assert verify_password(by_libc, password, "u") is True
    monkeypatch.undo()
    assert verify_password(by_passlib, password, "u") is True
    assert verify_password(by_passlib, b"!" + password[1:], "u") is False


@pytest.mark.parametrize("scheme", SCHEMES)
def test_non_utf8_password_falls_back_to_passlib(scheme: str) -> None:
    password = b"\xff\xfebinary"
    stored = parse_stored(generate(scheme, password, "u"))
    assert verify_password(stored, password, "u") is True
    assert verify_password(stored, b"\xff\xfebinarY", "u") is False


def test_locked_crypt_entry_on_passlib_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc_crypt, "_crypt_r", None)
    for value in ("{CRYPT}!", "{CRYPT}*", "{CRYPT}!$6$abc$def"):
        assert verify_password(parse_stored(value), b"!", "u") is False
