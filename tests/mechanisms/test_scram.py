"""SCRAM message parsing and proof checking, with an independent client (scramp)."""

from __future__ import annotations

import pytest
from scramp import ScramClient, ScramMechanism

from authbridge.core.mechanisms.base import (
    Challenge,
    Credentials,
    Failure,
    NeedCredentials,
    ScramKeys,
    Success,
)
from authbridge.core.mechanisms.scram import ScramSha256


def _keys(password: str) -> ScramKeys:
    salt, stored_key, server_key, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password, iteration_count=4096
    )
    return ScramKeys(iterations, salt, stored_key, server_key)


def test_full_exchange_with_an_independent_client() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "us,er", "pw")
    mech = ScramSha256()
    step = mech.initial(client.get_client_first().encode())
    assert step == NeedCredentials("us,er", "SCRAM-SHA-256", early_username=True)  # =2C unescaped
    challenge = mech.resume(Credentials("SCRAM-SHA-256", _keys("pw")))
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    final = mech.step(client.get_client_final().encode())
    assert isinstance(final, Success)
    client.set_server_final(final.data.decode())  # raises if the signature is wrong


def test_wrong_password_is_a_mismatch_not_a_protocol_error() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "user", "wrong")
    mech = ScramSha256()
    mech.initial(client.get_client_first().encode())
    challenge = mech.resume(Credentials("SCRAM-SHA-256", _keys("right")))
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    result = mech.step(client.get_client_final().encode())
    assert result == Failure("password mismatch", password_mismatch=True)


@pytest.mark.parametrize(
    "first",
    [
        b"p=tls-unique,,n=user,r=abc",  # channel binding
        b"x,,n=user,r=abc",  # bad GS2 flag
        b"n,,m=ext,n=user,r=abc",  # mandatory extension
        b"n,,n=us=2Xer,r=abc",  # bad escape
        b"n,,n=user",  # no nonce
        b"n,a=other,n=user,r=abc",  # master user login
        b"n,,n=user,x=abc",  # nonce field missing
        b"nothing",
    ],
)
def test_malformed_client_first_fails(first: bytes) -> None:
    assert isinstance(ScramSha256().initial(first), Failure)


def test_nul_bytes_are_refused() -> None:
    assert isinstance(ScramSha256().initial(b"n,,n=user\x00,r=abc"), Failure)


def test_final_message_with_a_different_nonce_fails() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "user", "pw")
    mech = ScramSha256()
    mech.initial(client.get_client_first().encode())
    challenge = mech.resume(Credentials("SCRAM-SHA-256", _keys("pw")))
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    final = client.get_client_final().replace(",r=", ",r=x", 1)
    assert mech.step(final.encode()) == Failure("wrong nonce")
