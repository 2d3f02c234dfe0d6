"""Item 8: no user enumeration — by time, and secrets compared in constant time.

An unknown user must cost what a wrong password costs: the authenticator verifies the
typed password against a real stored hash (the "dummy"), and that dummy must be as
expensive as the store's real hashes. Comparisons go through ``hmac.compare_digest``.
"""

from __future__ import annotations

import hmac
import statistics
import time
from pathlib import Path

import pytest

from authbridge import schemes
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.schemes import StoredPassword
from tests.policy.authclient import AuthClient
from tests.policy.conftest import StartBridge

INFO = RequestInfo(id=1, mechanism="PLAIN", service="smtp", secured=True)


class _CountingHasher(Hasher):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def verify(self, stored: StoredPassword, password: bytes, user: str) -> bool:
        self.calls.append(stored.scheme)
        return await super().verify(stored, password, user)


def _store(tmp: Path, lines: list[str]) -> PasswdFileStore:
    path = tmp / "users.passwd"
    path.write_text("".join(line + "\n" for line in lines))
    store = PasswdFileStore(path, "CRYPT")
    store.load()
    return store


async def test_unknown_user_runs_one_real_verification(tmp_path: Path) -> None:
    sha = schemes.generate("SHA512-CRYPT", b"right", "alice")
    store = _store(
        tmp_path, [f"alice:{sha}", f"bob:{schemes.generate('SHA512-CRYPT', b'x', 'bob')}"]
    )
    hasher = _CountingHasher()
    auth = Authenticator([store], hasher)
    auth.dummy_password = store.sample_password()
    wrong = await auth.check(INFO, VerifyPlain("alice", "", b"guess"))
    unknown = await auth.check(INFO, VerifyPlain("mallory", "", b"guess"))
    assert isinstance(wrong, Verdict) and isinstance(unknown, Verdict)
    assert wrong.outcome is unknown.outcome is Outcome.FAIL
    assert (wrong.reason, unknown.reason) == (Reason.PASSWORD_MISMATCH, Reason.USER_UNKNOWN)
    assert hasher.calls == ["SHA512-CRYPT", "SHA512-CRYPT"]


def _sample_scheme(tmp: Path, first: str) -> str:
    lines = [f"first:{schemes.generate(first, b'a', 'first')}"]
    lines += [f"u{n}:{schemes.generate('SHA512-CRYPT', b'b', f'u{n}')}" for n in range(3)]
    sample = _store(tmp, lines).sample_password()
    assert sample is not None
    return sample.scheme


@pytest.mark.parametrize("first", ["CRAM-MD5", "SSHA"])
def test_dummy_hash_is_an_expensive_one(tmp_path: Path, first: str) -> None:
    """A cheap hash first in the file must not become the dummy while real ones are costly."""
    assert schemes.is_expensive(schemes.parse_stored("{SHA512-CRYPT}$6$x$y"))
    scheme = _sample_scheme(tmp_path, first)
    assert schemes.is_expensive(schemes.parse_stored("{" + scheme + "}x")), scheme


def _median_reply_time(client: AuthClient, user: str, start_id: int, rounds: int) -> float:
    times = []
    for n in range(rounds):
        started = time.perf_counter()
        reply = client.plain(start_id + n, user, f"guess-{n}", "secured")
        times.append(time.perf_counter() - started)
        assert reply.startswith("FAIL"), reply
    return statistics.median(times)


def test_daemon_unknown_user_costs_a_wrong_password(bridge: StartBridge, policy_dir: Path) -> None:
    """Medians over many tries; a missing or cheap dummy is ~10x faster, not 10 %."""
    users = policy_dir / "enum-users.passwd"
    lines = ["cram:" + schemes.generate("CRAM-MD5", b"c", "cram")]
    lines += [f"user{n}:" + schemes.generate("SHA512-CRYPT", b"pw", f"user{n}") for n in range(5)]
    users.write_text("".join(line + "::::::\n" for line in lines))
    users.chmod(0o644)
    server = bridge(
        "enum", "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n", users=users
    )
    with AuthClient(server.socket_path) as client:
        _median_reply_time(client, "user1", 1000, 3)  # warm-up
        wrong = _median_reply_time(client, "user2", 1, 21)
        unknown = _median_reply_time(client, "nosuchuser", 100, 21)
    assert unknown / wrong > 0.5, f"unknown {unknown * 1e3:.2f} ms, wrong {wrong * 1e3:.2f} ms"


SCHEMES = ["PLAIN", "CLEAR", "PLAIN-MD5", "SHA256", "SSHA512", "CRAM-MD5", "SHA512-CRYPT",
           "MD5-CRYPT", "BLF-CRYPT", "PBKDF2"]  # fmt: skip
# (Argon2 is verified inside argon2-cffi's C code, which compares in constant time.)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_password_checks_compare_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    compared: list[bool] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        result = real(a, b)
        compared.append(result)
        return result

    monkeypatch.setattr(hmac, "compare_digest", recording)
    stored = schemes.parse_stored(schemes.generate(scheme, b"s3cret", "user"))
    for password, expected in ((b"s3cret", True), (b"s3creT", False), (b"", False)):
        compared.clear()
        assert schemes.verify_password(stored, password, "user") is expected
        assert compared and compared[-1] is expected, (scheme, password, compared)
