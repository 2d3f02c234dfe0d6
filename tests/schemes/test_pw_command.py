"""``authbridge pw`` as a user runs it: arguments, stdin, a real terminal, exit codes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from authbridge.schemes import available_schemes, parse_stored, verify_password

PW = [sys.executable, "-m", "authbridge", "pw"]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PW, *args], input=stdin, capture_output=True, timeout=60)


def test_list() -> None:
    result = run("-l")
    assert result.returncode == 0
    assert result.stdout.decode().split() == available_schemes()


def test_default_scheme_is_argon2id() -> None:
    result = run("-p", "s3cret")
    assert result.returncode == 0
    value = result.stdout.decode().strip()
    assert value.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")
    assert verify_password(parse_stored(value), b"s3cret", "") is True


def test_scheme_name_is_case_insensitive_and_printed_upper() -> None:
    result = run("-s", "ssha512", "-p", "x")
    assert result.stdout.decode().startswith("{SSHA512}")


def test_password_from_stdin_one_line_exact_bytes() -> None:
    result = run("-s", "SHA512-CRYPT", stdin=" pässwörd€ \r\nsecond line\n".encode())
    assert result.returncode == 0, result.stderr
    value = result.stdout.decode().strip()
    stored = parse_stored(value)
    assert verify_password(stored, " pässwörd€ ".encode(), "") is True
    assert b"second" not in result.stdout


def test_empty_stdin_is_refused() -> None:
    result = run("-s", "PLAIN")
    assert result.returncode == 2
    assert b"no password" in result.stderr


def test_empty_password_is_refused() -> None:
    result = run("-s", "PLAIN", stdin=b"\n")
    assert result.returncode == 2
    assert b"empty" in result.stderr


def test_verified_flag() -> None:
    result = run("-s", "SHA256-CRYPT", "-p", "x", "-V")
    assert result.returncode == 0
    assert result.stdout.decode().rstrip().endswith(" (verified)")


def test_rounds() -> None:
    result = run("-s", "SHA512-CRYPT", "-r", "2000", "-p", "x")
    assert result.stdout.decode().startswith("{SHA512-CRYPT}$6$rounds=2000$")
    result = run("-s", "BLF-CRYPT", "-r", "6", "-p", "x")
    assert result.stdout.decode().startswith("{BLF-CRYPT}$2y$06$")


def test_digest_md5_needs_user() -> None:
    assert run("-s", "DIGEST-MD5", "-p", "test").returncode == 75  # as doveadm pw
    result = run("-s", "DIGEST-MD5", "-p", "test", "-u", "testuser1")
    assert result.stdout.decode().strip() == "{DIGEST-MD5}77c1a8c437c9b08ba2f460fe5d58db5d"


def test_unknown_scheme() -> None:
    result = run("-s", "NOSUCH", "-p", "hunter2")
    assert result.returncode == 75  # doveadm pw: "Fatal: Unknown scheme", status 75
    assert b"NOSUCH" in result.stderr
    assert b"hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("stored", "password", "code"),
    [
        ("{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "test", 0),
        ("{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "wrong", 75),
        ("{SHA1}not*base64", "test", 75),
        ("{NOSUCH}x", "test", 75),
    ],
)
def test_verify_mode(stored: str, password: str, code: int) -> None:
    result = run("-t", stored, "-p", password)
    assert result.returncode == code
    if code == 0:
        assert result.stdout.decode().strip() == f"{stored} (verified)"
    elif "wrong" in password:
        assert b"mismatch" in result.stderr
    assert password.encode() not in result.stdout + result.stderr


def test_verify_mode_reads_stdin() -> None:
    result = run("-t", "{PLAIN}a b", stdin=b"a b\n")
    assert result.returncode == 0


def _talk(fd: int, answers: list[bytes], deadline: float) -> bytes:
    """Answer each prompt on the terminal in turn; return everything the program wrote."""
    seen = b""
    pending = list(answers)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if pending and seen.rstrip().endswith(b":"):
            os.write(fd, pending.pop(0) + b"\n")
            seen += b"<answered>"
    return seen


@pytest.mark.parametrize(
    ("answers", "ok"),
    [([b"tty-secret", b"tty-secret"], True), ([b"tty-secret", b"different"], False)],
)
def test_prompts_twice_on_a_terminal_without_echo(answers: list[bytes], ok: bool) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin/stdout/stderr are the pty
        os.execv(sys.executable, [*PW, "-s", "SSHA256"])
    try:
        output = _talk(fd, answers, time.monotonic() + 30)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert b"tty-secret" not in output  # never echoed
    assert output.count(b"<answered>") == 2
    if ok:
        assert os.waitstatus_to_exitcode(status) == 0
        value = output.split(b"<answered>")[-1].strip().decode()
        assert verify_password(parse_stored(value), b"tty-secret", "") is True
    else:
        assert os.waitstatus_to_exitcode(status) == 2
        assert b"don't match" in output
