"""CRAM-MD5 stored context (protocol.md §8.3 / Appendix A) and the MD5 block function."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbridge.schemes import (
    SchemeError,
    cram_md5_context,
    cram_md5_digest,
    generate,
    md5_block,
    parse_stored,
)

CHALLENGE = b"<8327461095827361.1700000000@mail.example.org>"


def test_dovecot_context_vector() -> None:
    assert generate("CRAM-MD5", b"test", "") == (
        "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6"
    )


def test_context_for_secret_and_digest() -> None:
    context = cram_md5_context(parse_stored("{PLAIN}secret"))
    assert context is not None
    assert context.hex() == "cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
    assert cram_md5_digest(context, CHALLENGE).hex() == "87b30d8a13d773de66009dc4f535751b"


def test_stored_context_is_used_as_is() -> None:
    stored = parse_stored(
        "{HMAC-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
    )
    context = cram_md5_context(stored)
    assert context is not None
    assert cram_md5_digest(context, CHALLENGE) == hmac.new(b"secret", CHALLENGE, "md5").digest()


def test_context_from_base64_cram_md5() -> None:
    stored = parse_stored("{CRAM-MD5.b64}4C03T94Nx1oXpVcDmjpTOMd0MwR3fczTdvMyvuaNLPY=")
    context = cram_md5_context(stored)
    assert context is not None
    assert context.hex().startswith("e02d374f")


@given(password=st.binary(max_size=150), challenge=st.binary(max_size=300))
def test_digest_equals_hmac_md5(password: bytes, challenge: bytes) -> None:
    context = cram_md5_context(parse_stored("{PLAIN.hex}" + password.hex()))
    assert context is not None
    assert cram_md5_digest(context, challenge) == hmac.new(password, challenge, "md5").digest()


@given(data=st.binary(max_size=300))
def test_block_function_gives_md5(data: bytes) -> None:
    assert md5_block.finish(md5_block.IV, data) == hashlib.md5(data).digest()


@pytest.mark.parametrize(
    "value",
    [
        "{SHA512-CRYPT}$6$abc$def",
        "{SSHA512}AAAA",
        "{BLF-CRYPT}$2y$05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
    ],
)
def test_schemes_without_plaintext_give_no_context(value: str) -> None:
    assert cram_md5_context(parse_stored(value)) is None


def test_bad_context_data_is_an_error() -> None:
    with pytest.raises(SchemeError, match="CRAM-MD5"):
        cram_md5_context(parse_stored("{CRAM-MD5}e02d374f"))
