"""The auth-policy request body, hashed password and answer, against independent
computations written from Dovecot's documented construction (not from our code)."""

from __future__ import annotations

import hashlib
import json

import pytest

from authbridge.checks import authpolicy_wire as wire
from authbridge.config import DEFAULT_POLICY_ATTRIBUTES


def _reference_pwhash(name: str, nonce: bytes, user: str, password: bytes, bits: int) -> str:
    """hex(H(nonce || user || NUL || password)), only its first ``bits`` bits kept and
    right-aligned in the fewest whole bytes (Dovecot's buffer_truncate_rshift_bits)."""
    full = hashlib.new(name, nonce + user.encode() + b"\0" + password).digest()
    if bits == 0 or bits >= len(full) * 8:
        return full.hex()
    as_bits = "".join(f"{byte:08b}" for byte in full)[:bits]
    nbytes = -(-bits // 8)
    padded = as_bits.rjust(nbytes * 8, "0")
    return bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8)).hex()


@pytest.mark.parametrize("bits", [0, 1, 7, 8, 12, 13, 16, 31, 64, 255, 256, 600])
@pytest.mark.parametrize("mech", ["md5", "sha1", "sha256", "sha512"])
def test_pwhash_matches_the_documented_construction(mech: str, bits: int) -> None:
    got = wire.hashed_password(mech, b"nonce-42", "alice@example.org", b"pass word", bits)
    assert got == _reference_pwhash(mech, b"nonce-42", "alice@example.org", b"pass word", bits)


def test_pwhash_known_value_from_real_dovecot() -> None:
    """What Dovecot 2.3.19 sent for alice/secret with nonce s3cretnonce (sha256, 12 bits)."""
    assert wire.hashed_password("sha256", b"s3cretnonce", "alice", b"secret", 12) == "0cff"


def test_pwhash_md4_and_no_password() -> None:
    """CRAM-MD5 and SCRAM have no plaintext: only the nonce and the name are hashed."""
    assert wire.hashed_password("sha256", b"n", "bob", None, 0) == (
        hashlib.sha256(b"nbob\0").hexdigest()
    )
    assert len(wire.hashed_password("md4", b"n", "bob", b"x", 0)) == 32


def test_default_attributes_render_sorted_like_dovecot() -> None:
    template = wire.Template.parse(DEFAULT_POLICY_ATTRIBUTES)
    values = dict.fromkeys(
        ("requested_username", "hashed_password", "rip", "client_id", "service", "session"), ""
    )
    values |= {"requested_username": "alice", "hashed_password": "0cff", "service": "smtp"}
    data = wire.body(template.render(values), tls=False)
    assert data == (
        b'{"device_id":"","login":"alice","protocol":"smtp","pwhash":"0cff",'
        b'"remote":"","session_id":"","tls":false}'
    )


def test_report_body_adds_success_and_policy_reject_before_tls() -> None:
    data = json.loads(wire.body({"login": "a"}, tls=True, success=False, policy_reject=True))
    assert list(data) == ["login", "success", "policy_reject", "tls"]
    assert data == {"login": "a", "success": False, "policy_reject": True, "tls": True}


def test_slash_keys_nest_and_values_expand() -> None:
    template = wire.Template.parse("z=1 a/y=%Lu a/b=x%{rip}y login=%n@%d")
    rendered = template.render(
        {"user": "Bob@Example.org", "username": "Bob", "domain": "Example.org", "rip": "1.2.3.4"}
    )
    assert rendered == {
        "a": {"b": "x1.2.3.4y", "y": "bob@example.org"},
        "login": "Bob@Example.org",
        "z": "1",
    }
    assert list(rendered) == ["a", "login", "z"]


@pytest.mark.parametrize("text", ["login", "a=%{nosuch}", "a=b c"])
def test_bad_attributes_are_refused(text: str) -> None:
    with pytest.raises(wire.AttributesError):
        wire.Template.parse(text)


def test_command_url() -> None:
    assert wire.command_url("http://h:1/", "allow") == "http://h:1/?command=allow"
    assert wire.command_url("http://h:1/p?x=1&", "report") == "http://h:1/p?x=1&command=report"


@pytest.mark.parametrize(
    ("data", "status", "msg"),
    [
        (b'{"status":-1,"msg":"go away"}', -1, "go away"),
        (b'{"status":0,"msg":""}', 0, None),
        (b'{"status":5}', 5, None),
        (b'{"msg":"no status"}', None, "no status"),
        (b'{"other":{"x":1},"status":0}', 0, None),
    ],
)
def test_answers(data: bytes, status: int | None, msg: str | None) -> None:
    assert wire.parse_answer(data) == wire.Answer(status, msg)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"[]", b'{"status":"1"}', b'{"status":1.5}', b'{"status":true}']
)
def test_malformed_answers(data: bytes) -> None:
    with pytest.raises(wire.MalformedAnswer):
        wire.parse_answer(data)
