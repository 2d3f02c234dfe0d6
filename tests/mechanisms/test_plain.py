"""PLAIN message splitting as Dovecot 2.3 does it (transcript plain-nul-after-second-nul)."""

from __future__ import annotations

import pytest

from authbridge.core.mechanisms.base import Failure, VerifyPlain
from authbridge.core.mechanisms.plain import Plain, split_plain


@pytest.mark.parametrize(
    ("data", "parts"),
    [
        (b"\x00userx\x00secret", (b"", b"userx", b"secret")),
        (b"userx\x00userx\x00secret", (b"userx", b"userx", b"secret")),
        (b"\x00userx\x00", (b"", b"userx", b"")),
        # The byte after the second NUL is stepped over: a NUL there is not counted,
        # and the C-string password ends at it.
        (b"other\x00userx\x00\x00secret", (b"other", b"userx", b"")),
        (b"\x00userx\x00\x00", (b"", b"userx", b"")),
        (b"\x00userx\x00secret\x00more", None),
        (b"\x00userx\x00x\x00", None),
        (b"\x00userx\x00\x00\x00", None),
        (b"userx\x00secret", None),
        (b"userx", None),
        (b"", None),
    ],
)
def test_split_like_dovecot(data: bytes, parts: tuple[bytes, bytes, bytes] | None) -> None:
    assert split_plain(data) == parts


def test_step_results() -> None:
    assert Plain().step(b"userx\x00userx\x00pw") == VerifyPlain("userx", "", b"pw")
    assert Plain().step(b"\x00u\x00\x00pw") == VerifyPlain("u", "", b"")
    assert isinstance(Plain().step(b"\x00u\x00p\x00w"), Failure)
