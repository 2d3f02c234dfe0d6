"""Issue #17 item 1: every store entry is checked at load, and a broken one is a plain
failure at login (never a 435), reported with its file and line, never its hash."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from authbridge import schemes
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.passdb import StoreFormatError
from authbridge.passdb.exim_file import EximFileStore
from authbridge.passdb.passwd_file import PasswdFileStore
from authbridge.passdb.sql import SqlStore
from authbridge.passdb.sql_sqlite import SqliteBackend
from authbridge.schemes import wellformed
from tests.sql.conftest import QUERY, make_sqlite
from tests.support import free_tcp_port, runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

GOOD = "good:{PLAIN}goodpass::::::\n"
#: Found 1 of the issue, one kind a line: (line, what the warning must say).
BAD_KINDS = {
    "unknown scheme": ("x:{NOSUCH}abc::::::", "user 'x': unknown password scheme {NOSUCH}"),
    "malformed hash": (
        "u1:{SHA512-CRYPT}notahash::::::",
        "user 'u1': SHA512-CRYPT: stored data is not a SHA512-CRYPT hash",
    ),
    "no colon": ("nocolon", "user 'nocolon' has no password field"),
    "empty user name": (":{PLAIN}x", "empty user name: line skipped"),
    "upper case": (
        "Alice@Example.org:{PLAIN}x::::::",
        "user 'Alice@Example.org' can never match: logins are looked up as 'alice@example.org'",
    ),
    "bad base64 digest": ("d:{SHA256}abcd::::::", "user 'd': SHA256: stored data has length 3"),
    "bad bcrypt": ("b:{BLF-CRYPT}$2y$05$short::::::", "user 'b': BLF-CRYPT: stored data is not"),
    "empty password": ("e:{PLAIN}::::::", "user 'e': empty password ({PLAIN})"),
    "duplicate": ("good:{PLAIN}other::::::", "user 'good' exists more than once; line 1 wins"),
}
#: What no warning, log line or output may ever show: the stored values.
SECRETS = ("notahash", "abcd", "$2y$05$short", "goodpass", "abc::")
#: The issue's whole file: a BOM before the first user, then every bad kind, then good.
ISSUE_FILE = (
    "\ufeffbom:{PLAIN}x::::::\n"
    + "".join(line + "\n" for line, _ in BAD_KINDS.values() if not line.startswith("good:"))
    + GOOD
    + "plainuser:{PLAIN}plainpass::::::\n"
)


def _store(tmp_path: Path, text: str, **options: object) -> PasswdFileStore:
    path = tmp_path / "users"
    path.write_text(text, encoding="utf-8")
    return PasswdFileStore(path, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_each_bad_kind_is_a_warning_naming_file_and_line(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line, reason = BAD_KINDS[kind]
    store = _store(tmp_path, GOOD + line + "\n")
    with caplog.at_level(logging.WARNING):
        store.load()
    assert f"{store.path}:2: {reason}" in caplog.text
    assert [p.line for p in store.problems] == [2]
    assert "invalid_entries=1" in caplog.text
    assert store.get("good") is not None  # the rest of the file serves
    for secret in ("notahash", "$2y$05$short", "goodpass"):
        assert secret not in caplog.text


def test_a_bom_before_the_first_user_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path, "\ufeffalice:{PLAIN}x::::::\n" + GOOD)
    with caplog.at_level(logging.WARNING):
        store.load()
    assert f"{store.path}:1: user '\\ufeffalice' starts with a UTF-8 byte order mark" in (
        caplog.text
    )


def test_the_issue_file_loads_with_every_problem_counted(tmp_path: Path) -> None:
    store = _store(tmp_path, ISSUE_FILE)
    store.load()
    lines = [p.line for p in store.problems]
    assert lines == list(range(1, len(BAD_KINDS) + 1))  # BOM + the 8 bad lines (no dup)
    assert store.invalid_entry("u1") is not None and store.invalid_entry("good") is None


def test_valid_entries_of_every_scheme_raise_nothing(tmp_path: Path) -> None:
    text = "".join(
        f"u{n}:{schemes.generate(name, b'pw', f'u{n}')}::::::\n"
        for n, name in enumerate(schemes.available_schemes())
    )
    locked = "locked:{CRYPT}!$6$x$y::::::\nopen:::::::nopassword\n"
    store = _store(tmp_path, text + locked)
    store.load()
    assert store.problems == []


@pytest.mark.parametrize(
    "value",
    [
        "{MD5-CRYPT}$1$abc",
        "{SHA256-CRYPT}$5$salt$tooshort",
        "{DES-CRYPT}abc",
        "{CRYPT}not-a-crypt-hash",
        "{ARGON2ID}$argon2id$v=19$broken",
        "{PBKDF2}$1$salt$5000$nothex",
        "{SCRAM-SHA-256}4096,a,b",
        "{SSHA}YWJj",
        "{PLAIN-MD5}not-hex-and-not-base64!",
        "{OTP}md5 99",
        "{PLAIN-TRUNC}nolength",
        "{MD5}zzz",
    ],
)
def test_malformed_values_are_named_without_their_data(value: str) -> None:
    stored = schemes.parse_stored(value)
    reason = wellformed.problem(stored)
    assert reason is not None and reason.startswith(stored.scheme)
    assert stored.data not in reason


def test_strict_refuses_the_file_and_keeps_the_last_good_copy(tmp_path: Path) -> None:
    store = _store(tmp_path, GOOD, strict=True)
    assert store.load() == 1
    store.path.write_text(GOOD + "u1:{SHA512-CRYPT}notahash::::::\n")
    with pytest.raises(StoreFormatError, match=rf"{re.escape(str(store.path))}:2: user 'u1'"):
        store.load()
    assert store.get("good") is not None and store.get("u1") is None
    assert "notahash" not in str(store.problems)


def test_exim_file_entries_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(
        "\ufeffbom:5ebe2294ecd0e0f08eab7690d2a6ee69\nnopass\nx:{NOSUCH}abc\n"
        "ok:5ebe2294ecd0e0f08eab7690d2a6ee69\n"
    )
    store = EximFileStore(path)
    assert store.load() == 4
    assert [str(p) for p in store.problems] == [
        f"{path}:1: user '\\ufeffbom' starts with a UTF-8 byte order mark: it can never match",
        f"{path}:2: user 'nopass' has no password",
        f"{path}:3: user 'x': unknown password scheme {{NOSUCH}}",
    ]


# ---------------------------------------------------------------- the daemon


def _auth_test(socket: Path, user: str, password: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "auth", "test", "-a", str(socket), user, password],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).returncode


LOGIN_OK, LOGIN_FAILED, LOGIN_TEMPFAIL = 0, 77, 75


@pytest.fixture
def issue_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = runtime_dir(tmp_path_factory, "validation") / "users"
    path.write_text(ISSUE_FILE, encoding="utf-8")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("mode", [(), ("--dovecot-compat",)], ids=["default", "compat"])
def test_broken_entries_fail_plainly_and_good_users_log_in(
    issue_users: Path, mode: tuple[str, ...]
) -> None:
    """Before issue #17, x and u1 were temporary failures (exit 75, Exim 435) in the
    default mode; Dovecot 2.3 answers a plain FAIL for both, as authbridge now does."""
    port = free_tcp_port()
    server = AuthbridgeServer(
        issue_users,
        issue_users.with_name("auth-client"),
        extra_args=(*mode, "--failure-delay", "0", "--metrics-listen", f"127.0.0.1:{port}"),
    )
    with server:
        assert _auth_test(server.socket_path, "good", "goodpass") == LOGIN_OK
        assert _auth_test(server.socket_path, "plainuser", "plainpass") == LOGIN_OK
        for user in ("x", "u1", "nocolon"):
            assert _auth_test(server.socket_path, user, "whatever") == LOGIN_FAILED, user
        log = wait_for_text(server.stderr_text, REFUSED, count=3)
        refused = {e["user"]: e for e in _events(log, REFUSED)}
        assert refused["u1"]["where"] == f"{issue_users}:3"
        assert refused["u1"]["reason"].startswith("user 'u1': SHA512-CRYPT")
        assert refused["x"]["where"] == f"{issue_users}:2"
        assert refused["x"]["reason"].startswith("user 'x': unknown password scheme")
        assert _events(log, "store has invalid entries")[0]["invalid_entries"] == 9
        first = [e for e in _events(log, "invalid store entry") if e["where"].endswith(":1")]
        assert first[0]["where"] == f"{issue_users}:1"
        assert first[0]["reason"].startswith("user '")
        for secret in SECRETS:
            assert secret not in log, secret
        scrape = wait_for_value(
            lambda: _scrape(port), lambda text: "authbridge_store_invalid_entries{" in text
        )
        assert f'authbridge_store_invalid_entries{{store="passwd-file:{issue_users}"}} 9.0' in (
            scrape
        )


#: The event of a login refused because the load found the user's entry unusable.
REFUSED = "login refused: invalid store entry"


def _events(log: str, event: str) -> list[dict[str, Any]]:
    """The JSON lines of ``log`` whose event is ``event``."""
    found = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [e for e in found if e.get("event") == event]


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def test_serve_strict_refuses_to_start(issue_users: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--strict",
            "--passwd-file",
            str(issue_users),
            "--socket",
            str(issue_users.with_name("strict-socket")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "AUTHBRIDGE_CONFIG": "/nonexistent"},
    )
    assert proc.returncode != 0
    assert f"{issue_users}:1: user '" in proc.stderr and "refused by --strict" in proc.stderr
    assert not issue_users.with_name("strict-socket").exists()


def test_serve_strict_refuses_a_reload_and_keeps_serving(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = runtime_dir(tmp_path_factory, "strict-reload")
    users = directory / "users"
    users.write_text(GOOD)
    users.chmod(0o644)
    server = AuthbridgeServer(
        users, directory / "auth-client", extra_args=("--strict", "--failure-delay", "0")
    )
    with server:
        assert _auth_test(server.socket_path, "good", "goodpass") == LOGIN_OK
        replacement = directory / "users.new"
        replacement.write_text("x:{NOSUCH}abc::::::\nnewuser:{PLAIN}newpass::::::\n")
        replacement.chmod(0o644)
        replacement.replace(users)  # the watcher sees the change within a second
        log = wait_for_text(server.stderr_text, "refused by --strict")
        assert f"{users}:1: user 'x'" in log
        assert _auth_test(server.socket_path, "good", "goodpass") == LOGIN_OK
        assert _auth_test(server.socket_path, "newuser", "newpass") == LOGIN_FAILED


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "AUTHBRIDGE_CONFIG": "/nonexistent"},
    )


def test_check_lists_every_invalid_entry_and_exits_1(issue_users: Path) -> None:
    config = issue_users.with_name("authbridge.toml")
    config.write_text(
        f'[server]\nsocket = "{issue_users.with_name("s")}"\nmechanisms = ["plain"]\n'
        f'[[store]]\ntype = "passwd-file"\npath = "{issue_users}"\n'
    )
    proc = _command("check", "--config", str(config))
    assert proc.returncode == 1
    listed = re.findall(rf"^problem: {re.escape(str(issue_users))}:(\d+): ", proc.stdout, re.M)
    assert listed == [str(n) for n in range(1, 10)]
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, secret


def test_capabilities_shows_invalid_and_disabled_users(issue_users: Path) -> None:
    with issue_users.open("a") as users:
        users.write(
            "moved:{PLAIN}x::::::nologin reason=Mailbox_moved\nleft:{PLAIN}x::::::nologin\n"
        )
    proc = _command("capabilities", "--passwd-file", str(issue_users))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in proc.stdout.splitlines()}
    assert rows["u1"][2] == "-" and rows["u1"][3].startswith(f"invalid: {issue_users}:3: ")
    assert rows["x"][3].startswith(f"invalid: {issue_users}:2: user 'x': unknown password scheme")
    assert rows["moved"][3] == "disabled (nologin: Mailbox_moved)"
    assert rows["left"][3] == "disabled (nologin)"
    assert len(rows["good"]) == 3  # usable: no status column
    assert "-\t-\t-\tinvalid: " + f"{issue_users}:5: empty user name" in proc.stdout
    # Only good and plainuser can use PLAIN; the others are invalid or disabled.
    assert "PLAIN          usable by 2 of" in proc.stderr
    assert "disabled" in proc.stderr and "2 disabled" in proc.stderr


# ---------------------------------------------------------------- SQL rows


async def test_a_malformed_sql_row_is_a_plain_failure_logged_without_its_hash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = make_sqlite(
        tmp_path / "users.sqlite",
        [
            ("u1@example.org", "{SHA512-CRYPT}notahash"),
            ("x@example.org", "{NOSUCH}abc"),
            ("ok@example.org", "{PLAIN}okpass"),
        ],
    )
    store = SqlStore(SqliteBackend(str(db)), QUERY)
    auth = Authenticator([store], Hasher())
    info = RequestInfo(id=1, mechanism="PLAIN", service="smtp", secured=True)
    try:
        with caplog.at_level(logging.INFO):
            for user in ("u1@example.org", "x@example.org"):
                verdict = await auth.check(info, VerifyPlain(user, "", b"whatever"))
                assert isinstance(verdict, Verdict)
                assert verdict.outcome is Outcome.FAIL, user  # was TEMPFAIL
                assert verdict.reason is Reason.BROKEN_HASH
            ok = await auth.check(info, VerifyPlain("ok@example.org", "", b"okpass"))
            assert isinstance(ok, Verdict) and ok.outcome is Outcome.OK
    finally:
        await store.aclose()
    assert f"store={store.name} user=u1@example.org row: SHA512-CRYPT: " in caplog.text
    assert f"store={store.name} user=x@example.org row: unknown password scheme" in caplog.text
    assert "notahash" not in caplog.text
