"""Issue 18 in-process: keyed fingerprints, the spraying counts and who waits, the
per-address distinct-user limit, and the configuration's refusals.

On explicit clocks and the pipeline's sync path; the shared state on a real Redis is in
tests/fleet/."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.fingerprint import Fingerprints
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline, Pending, _Hold, _PenaltyWait
from authbridge.checks.spraying import spray_delay
from authbridge.config import ConfigError, parse_config
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Verdict
from authbridge.passdb.passwd_file import PasswdFileStore

SPRAY = PenaltySettings(steps=(1.0, 2.0), user_threshold=3, user_steps=(0.5, 1.5))


def _pipeline(tmp_path: Path, settings: PenaltySettings = SPRAY) -> CheckPipeline:
    path = tmp_path / "users"
    path.write_text("".join(f"u{n}:{{PLAIN}}pw{n}\n" for n in range(20)))
    store = PasswdFileStore(path)
    store.load()
    return CheckPipeline(
        Authenticator([store], Hasher()), penalty=PenaltyTracker(settings), clock=lambda: 0.0
    )


def _info(rip: str) -> RequestInfo:
    return RequestInfo(id=1, mechanism="PLAIN", service="smtp", rip=rip, secured=True)


def test_fingerprints_are_keyed() -> None:
    a, b = Fingerprints(), Fingerprints()
    assert a.guess("u", b"pw") == a.guess("u", b"pw") != b.guess("u", b"pw")
    shared1, shared2 = Fingerprints(b"k" * 32), Fingerprints(b"k" * 32)
    assert shared1.guess("u", b"pw") == shared2.guess("u", b"pw")
    assert shared1.user("u") == shared2.user("u") != Fingerprints(b"j" * 32).user("u")
    # Neither is the unkeyed hash of what was typed.
    for digest in (
        hashlib.blake2b(b"u\0pw", digest_size=8),
        hashlib.blake2s(b"u\0pw", digest_size=8),
    ):
        assert shared1.guess("u", b"pw") != digest.digest()


def test_spray_delay_starts_at_the_threshold_and_is_capped() -> None:
    assert [spray_delay(SPRAY, n) for n in range(7)] == [0, 0, 0, 0.5, 1.5, 1.5, 1.5]


def test_sprayed_account_right_password_from_a_clean_address_is_not_held(tmp_path: Path) -> None:
    checks = _pipeline(tmp_path)
    for n in range(5):  # one guess from each of five addresses: 5 >= threshold
        verdict = checks.run(_info(f"198.51.100.{n}"), VerifyPlain("u1", "", b"spray"), 0.0)
        assert isinstance(verdict, (Verdict, Pending))
        if isinstance(verdict, Pending):
            assert type(verdict.op) is _Hold  # the FAIL of a clean address, held
            verdict.close()
    fleet = checks.penalty.fleet  # type: ignore[union-attr]
    assert fleet.users.count("u1", 0.0) == 5
    # The rightful user from a clean address: answered at once, on the sync path.
    ok = checks.run(_info("192.0.2.200"), VerifyPlain("u1", "", b"pw1"), 0.0)
    assert isinstance(ok, Verdict) and ok.ok
    # A wrong guess from a clean address: checked at once, its FAIL held (5 - 3 -> 1.5 s).
    wrong = checks.run(_info("192.0.2.201"), VerifyPlain("u1", "", b"other"), 0.0)
    assert isinstance(wrong, Pending) and type(wrong.op) is _Hold and wrong.op.delay == 1.5
    wrong.close()
    # From an address that failed: held before its check, the larger step (never both).
    again = checks.run(_info("198.51.100.0"), VerifyPlain("u1", "", b"pw1"), 0.0)
    assert isinstance(again, Pending) and type(again.op) is _PenaltyWait
    assert again.op.delay == 1.5
    again.close()
    # Another account is not affected.
    other = checks.run(_info("192.0.2.202"), VerifyPlain("u2", "", b"nope"), 0.0)
    assert isinstance(other, Verdict) and not other.ok


def test_identical_wrong_password_counts_once_for_the_account(tmp_path: Path) -> None:
    checks = _pipeline(tmp_path)
    for _ in range(10):
        result = checks.run(_info("198.51.100.9"), VerifyPlain("u3", "", b"stale"), 0.0)
        if isinstance(result, Pending):
            result.close()
    fleet = checks.penalty.fleet  # type: ignore[union-attr]
    assert fleet.users.count("u3", 0.0) == 1
    assert checks.penalty.level_of("198.51.100.9", 0.0) == 1  # type: ignore[union-attr]


def test_many_user_names_from_one_address_escalate_faster() -> None:
    tracker = PenaltyTracker(PenaltySettings(max_users_per_ip=3))
    rip = "203.0.113.50"
    levels = []
    for n in range(6):
        tracker.failed(rip, f"victim{n}", b"Summer2026", 0.0)
        levels.append(tracker.level_of(rip, 0.0))
    assert levels == [1, 2, 3, 5, 7, 9]
    plain = PenaltyTracker(PenaltySettings(max_users_per_ip=3, spraying=False))
    for n in range(6):
        plain.failed(rip, f"victim{n}", b"Summer2026", 0.0)
    assert plain.level_of(rip, 0.0) == 6


def test_spraying_off_and_local_backend_keep_the_plain_tracker() -> None:
    assert PenaltyTracker(PenaltySettings(spraying=False)).fleet is None
    assert PenaltyTracker(PenaltySettings()).fleet is not None
    assert PenaltyTracker(PenaltySettings()).fleet.shared is None  # type: ignore[union-attr]


def test_config_fleet_keys(tmp_path: Path) -> None:
    key = tmp_path / "fleet.key"
    key.write_text("0123456789abcdef-secret\n")
    config = parse_config(
        f'[penalty]\nbackend = "redis"\nredis_url = "rediss://:pw@redis.example:6380/2"\n'
        f'password_fingerprint_key_file = "{key}"\nkey_prefix = "mx:"\n',
        "a.toml",
    )
    assert config.penalty.backend == "redis" and config.penalty.key_prefix == "mx:"
    assert config.penalty.password_fingerprint_key_file == str(key)
    refusals = {
        '[penalty]\nbackend = "redis"\nredis_url = "redis://x"\n': (
            "penalty.password_fingerprint_key_file",
            "one file on every host",
        ),
        '[penalty]\nbackend = "redis"\nredis_url = "http://x"\n': ("penalty.redis_url",),
        '[penalty]\nbackend = "memcached"\n': ("penalty.backend", "local, redis"),
        f'[penalty]\npassword_fingerprint_key_file = "{tmp_path}/none"\n': (
            "penalty.password_fingerprint_key_file",
            "cannot read",
        ),
        "[penalty]\nuser_steps = [1, 8.5]\n": ("penalty.user_steps", "10 s"),
        "[penalty]\nuser_threshold = 0\n": ("penalty.user_threshold",),
    }
    short = tmp_path / "short.key"
    short.write_text("short")
    refusals[f'[penalty]\npassword_fingerprint_key_file = "{short}"\n'] = ("at least 16 bytes",)
    for text, needles in refusals.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "a.toml")
        assert str(caught.value).startswith("a.toml:"), str(caught.value)
        for needle in needles:
            assert needle in str(caught.value), (text, str(caught.value))
    # The spraying steps count towards Postfix's limit only while spraying is on.
    parse_config("[penalty]\nspraying = false\nuser_steps = [1, 8.5]\n")
