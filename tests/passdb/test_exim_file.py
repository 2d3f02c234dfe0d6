"""Exim ``login:md5hash`` files, verified exactly as Exim's crypteq {md5} would."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from authbridge import schemes
from authbridge.passdb.base import StoreFormatError
from authbridge.passdb.exim_file import EximFileStore, parse_exim_file

HEX = hashlib.md5(b"secret").hexdigest()
B64 = base64.b64encode(hashlib.md5(b"secret").digest()).decode()

TEXT = f"""\
# /etc/exim4/passwd  (login:md5hash)
userx:{HEX}
UserY: {B64}
upper:{HEX.upper()}
withfields:{HEX}:extra:stuff
prefixed:{{md5}}{HEX}
sha:{{SHA512-CRYPT}}$6$rounds=1000$0123456789abcdef$ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//LpDnTeO90tcbtHR1

spaced  {HEX}
"""


@pytest.mark.parametrize("user", ["userx", "usery", "upper", "withfields", "prefixed", "spaced"])
def test_md5_forms_verify_like_exim_crypteq(user: str) -> None:
    entry = parse_exim_file(TEXT)[user]
    assert entry.password is not None
    assert schemes.verify_password(entry.password, b"secret", user)
    assert not schemes.verify_password(entry.password, b"Secret", user)


def test_any_dovecot_scheme_with_a_prefix() -> None:
    entry = parse_exim_file(TEXT)["sha"]
    assert entry.password is not None
    assert schemes.verify_password(entry.password, b"08/15!test~4711", "sha")


async def test_keys_match_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(TEXT)
    store = EximFileStore(path)
    assert store.load() == 7
    assert await store.lookup("USERY") is not None


@pytest.mark.parametrize("bad", ["userz:5ebe2294", "userz:not-a-hash-at-all-here"])
def test_a_value_that_cannot_be_an_md5_names_file_and_line(
    bad: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A warning at load (the user stays known and fails to log in); --strict refuses."""
    path = tmp_path / "passwd"
    path.write_text(f"# c\n{bad}\nok:{HEX}\n")
    store = EximFileStore(path)
    assert store.load() == 2
    assert f"{path}:2: user 'userz': expected an MD5 hash" in caplog.text
    assert [p.line for p in store.problems] == [2]
    strict = EximFileStore(path, strict=True)
    with pytest.raises(StoreFormatError, match=rf"{path}:2: user 'userz'"):
        strict.load()
