"""The load's whole-file shortcut (validation.all_lines_usual): one regular expression
over the file instead of a check per line. It must never pass a line the per-line
check would report, and must pass the files sites really have."""

from __future__ import annotations

import base64
import os

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from authbridge import schemes
from authbridge.core.usernames import UsernamePolicy
from authbridge.passdb import passwd_file
from authbridge.passdb.passwd_file import index_passwd_file, validate_passwd_file
from authbridge.passdb.validation import all_lines_usual

POLICY = UsernamePolicy()


def _slow_problems(text: bytes, policy: UsernamePolicy = POLICY) -> list[str]:
    """The per-line check alone (the shortcut switched off)."""
    index = index_passwd_file(text)
    saved = passwd_file.all_lines_usual
    passwd_file.all_lines_usual = lambda data, usernames: False  # type: ignore[assignment]
    try:
        return [str(p) for p in validate_passwd_file(index, "f", usernames=policy)]
    finally:
        passwd_file.all_lines_usual = saved


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
CRYPT = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Values near the edges of each usual shape: right, one short, one long, wrong padding.
names = st.sampled_from(["joe", "a@b.org", "x-y_z.1", "Joe", "j\u00f6", "", "#c", " joe", "j oe"])
schemes_ = st.sampled_from(
    [
        "SSHA512",
        "SSHA256",
        "SSHA",
        "SMD5",
        "SHA512-CRYPT",
        "BLF-CRYPT",
        "ARGON2ID",
        "ARGON2I",
        "PLAIN",
        "SHA256-CRYPT",
        "MD5-CRYPT",
        "PLAIN-MD5",
        "ssha512",
        "CRYPT",
        "SHA512",
        "NOSUCH",
    ]
)


@st.composite
def values(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 6))
    if kind == 6:  # hex of some length, maybe with a character that is not hex
        digits = draw(st.text("0123456789abcdefABCDEFg ", min_size=30, max_size=34))
        return digits
    if kind == 0:  # base64 of some length, maybe with broken padding or characters
        raw = draw(st.binary(min_size=0, max_size=90))
        text = base64.b64encode(raw).decode()
        if draw(st.booleans()):
            text = text.rstrip("=") + draw(st.sampled_from(["", "=", "==", "===", "A", " "]))
        return text
    if kind == 1:  # crypt-like
        prefix = draw(st.sampled_from(["$6$", "$5$", "$1$", "$2y$", "$2b$", "$6$rounds=5000$"]))
        salt = draw(st.text(CRYPT, max_size=17))
        body = draw(st.text(CRYPT + "$:", min_size=0, max_size=90))
        cost = draw(st.sampled_from(["", "03$", "04$", "10$", "31$", "32$", "99$"]))
        return prefix + cost + salt + "$" + body
    if kind == 2:  # argon2-like
        head = draw(st.sampled_from(["$argon2id$v=19$", "$argon2i$v=19$", "$argon2id$v=16$"]))
        params = draw(st.sampled_from(["m=65536,t=3,p=4$", "m=1,t=1,p=1$", "m=x,t=3,p=4$"]))
        salt = draw(st.text(B64, min_size=0, max_size=24))
        digest = draw(st.text(B64, min_size=0, max_size=44))
        return head + params + salt + "$" + digest
    if kind == 3:  # real hashes
        scheme = draw(st.sampled_from(["SSHA512", "SSHA256", "SSHA", "SMD5", "PLAIN"]))
        return schemes.generate(scheme, draw(st.binary(min_size=1, max_size=20)), "u")
    if kind == 4:
        return draw(st.text(max_size=30))
    return ""


@st.composite
def lines(draw: st.DrawFn) -> str:
    value = draw(values())
    if not value.startswith("{"):
        value = "{" + draw(schemes_) + "}" + value
    tail = draw(
        st.sampled_from(["", "::::::", ":1000:1000::/home:/bin/sh:nopassword", "\r", ":x\r"])
    )
    return draw(names) + ":" + value + tail


@settings(max_examples=3000, deadline=None)
@given(st.lists(lines(), min_size=1, max_size=4))
def test_the_shortcut_never_passes_a_line_the_per_line_check_reports(body: list[str]) -> None:
    text = ("\n".join(body) + "\n").encode("utf-8", "surrogateescape")
    assume(b"\0" not in text)  # the load refuses such a file before any line is checked
    if all_lines_usual(text, POLICY):
        assert _slow_problems(text) == []


def test_usual_files_take_the_shortcut_and_unusual_lines_do_not() -> None:
    users = [
        f"u{n}:" + schemes.generate(scheme, b"pw%d" % n, f"u{n}") + "::::::"
        for n, scheme in enumerate(["SSHA512", "SSHA256", "SSHA", "SMD5", "PLAIN"])
    ]
    users += [
        "crypt6:{SHA512-CRYPT}$6$rounds=5000$saltsalt$" + "a" * 86,
        "md5hex:{PLAIN-MD5}65ed8a5eec59a1a6f75ec845294aead8",
        "md5upper:{PLAIN-MD5}65ED8A5EEC59A1A6F75EC845294AEAD8:1000:1000::/home/x:/bin/sh",
        "crypt6b:{SHA512-CRYPT}$6$saltsalt$" + "b" * 86 + ":1000:1000::/home/x:/bin/sh",
        "bf@example.org:{BLF-CRYPT}$2y$10$" + "c" * 53,
        "argon:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$" + "s" * 22 + "$" + "d" * 43,
        "# a comment: with anything {NOSUCH}",
        "",
    ]
    text = ("\n".join(users) + "\n").encode()
    assert all_lines_usual(text, POLICY)
    assert _slow_problems(text) == []
    crlf = text.replace(b"\n\n", b"\n").replace(b"\n", b"\r\n")  # an empty line is not
    assert all_lines_usual(crlf, POLICY)
    assert _slow_problems(crlf) == []
    for bad in [
        "Up:{PLAIN}x",
        "e:{PLAIN}",
        ":{PLAIN}x",
        "n:{NOSUCH}x",
        "\r",
        "s:{SSHA512}abcd",
        "h:{PLAIN-MD5}65ed8a5eec59a1a6f75ec845294aead",
    ]:
        mixed = text + bad.encode() + b"\n"
        assert not all_lines_usual(mixed, POLICY), bad
        assert _slow_problems(mixed), bad


def test_a_policy_that_rewrites_names_checks_every_line() -> None:
    text = b"joe:{PLAIN}x\n"
    assert not all_lines_usual(text, UsernamePolicy(default_domain="example.org"))
    assert all_lines_usual(text, UsernamePolicy(lowercase=False))
    assert not all_lines_usual(b"Joe:{PLAIN}x\n", POLICY)
    assert all_lines_usual(b"Joe:{PLAIN}x\n", UsernamePolicy(lowercase=False))


def test_a_big_file_with_one_bad_line_still_reports_it_with_its_line_number() -> None:
    def good(prefix: bytes) -> bytes:
        # Names built apart from the hashes: a replace() over the text could hit "user"
        # inside a random base64 value and break that hash (a flaky test once).
        return b"".join(
            b"%s%d:{SSHA512}%s::::::\n" % (prefix, n, base64.b64encode(os.urandom(72)))
            for n in range(2000)
        )

    text = good(b"user") + b"broken:{SHA512-CRYPT}nope::::::\n" + good(b"other")
    problems = validate_passwd_file(index_passwd_file(text), "big")
    assert [str(p) for p in problems] == [
        "big:2001: user 'broken': SHA512-CRYPT: stored data is not a SHA512-CRYPT hash ($6$...)"
    ]
