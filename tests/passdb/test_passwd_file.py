"""Dovecot passwd-file parsing: fields, comments, compat suffixes, duplicates, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.passdb.base import StoreFormatError, StoreUnavailable
from authbridge.passdb.passwd_file import PasswdFileStore, parse_passwd_file

TEXT = """\
# comment
:also skipped
userx:{PLAIN}secret
usery:{SHA512-CRYPT}$6$x$y::::::nologin reason=Disabled
userz:{PLAIN}pw::::::allow_nets=192.168.0.0/24,local
vmail:{PLAIN}v:5000:5000::/home/vmail::userdb_quota_rule=*:storage=1G
bare
crlf:{PLAIN}crlf\r
legacy:098f6bcd4621d373cade4e832627b4f6[34]
nopre:secret
userx:{PLAIN}second-entry-ignored
"""


@pytest.fixture
def entries():  # type: ignore[no-untyped-def]
    return parse_passwd_file(TEXT, "users")


def test_comment_and_colon_lines_are_skipped(entries) -> None:  # type: ignore[no-untyped-def]
    assert "# comment" not in entries and "" not in entries


def test_password_and_scheme(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["userx"].password.scheme == "PLAIN"
    assert entries["userx"].password.data == "secret"


def test_first_duplicate_wins(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["userx"].password.data == "secret"


def test_extra_fields_start_at_field_eight_and_split_on_spaces(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["usery"].fields == (("nologin", None), ("reason", "Disabled"))
    assert entries["userz"].field("allow_nets") == "192.168.0.0/24,local"
    assert entries["vmail"].fields == (("userdb_quota_rule", "*:storage=1G"),)


def test_a_line_with_only_a_name_has_no_password(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["bare"].password is None


def test_crlf_lines_are_fine(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["crlf"].password.data == "crlf"


def test_pam_pwdfile_suffix_34_is_plain_md5(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["legacy"].password.scheme == "PLAIN-MD5"


def test_unprefixed_password_uses_the_default_scheme(entries) -> None:  # type: ignore[no-untyped-def]
    assert entries["nopre"].password.scheme == "CRYPT"


def test_repr_of_an_entry_never_shows_the_hash(entries) -> None:  # type: ignore[no-untyped-def]
    assert "secret" not in repr(entries["userx"])


def test_store_reads_the_file_and_reports_an_unreadable_one(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("a:{PLAIN}b\n")
    store = PasswdFileStore(path)
    assert store.load() == 1
    path.unlink()
    with pytest.raises(StoreUnavailable, match="cannot read"):
        store.load()
    assert len(store) == 1  # the last good copy stays in service


def test_a_bad_compat_value_drops_only_that_user() -> None:
    entries = parse_passwd_file("good:{PLAIN}x\nbad:abcdef[56]\n", "users")
    assert list(entries) == ["good"]


def test_nul_bytes_mean_this_is_not_a_passwd_file() -> None:
    with pytest.raises(StoreFormatError, match="users:2: NUL byte"):
        parse_passwd_file("good:{PLAIN}x\nbad:\x00\n", "users")
