"""Is a stored password usable at all? Checked without hashing anything.

Store loaders ask this for every entry, so an admin hears of ``{NOSUCH}abc`` or
``{SHA512-CRYPT}notahash`` when the file is read, not from users who can never log in;
the login path asks it when a verification raises, to tell a malformed entry (the
store's data: a plain failure) from a failure of ours. Each check only parses: a
100k-user file must still load in moments. Reasons never quote the stored data.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from authbridge.schemes import otp, pbkdf2, plain, scram
from authbridge.schemes._core import SchemeError, StoredPassword
from authbridge.schemes.bcrypt_scheme import MAX_COST, MIN_COST
from authbridge.schemes.encoding import decode
from authbridge.schemes.registry import get

_BCRYPT = re.compile(rb"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_DES = re.compile(rb"[./0-9A-Za-z]{13}")
#: crypt(3) prefixes whose format is checked here; other ``$id$`` methods (yescrypt's
#: ``$y$`` on Debian 12, ...) are left to libc.
_CRYPT_METHODS: tuple[tuple[bytes, Any], ...] = (
    (b"$1$", md5_crypt),
    (b"$5$", sha256_crypt),
    (b"$6$", sha512_crypt),
)
_SALTED_DIGEST_SIZES = {"SMD5": 16, "SSHA": 20, "SSHA256": 32, "SSHA512": 64}


def problem(stored: StoredPassword) -> str | None:
    """Why ``stored`` can never verify any password, or ``None`` when it looks usable.

    An empty value is reported as a missing password. Values Dovecot deliberately treats
    as "never matches" without an error (a ``{CRYPT}`` value starting with ``!`` or
    ``*``: a locked account) are usable here.
    """
    entry = get(stored.scheme)
    if entry is None:
        return f"unknown password scheme {{{stored.scheme}}}"
    if not stored.data:
        return f"empty password ({{{stored.scheme}}})"
    try:
        raw = decode(entry, stored)
        check = _CHECKS.get(entry.name)
        reason = None if check is None else check(raw)
    except SchemeError as exc:
        return str(exc)
    return None if reason is None else f"{stored.scheme}: {reason}"


def _ascii(raw: bytes) -> str | None:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


#: The usual shape of each crypt method, checked first: a regular expression costs a
#: tenth of passlib's parser, which then only explains what does not match.
_ROUNDS = rb"(?:rounds=[1-9][0-9]{3,8}\$)?"
_CRYPT_SHAPES = {
    b"$1$": re.compile(rb"\$1\$[./0-9A-Za-z]{0,8}\$[./0-9A-Za-z]{22}"),
    b"$5$": re.compile(rb"\$5\$" + _ROUNDS + rb"[./0-9A-Za-z]{0,16}\$[./0-9A-Za-z]{43}"),
    b"$6$": re.compile(rb"\$6\$" + _ROUNDS + rb"[./0-9A-Za-z]{0,16}\$[./0-9A-Za-z]{86}"),
}
_ARGON2_SHAPE = re.compile(
    rb"\$argon2id?\$v=19\$m=[0-9]{1,10},t=[0-9]{1,10},p=[0-9]{1,3}"
    rb"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}"
)


def _passlib_format(handler: Any, prefix: bytes, name: str) -> Callable[[bytes], str | None]:
    shape = _CRYPT_SHAPES.get(prefix)

    def check(raw: bytes) -> str | None:
        if shape is not None and shape.fullmatch(raw):
            return None
        text = _ascii(raw)
        if text is None or not raw.startswith(prefix):
            return f"stored data is not a {name} hash ({prefix.decode()}...)"
        try:
            parsed = handler.from_string(text)
        except ValueError:
            return f"stored data is not a valid {name} hash"
        if not parsed.checksum:  # a bare salt ("$6$salt") can never match
            return f"stored data is a {name} salt without a hash"
        return None

    return check


def _bcrypt(raw: bytes) -> str | None:
    match = _BCRYPT.fullmatch(raw)
    if match is None or not MIN_COST <= int(match.group(1)) <= MAX_COST:
        return "stored data is not a valid bcrypt hash"
    return None


def _des(raw: bytes) -> str | None:
    if not _DES.fullmatch(raw):
        return "stored data is not a 13-character DES crypt hash"
    return None


def _crypt(raw: bytes) -> str | None:
    """{CRYPT}: whatever crypt(3) knows; locked (``!``, ``*``) values are deliberate."""
    if raw[:1] in (b"!", b"*"):
        return None
    if len(raw) > 4 and raw[:2] == b"$2" and raw[3:4] == b"$":
        return _bcrypt(raw)
    if _ascii(raw) is None:
        return "stored data is not ASCII"
    for prefix, handler in _CRYPT_METHODS:
        if raw.startswith(prefix):
            return _passlib_format(handler, prefix, "crypt")(raw)
    if raw.startswith(b"$"):
        return None  # another crypt(3) method: libc decides
    if not _DES.fullmatch(raw):
        return "stored data is not a crypt(3) hash: it can never match"
    return None


def _md5(raw: bytes) -> str | None:
    """{MD5}: MD5-CRYPT with ``$1$``, else a PLAIN-MD5 digest in hex or base64."""
    if raw.startswith(b"$1$"):
        return _MD5_CRYPT(raw)
    digest = _md5_digest(raw)
    return None if digest else "stored data is neither MD5-CRYPT nor PLAIN-MD5"


def _md5_digest(raw: bytes) -> bool:
    try:
        if len(raw) == 32:
            try:
                return len(binascii.unhexlify(raw)) == 16
            except binascii.Error:
                pass
        return len(binascii.a2b_base64(raw, strict_mode=True)) == 16
    except binascii.Error:
        return False


def _argon2(raw: bytes) -> str | None:
    if _ARGON2_SHAPE.fullmatch(raw):
        return None
    text = _ascii(raw)
    if text is None or not text.startswith(("$argon2i$", "$argon2id$")):
        return "stored data is not an argon2i/argon2id hash"
    try:
        argon2.extract_parameters(text)
    except (InvalidHashError, ValueError):
        return "stored data is not a valid argon2 hash"
    return None


def _salted(size: int) -> Callable[[bytes], str | None]:
    def check(raw: bytes) -> str | None:
        return None if len(raw) > size else f"stored data is too short ({len(raw)} bytes)"

    return check


def _parsed_by(parse: Callable[[bytes], object]) -> Callable[[bytes], str | None]:
    """A check made of the scheme's own parser (it raises SchemeError, caught above)."""

    def check(raw: bytes) -> str | None:
        parse(raw)
        return None

    return check


def _scram(name: str) -> Callable[[bytes], str | None]:
    return _parsed_by(lambda raw: scram.parse(name, raw))


_MD5_CRYPT = _passlib_format(md5_crypt, b"$1$", "MD5-CRYPT")

#: Format checks by scheme, on the decoded data; schemes not listed are fully checked
#: by decoding (fixed-length digests) or take any bytes (plaintext).
_CHECKS: dict[str, Callable[[bytes], str | None]] = {
    "CRYPT": _crypt,
    "DES-CRYPT": lambda raw: _des(raw) or _passlib_format(des_crypt, b"", "DES-CRYPT")(raw),
    "MD5": _md5,
    "MD5-CRYPT": _MD5_CRYPT,
    "SHA256-CRYPT": _passlib_format(sha256_crypt, b"$5$", "SHA256-CRYPT"),
    "SHA512-CRYPT": _passlib_format(sha512_crypt, b"$6$", "SHA512-CRYPT"),
    "BLF-CRYPT": _bcrypt,
    "ARGON2I": _argon2,
    "ARGON2ID": _argon2,
    "PBKDF2": _parsed_by(pbkdf2._parse),
    "OTP": _parsed_by(otp._parse),
    "SCRAM-SHA-1": _scram("SCRAM-SHA-1"),
    "SCRAM-SHA-256": _scram("SCRAM-SHA-256"),
    "PLAIN-TRUNC": _parsed_by(plain.split_trunc),
    **{name: _salted(size) for name, size in _SALTED_DIGEST_SIZES.items()},
}


# ------------------------------------------------------------------ whole-file check

_B64 = rb"[A-Za-z0-9+/]"


def _b64_longer_than(size: int) -> bytes:
    """Strict base64 (padded, no whitespace) that decodes to more than ``size`` bytes."""
    least = size + 1
    groups = -(-least // 3)  # that many 4-character groups always decode to enough
    tail = rb"(?:" + _B64 + rb"{2}==|" + _B64 + rb"{3}=)"
    pattern = rb"(?:" + _B64 + rb"{4}){%d,}" % groups + tail + rb"?"
    short = least - 3 * (groups - 1)  # bytes the tail must add to one group fewer
    if short == 2:
        pattern += rb"|(?:" + _B64 + rb"{4}){%d}" % (groups - 1) + _B64 + rb"{3}="
    return pattern


#: Unsalted digests whose hex form is a usual shape: scheme → raw size.
_HEX_DIGESTS = {b"PLAIN-MD5": 16}


def usual_value_pattern() -> bytes:
    """A regular expression (bytes, no groups that capture) for the stored values that
    are certainly well formed: ``{SCHEME}data`` of the common schemes, in their usual
    shape. It is a shortcut for loading big files, not a second set of rules: whatever
    it matches, :func:`problem` accepts too (a test checks it both ways on random
    values), and whatever it does not match is left to :func:`problem`."""
    crypt_bytes = rb"[./0-9A-Za-z]"
    cost = rb"(?:0[4-9]|[12][0-9]|3[01])"
    assert (MIN_COST, MAX_COST) == (4, 31), "the cost range above is written out"
    # The commonest first; names as written in upper case only (a regular expression
    # that ignores case runs at half the speed; other spellings take the slow path).
    shapes = {
        **{
            name.encode(): _b64_longer_than(size)
            for name, size in reversed(_SALTED_DIGEST_SIZES.items())
        },
        b"SHA512-CRYPT": _CRYPT_SHAPES[b"$6$"].pattern,
        b"BLF-CRYPT": rb"\$2[abxy]\$" + cost + rb"\$" + crypt_bytes + rb"{53}",
        b"ARGON2ID": _ARGON2_SHAPE.pattern,
        b"PLAIN": rb"[^:\r\n]+",
        b"SHA256-CRYPT": _CRYPT_SHAPES[b"$5$"].pattern,
        b"MD5-CRYPT": _CRYPT_SHAPES[b"$1$"].pattern,
        b"ARGON2I": _ARGON2_SHAPE.pattern,
    }
    for name in shapes:
        entry = get(name.decode())
        # Shapes hold only for the registry's entries as they are (salted: base64).
        assert entry is not None and (entry.raw_len, entry.encoding) in ((0, "none"), (0, "b64"))
    # Fixed-size digests in hex, the default encoding of their scheme: PLAIN-MD5 is the
    # Exim-era shape (``{PLAIN-MD5}`` + 32 hex digits) sites migrate away from.
    for name, size in _HEX_DIGESTS.items():
        entry = get(name.decode())
        assert entry is not None and (entry.raw_len, entry.encoding) == (size, "hex")
        shapes[name] = rb"[0-9a-fA-F]{%d}" % (2 * size)
    alternatives = b"|".join(
        re.escape(name) + rb"\}(?:" + shape + rb")" for name, shape in shapes.items()
    )
    return rb"\{(?:" + alternatives + rb")"
