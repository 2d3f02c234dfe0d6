"""The app password companion file: its format, its writes, expiry, service scope, and
the generated passwords (real files on disk, real hashes)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from authbridge.commands.app_password import (
    GROUP_LENGTH,
    GROUPS,
    UsageError,
    generate_password,
    parse_expiry,
)
from authbridge.passdb import app_passwords as ap
from authbridge.passdb.base import StoreFormatError
from authbridge.schemes import generate, parse_stored, verify_password

HASH = generate("SSHA512", b"device-pass", "alice")


def entry(label: str = "phone", services: tuple[str, ...] = (), expires: float | None = None):  # type: ignore[no-untyped-def]
    return ap.AppPassword("alice", label, parse_stored(HASH), services, expires)


# ---------------------------------------------------------------------- the format


def test_a_file_with_comments_blank_lines_and_crlf_parses() -> None:
    data = (
        "# user:label:hash:services:expires\r\n"
        "\n"
        f"alice:phone:{HASH}:smtp:20300101T000000Z\r\n"
        f"alice:laptop:{HASH}:smtp,IMAP:\n"
        f"bob:tablet:{HASH}::"
    ).encode()
    found = ap.parse_file(data, "apps")
    phone, laptop = found["alice"]
    assert (phone.label, phone.services, phone.expires) == ("phone", ("smtp",), 1893456000.0)
    assert (laptop.services, laptop.expires) == (("smtp", "imap"), None)
    assert found["bob"][0].services == ()
    assert verify_password(phone.password, b"device-pass", "alice")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (f"alice:phone:{HASH}:smtp", "(5 fields), found 4"),
        (f"alice:phone:{HASH}:smtp::extra", "(5 fields), found 6"),
        (f":phone:{HASH}::", "empty user name"),
        (f"alice:my phone:{HASH}::", "label 'my phone'"),
        (f"alice::{HASH}::", "label ''"),
        ("alice:phone:{NOSUCH}abc::", "NOSUCH"),
        ("alice:phone:{SSHA512}!!notbase64::", "label 'phone'"),
        (f"alice:phone:{HASH}:sm tp:", "services: 'sm tp'"),
        (f"alice:phone:{HASH}::2030-01-01", "expires '2030-01-01'"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(line: str, says: str) -> None:
    data = f"# header\nbob:ok:{HASH}::\n{line}\n".encode()
    with pytest.raises(StoreFormatError) as caught:
        ap.parse_file(data, "/etc/authbridge/users.app")
    message = str(caught.value)
    assert message.startswith("/etc/authbridge/users.app:3: "), message
    assert says in message
    assert HASH not in message  # a hash is never quoted


def test_a_label_twice_for_one_user_is_refused_with_its_line() -> None:
    data = f"alice:phone:{HASH}::\nbob:phone:{HASH}::\nalice:phone:{HASH}:smtp:\n".encode()
    with pytest.raises(StoreFormatError, match=r"^apps:3: user 'alice' has label 'phone' twice"):
        ap.parse_file(data, "apps")


def test_a_bad_file_keeps_the_last_good_copy_serving(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    path.write_text(f"alice:phone:{HASH}::\n")
    source = ap.AppPasswordFile(path)
    assert source.load() == 1
    path.write_text(f"alice:phone:{HASH}::\nalice:broken\n")
    with pytest.raises(StoreFormatError, match=r"users\.app:2"):
        source.load()
    assert [e.label for e in source.get("alice")] == ["phone"]


def test_a_missing_file_means_no_app_passwords_until_it_appears(tmp_path: Path) -> None:
    source = ap.AppPasswordFile(tmp_path / "users.app")
    assert source.load() == 0 and not source.exists()
    assert source.get("alice") == ()
    ap.add(source.path, entry(), HASH)
    assert source.exists() and source.load() == 1


# ---------------------------------------------------------------------- expiry, scope


def test_expiry_and_service_scope() -> None:
    now = 2_000_000_000.0
    anywhere = entry()
    smtp_only = entry(services=("smtp",))
    expired = entry(expires=now - 1)
    expiring = entry(expires=now + 1)
    assert anywhere.usable("smtp", now) and anywhere.usable("imap", now)
    assert smtp_only.usable("smtp", now) and not smtp_only.usable("imap", now)
    assert not expired.usable("smtp", now)
    assert expiring.usable("smtp", now) and not expiring.usable("smtp", now + 1)


def test_expiry_times_read_back_as_written() -> None:
    when = 1_900_000_000.0
    line = ap.format_line(entry(expires=when, services=("smtp", "imap")), HASH)
    assert ":smtp,imap:20300317T" in line
    assert ap.parse_line(line.rstrip("\n"), "x:1").expires == when


def test_parse_expiry_durations_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_expiry("90d", now) == now + 90 * 86400
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("2w", now) == now + 14 * 86400
    assert parse_expiry("2030-01-01", now) == 1893456000.0
    for bad in ("0d", "-3d", "90", "90y", "2030-13-01", "tomorrow", "2001-01-01"):
        with pytest.raises(UsageError, match="--expires"):
            parse_expiry(bad, now)


# ---------------------------------------------------------------------- writes


OTHERS = (
    b"# app passwords\r\n"
    b"bob:phone:" + HASH.encode() + b"::\r\n"
    b"\n"
    b"carol:x:" + HASH.encode() + b":imap:20300101T000000Z"  # no final newline
)


def test_add_keeps_every_other_byte_and_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    path.write_bytes(OTHERS)
    path.chmod(0o640)
    inode = path.stat().st_ino
    ap.add(path, entry(services=("smtp",)), HASH)
    data = path.read_bytes()
    assert data.startswith(OTHERS + b"\n")  # the missing newline added, nothing else
    assert data.endswith(f"alice:phone:{HASH}:smtp:\n".encode())
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # replaced by a rename, not written in place
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]


def test_add_refuses_a_duplicate_label_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    ap.add(path, entry(), HASH)
    before = path.read_bytes()
    with pytest.raises(ap.DuplicateLabel, match="already has an app password 'phone'"):
        ap.add(path, entry(services=("imap",)), HASH)
    assert path.read_bytes() == before
    ap.add(path, entry("laptop"), HASH)  # another label is fine
    assert len(ap.parse_file(path.read_bytes())["alice"]) == 2


def test_add_creates_the_file_private(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    ap.add(path, entry(), HASH)
    assert path.stat().st_mode & 0o777 == 0o640


def test_revoke_removes_exactly_one_line(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    mine = f"alice:phone:{HASH}::\r\n".encode()
    head = OTHERS.index(b"\n") + 1
    path.write_bytes(OTHERS[:head] + mine + OTHERS[head:])
    assert ap.revoke(path, "alice", "phone")
    assert path.read_bytes() == OTHERS
    assert not ap.revoke(path, "alice", "phone")  # gone already
    assert not ap.revoke(path, "bob", "nosuch")
    assert not ap.revoke(tmp_path / "missing", "bob", "phone")
    assert path.read_bytes() == OTHERS


def test_revoke_works_past_a_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    path.write_bytes(b"garbage line\n" + f"alice:phone:{HASH}::\n".encode())
    assert ap.revoke(path, "alice", "phone")
    assert path.read_bytes() == b"garbage line\n"


def test_an_admin_append_between_read_and_rename_is_kept_by_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app-passwords"
    path.write_text(f"alice:phone:{HASH}::\n")
    parse, edits = ap.parse_file, []

    def parse_then_admin_appends(data: bytes, *args: object) -> object:
        if not edits:  # the admin's ``echo >>`` lands after the command read the file
            edits.append(1)
            with open(path, "a") as admin:
                admin.write(f"bob:tablet:{HASH}::\n")
        return parse(data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ap, "parse_file", parse_then_admin_appends)
    ap.add(path, entry("laptop"), HASH)
    assert path.read_text().splitlines() == [
        f"alice:phone:{HASH}::",
        f"bob:tablet:{HASH}::",
        f"alice:laptop:{HASH}::",
    ]


def test_an_editor_rename_between_read_and_rename_is_kept_by_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app-passwords"
    path.write_text(f"alice:phone:{HASH}::\nalice:laptop:{HASH}::\n")
    lines, edits = ap._lines, []

    def lines_then_editor_saves(data: bytes):  # type: ignore[no-untyped-def]
        if not edits:  # an editor writes a new file and renames it over the old one
            edits.append(1)
            saved = tmp_path / "app-passwords.swp"
            saved.write_text(f"# edited\nalice:phone:{HASH}::\nalice:laptop:{HASH}::\n")
            saved.replace(path)
        return lines(data)

    monkeypatch.setattr(ap, "_lines", lines_then_editor_saves)
    assert ap.revoke(path, "alice", "laptop")
    assert path.read_text() == f"# edited\nalice:phone:{HASH}::\n"


def test_writes_go_through_a_symlink_to_the_real_file(tmp_path: Path) -> None:
    real = tmp_path / "real.app"
    ap.add(real, entry("one"), HASH)
    link = tmp_path / "users.app"
    link.symlink_to(real)
    ap.add(link, entry("two"), HASH)
    assert link.is_symlink()
    assert [e.label for e in ap.parse_file(real.read_bytes())["alice"]] == ["one", "two"]


# ---------------------------------------------------------------------- last used


def test_last_used_is_written_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    ap.add(path, entry(), HASH)
    before = path.read_bytes()
    source = ap.AppPasswordFile(path, interval=3600)
    source.load()
    source.used("alice", "phone", 1000.0)
    assert source.flush() == 1
    source.used("alice", "phone", 2000.0)  # within the hour: not written again
    assert not source.has_pending() and source.flush() == 0
    source.used("alice", "phone", 4700.0)
    assert source.flush() == 1
    assert ap.read_used(path) == {("alice", "phone"): 4700.0}
    assert path.read_bytes() == before  # the admin's file is never touched
    listed = ap.entries_with_use(source, "alice")
    assert listed[0].last_used == 4700.0


def test_state_files_of_two_processes_merge(tmp_path: Path) -> None:
    path = tmp_path / "users.app"
    ap.write_used(path, {("alice", "phone"): 50.0, ("bob", "x"): 10.0})
    ap.write_used(path, {("alice", "phone"): 40.0, ("carol", "y"): 5.0})
    assert ap.read_used(path) == {
        ("alice", "phone"): 50.0,
        ("bob", "x"): 10.0,
        ("carol", "y"): 5.0,
    }


# ---------------------------------------------------------------------- generated passwords


def test_generated_passwords_are_strong_and_distinct() -> None:
    shape = re.compile(r"[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}")
    many = [generate_password() for _ in range(2000)]
    assert all(shape.fullmatch(p) for p in many)
    assert len(set(many)) == len(many)
    assert GROUPS * GROUP_LENGTH * math.log2(26) > 72  # bits
    letters = "".join(p.replace("-", "") for p in many)
    # every letter turns up, none dominates (a CSPRNG over the whole alphabet)
    counts = [letters.count(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    expected = len(letters) / 26
    assert min(counts) > 0.7 * expected and max(counts) < 1.3 * expected


def test_the_cli_stores_the_name_the_daemon_looks_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from authbridge import cli

    users = tmp_path / "users"
    users.write_text("alice@example.org:{PLAIN}x::::::\n")
    config = tmp_path / "ab.toml"
    apps = tmp_path / "users.app"
    config.write_text(
        f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n[app_passwords]\n'
        'scheme = "SSHA512"\n'
    )
    argv = ["app-password", "add", "Alice@Example.ORG", "--label", "phone", "--config"]
    assert cli.main([*argv, str(config)]) == 0
    password = capsys.readouterr().out.strip()
    (stored,) = ap.parse_file(apps.read_bytes())["alice@example.org"]
    assert verify_password(stored.password, password.encode(), "alice@example.org")
    assert password not in apps.read_text()
