"""Parity with the real ``doveadm pw`` (Dovecot 2.3), in both directions, for every scheme.

* dovecot->authbridge: ``doveadm pw -s S -p P`` makes the hash; authbridge must accept P
  and refuse a wrong password.
* authbridge->dovecot: ``authbridge pw -s S -p P`` makes the hash; ``doveadm pw -t`` must
  accept P and report a plain mismatch (not a decode error) for a wrong password.

``doveadm pw`` needs no running Dovecot; ``-c /dev/null`` keeps it independent of whatever
the machine's dovecot.conf says.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from authbridge.schemes import (
    SchemeError,
    available_schemes,
    cram_md5_context,
    cram_md5_digest,
    digest_md5_secret,
    parse_stored,
    scram_credentials,
    verify_password,
)
from tests.support import require_binary

pytestmark = pytest.mark.interop

USER = "testuser1@example.org"  # DIGEST-MD5: user "testuser1", realm "example.org"
PASSWORDS = {
    "ascii": "Secret123",
    "utf8": "pässwörd€",
    "long": "0123456789abcdefghijklmnopqrstuvwxyz-äöü-" * 3,  # > 100 bytes, > bcrypt's 72
    "quotes": "with space 'single' \"double\" \\ back$slash",
}
# Keep the run fast with the lowest cost each CLI takes: argon2 at libsodium's minimum
# time cost (Dovecot ignores -r below 3 for ARGON2ID and keeps its default), SHA-crypt at
# the minimum 1000 rounds (which also covers the "rounds=" form), bcrypt at cost 4.
COST = {
    "BLF-CRYPT": "4",
    "CRYPT": "4",
    "ARGON2I": "3",
    "ARGON2ID": "1",
    "SHA256-CRYPT": "1000",
    "SHA512-CRYPT": "1000",
}

# `doveadm pw -l` on Debian 12 (Dovecot 2.3.19).
SCHEMES = [
    "ARGON2I",
    "ARGON2ID",
    "BLF-CRYPT",
    "CLEAR",
    "CLEARTEXT",
    "CRAM-MD5",
    "CRYPT",
    "DES-CRYPT",
    "DIGEST-MD5",
    "HMAC-MD5",
    "LDAP-MD5",
    "MD5",
    "MD5-CRYPT",
    "OTP",
    "PBKDF2",
    "PLAIN",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "PLAIN-TRUNC",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA256-CRYPT",
    "SHA512",
    "SHA512-CRYPT",
    "SMD5",
    "SSHA",
    "SSHA256",
    "SSHA512",
]


@pytest.fixture(scope="module")
def doveadm() -> str:
    return require_binary("doveadm")


def _run_all(commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands concurrently (two cores, many short processes) and collect them."""
    procs = [
        (
            command,
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        )
        for command in commands
    ]
    results = []
    for command, proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def _wrong(password: str) -> str:
    """Differs in the first character: DES reads only 8 characters, bcrypt 72 bytes."""
    return ("X" if password[0] != "X" else "Y") + password[1:]


def _make_args(scheme: str) -> list[str]:
    args = ["-s", scheme, "-u", USER]
    if scheme in COST:
        args += ["-r", COST[scheme]]
    return args


@dataclass(frozen=True)
class DoveadmVerdict:
    outcome: str  # "verified", "mismatch" or "error"
    stderr: str


def _verdicts(doveadm: str, pairs: Sequence[tuple[str, str]]) -> list[DoveadmVerdict]:
    """``doveadm pw -t HASH -p PASSWORD`` for each (hash, password)."""
    results = _run_all(
        [[doveadm, "-c", "/dev/null", "pw", "-t", h, "-p", p, "-u", USER] for h, p in pairs]
    )
    verdicts = []
    for result in results:
        if result.returncode == 0 and result.stdout.rstrip().endswith("(verified)"):
            outcome = "verified"
        elif "Password mismatch" in result.stderr:
            outcome = "mismatch"
        else:
            outcome = "error"
        verdicts.append(DoveadmVerdict(outcome, result.stderr.strip()))
    return verdicts


def _authbridge(stored_value: str, password: str) -> str:
    try:
        ok = verify_password(parse_stored(stored_value), password.encode(), USER)
    except SchemeError:
        return "error"
    return "verified" if ok else "mismatch"


def test_doveadm_lists_no_scheme_we_lack(doveadm: str) -> None:
    listed = subprocess.run(
        [doveadm, "-c", "/dev/null", "pw", "-l"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(listed) == SCHEMES
    assert set(listed) <= set(available_schemes())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dovecot_to_authbridge(doveadm: str, scheme: str) -> None:
    passwords = list(PASSWORDS.values())
    made = _run_all(
        [[doveadm, "-c", "/dev/null", "pw", *_make_args(scheme), "-p", p] for p in passwords]
    )
    for result in made:
        assert result.returncode == 0, result.stderr
    hashes = [result.stdout.strip() for result in made]
    for value in hashes:
        assert value.startswith("{" + scheme + "}")
    if scheme == "PLAIN-TRUNC":
        # doveadm writes the bare password, which its own verifier rejects as lacking the
        # "<len>-" prefix; authbridge rejects it the same way.
        verdicts = _verdicts(doveadm, list(zip(hashes, passwords, strict=True)))
        for value, password, verdict in zip(hashes, passwords, verdicts, strict=True):
            assert verdict.outcome == "error" and "missing length" in verdict.stderr
            assert _authbridge(value, password) == "error"
        return
    checks = [(h, p) for h, p in zip(hashes, passwords, strict=True)]
    checks += [(h, _wrong(p)) for h, p in zip(hashes, passwords, strict=True)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # argon2/bcrypt release the GIL
        outcomes = list(pool.map(lambda pair: _authbridge(*pair), checks))
    assert outcomes == ["verified"] * len(passwords) + ["mismatch"] * len(passwords)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_authbridge_to_dovecot(doveadm: str, scheme: str) -> None:
    passwords = list(PASSWORDS.values())
    made = _run_all(
        [
            [sys.executable, "-m", "authbridge", "pw", *_make_args(scheme), "-p", p]
            for p in passwords
        ]
    )
    for result in made:
        assert result.returncode == 0, result.stderr
    hashes = [result.stdout.strip() for result in made]
    for value in hashes:
        assert value.startswith("{" + scheme + "}")
    pairs = [(h, p) for h, p in zip(hashes, passwords, strict=True)]
    pairs += [(h, _wrong(p)) for h, p in zip(hashes, passwords, strict=True)]
    verdicts = _verdicts(doveadm, pairs)
    right, wrong = verdicts[: len(passwords)], verdicts[len(passwords) :]
    assert [v.outcome for v in right] == ["verified"] * len(passwords), right
    assert [v.outcome for v in wrong] == ["mismatch"] * len(passwords), wrong


# Hand-made stored values: parsing, encodings and broken data must give the same verdict
# for the password "test". "error" means doveadm fails for another reason than a mismatch
# (bad data) and authbridge raises SchemeError.
EDGE_CASES = [
    "{PLAIN}test",
    "{plain}test",
    "{PLAIN.B64}dGVzdA==",
    "{plain.hex}74657374",
    "{PLAIN.foo}test",
    "{NOSUCH}test",
    "{PLAIN-TRUNC}4-test",
    "{PLAIN-TRUNC}3-tes",
    "{PLAIN-TRUNC}9-test",
    "{PLAIN-TRUNC}test",
    "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M",
    "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M==",
    "{SHA1} qUqP5cyxm6Yc TAhz05Hph5gvu9M=",
    "{SHA1}a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "{SHA1}A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",
    "{SHA1.hex}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SHA.b64}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SHA256}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{PLAIN-MD5}CY9rzUYh03PK3k6DJie09g==",
    "{LDAP-MD5}098f6bcd4621d373cade4e832627b4f6",
    "{MD5}098f6bcd4621d373cade4e832627b4f6",
    "{MD5}CY9rzUYh03PK3k6DJie09g==",
    "{MD5}$1$wmyrgRuV$kImF6.9MAFQNHe23kq5vI/",
    "{MD5}not-a-digest",
    "{MD5-CRYPT}$1$GgvxyNz8$OjZhLh4P.gF1lxYEbLZ3e/",
    "{SSHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
    "{SMD5}JTu1KRwptKZJg/RLd+6Vn5GUd0M=",
    "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
    "{CRAM-MD5}4C03T94Nx1oXpVcDmjpTOMd0MwR3fczTdvMyvuaNLPY=",
    "{CRAM-MD5}e02d374f",
    "{CRYPT}//EsnG9FLTKjo",
    "{CRYPT}$2y$05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
    "{CRYPT}",
    "{CRYPT}!",
    "{CRYPT}*",
    "{BLF-CRYPT}$2a$05$11ipvo5dR6CwkzwmhwM26OXgzXwhV2PyPuLV.Qi31ILcRcThQpEiW",
    "{BLF-CRYPT}$2y$05$tooshort",
    "{PBKDF2}$1$bUnT4Pl7yFtYX0KU$5000$50a83cafdc517b9f46519415e53c6a858908680a",
    "{PBKDF2}$1$salt$5000$50a83caf",
    "{SCRAM-SHA-1}100,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
    "{OTP}sha1 1024 2bf299806f6136df c93e33d6888375a8",
    "{OTP}SHA1 1024 2BF299806F6136DF c93e33d6888375a8",
    "{OTP}sha1 1024 2bf299806f6136df c93e33d6888375a",
    "{OTP}sha1 1024 2BF299806F6136DF C93E33D6888375A8",
    "{OTP}md5 77 abcdef12 150413ee29ec69cc",
    "{OTP}md4 77 abcdef12 f16ae47d6bd66147",
    "{OTP}sha1 1024 2bf29980-f6136df c93e33d6888375a8",
]

# Where authbridge deliberately reports broken data that Dovecot calls a mismatch: libc
# crypt()/libsodium just fail to match, authbridge names the broken entry in its log.
# (Generic {CRYPT} keeps Dovecot's behaviour: locked "!"/"*" entries are a mismatch.)
DELIBERATE_DIFFERENCES = {
    "{SHA512-CRYPT}plainly-wrong",
    "{SHA512-CRYPT}$6$saltsalt$short",
    "{MD5-CRYPT}$1$toolongsaltvalue$OjZhLh4P.gF1lxYEbLZ3e/",
    "{DES-CRYPT}toolongforDESx",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$garbage",
}


@pytest.mark.parametrize("value", EDGE_CASES + sorted(DELIBERATE_DIFFERENCES))
def test_edge_case_verdicts_match_doveadm(doveadm: str, value: str) -> None:
    (verdict,) = _verdicts(doveadm, [(value, "test")])
    ours = _authbridge(value, "test")
    if value in DELIBERATE_DIFFERENCES:
        assert (verdict.outcome, ours) == ("mismatch", "error")
    else:
        assert ours == verdict.outcome, verdict.stderr


@pytest.mark.parametrize("password", list(PASSWORDS.values()), ids=list(PASSWORDS))
def test_mechanism_credentials_from_doveadm_hashes(doveadm: str, password: str) -> None:
    """CRAM-MD5 context, SCRAM keys and DIGEST-MD5 secret made by doveadm serve the mechanism."""
    schemes = ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "DIGEST-MD5"]
    made = _run_all(
        [[doveadm, "-c", "/dev/null", "pw", *_make_args(s), "-p", password] for s in schemes]
    )
    cram, scram1, scram256, digest = (parse_stored(r.stdout.strip()) for r in made)
    secret = password.encode()
    challenge = b"<1234567890123456.1700000000@host>"

    context = cram_md5_context(cram)
    assert context is not None
    assert cram_md5_digest(context, challenge) == hmac.new(secret, challenge, "md5").digest()

    for stored, algorithm, name in ((scram1, "SHA-1", "sha1"), (scram256, "SHA-256", "sha256")):
        creds = scram_credentials(stored, algorithm, USER)
        assert creds is not None
        iterations, salt, stored_key, server_key = creds
        salted = hashlib.pbkdf2_hmac(name, secret, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", name).digest()
        assert hashlib.new(name, client_key).digest() == stored_key
        assert hmac.new(salted, b"Server Key", name).digest() == server_key

    expected = hashlib.md5(b"testuser1:example.org:" + secret).digest()
    assert digest_md5_secret(digest, USER) == expected
