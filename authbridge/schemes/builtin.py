"""Registration of every scheme Dovecot 2.3's ``doveadm pw -l`` lists (importing registers)."""

from __future__ import annotations

from authbridge.schemes import (
    argon2_scheme,
    bcrypt_scheme,
    cram_md5,
    crypt_family,
    digest_md5,
    otp,
    pbkdf2,
    plain,
    scram,
)
from authbridge.schemes._core import Scheme
from authbridge.schemes.digests import plain_digest, salted_digest
from authbridge.schemes.registry import register


def _split_trunc(raw: bytes) -> bytes:
    return plain.split_trunc(raw)[1]


for _name in ("PLAIN", "CLEAR", "CLEARTEXT"):
    register(Scheme(_name, plain.verify, plain.generate, kind="plain"))
register(
    Scheme(
        "PLAIN-TRUNC",
        plain.verify_trunc,
        plain.generate_trunc,
        kind="plain",
        extract=_split_trunc,
    )
)

register(Scheme("PLAIN-MD4", *plain_digest("md4"), encoding="hex", raw_len=16))
register(Scheme("PLAIN-MD5", *plain_digest("md5"), encoding="hex", raw_len=16))
register(Scheme("LDAP-MD5", *plain_digest("md5"), encoding="b64", raw_len=16))
register(Scheme("SHA", *plain_digest("sha1"), encoding="b64", raw_len=20))
register(Scheme("SHA1", *plain_digest("sha1"), encoding="b64", raw_len=20))
register(Scheme("SHA256", *plain_digest("sha256"), encoding="b64", raw_len=32))
register(Scheme("SHA512", *plain_digest("sha512"), encoding="b64", raw_len=64))
register(Scheme("SMD5", *salted_digest("SMD5", "md5"), encoding="b64"))
register(Scheme("SSHA", *salted_digest("SSHA", "sha1"), encoding="b64"))
register(Scheme("SSHA256", *salted_digest("SSHA256", "sha256"), encoding="b64"))
register(Scheme("SSHA512", *salted_digest("SSHA512", "sha512"), encoding="b64"))

register(Scheme("CRAM-MD5", cram_md5.verify, cram_md5.generate, "hex", 32, kind="cram-md5"))
register(Scheme("HMAC-MD5", cram_md5.verify, cram_md5.generate, "hex", 32, kind="cram-md5"))
register(Scheme("DIGEST-MD5", digest_md5.verify, digest_md5.generate, "hex", 16, kind="digest-md5"))

_cf = crypt_family
register(Scheme("CRYPT", _cf.verify_crypt, _cf.generate_crypt, expensive=True))
register(Scheme("DES-CRYPT", _cf.verify_des_crypt, _cf.generate_des_crypt, expensive=True))
register(Scheme("MD5", _cf.verify_md5, _cf.generate_md5_crypt, expensive=True))
register(Scheme("MD5-CRYPT", _cf.verify_md5_crypt, _cf.generate_md5_crypt, expensive=True))
register(Scheme("SHA256-CRYPT", _cf.verify_sha256_crypt, _cf.generate_sha256_crypt, expensive=True))
register(Scheme("SHA512-CRYPT", _cf.verify_sha512_crypt, _cf.generate_sha512_crypt, expensive=True))
register(Scheme("BLF-CRYPT", bcrypt_scheme.verify, bcrypt_scheme.generate, expensive=True))
register(Scheme("ARGON2I", *argon2_scheme.scheme_functions("ARGON2I"), expensive=True))
register(Scheme("ARGON2ID", *argon2_scheme.scheme_functions("ARGON2ID"), expensive=True))
register(Scheme("PBKDF2", pbkdf2.verify, pbkdf2.generate, expensive=True))
register(
    Scheme(
        "SCRAM-SHA-1", *scram.scheme_functions("SCRAM-SHA-1"), expensive=True, kind="scram-sha-1"
    )
)
register(
    Scheme(
        "SCRAM-SHA-256",
        *scram.scheme_functions("SCRAM-SHA-256"),
        expensive=True,
        kind="scram-sha-256",
    )
)
register(Scheme("OTP", otp.verify, otp.generate, expensive=True))
