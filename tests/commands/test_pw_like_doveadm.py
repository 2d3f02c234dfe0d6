"""``authbridge pw`` against the real ``doveadm pw``: exit statuses, cost clamping, Ctrl-C.

doveadm (Dovecot 2.3) exits 75 for a ``-t`` mismatch and for every fatal error, and
clamps an out-of-range ``-r`` silently; authbridge keeps the statuses and the clamped
hash but says what it clamped to. Ctrl-C must end even a cost-31 bcrypt (one C call of
hours) with status 130 and no traceback.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.support import require_binary

PW = [sys.executable, "-m", "authbridge", "pw"]
SHA1_OF_TEST = "{SHA1}qUqP5cyxm6YcTAhz05Hph5gvu9M="


def authbridge_pw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PW, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def doveadm_pw(*args: str) -> subprocess.CompletedProcess[str]:
    doveadm = require_binary("doveadm")
    return subprocess.run(
        [doveadm, "-c", "/dev/null", "pw", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("-t", SHA1_OF_TEST, "-p", "test"),  # match
        ("-t", SHA1_OF_TEST, "-p", "wrong"),  # mismatch
        ("-t", "{SHA1}not*base64", "-p", "test"),  # unusable hash
        ("-t", "{NOSUCH}x", "-p", "test"),  # unknown scheme in the hash
        ("-s", "NOSUCH", "-p", "x"),  # unknown scheme to make
        ("-s", "DIGEST-MD5", "-p", "x"),  # DIGEST-MD5 without -u
        ("-s", "SHA256-CRYPT", "-p", "x"),  # made
    ],
)
def test_exit_status_is_doveadms(args: tuple[str, ...]) -> None:
    ours, theirs = authbridge_pw(*args), doveadm_pw(*args)
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    assert "Traceback" not in ours.stderr


def test_mismatch_of_a_doveadm_hash_is_75_in_both() -> None:
    made = doveadm_pw("-s", "SHA512-CRYPT", "-p", "x").stdout.strip()
    assert doveadm_pw("-t", made, "-p", "y").returncode == 75
    result = authbridge_pw("-t", made, "-p", "y")
    assert result.returncode == 75
    assert result.stderr.strip() == "authbridge pw: password mismatch"


def test_empty_password_is_refused_in_one_line() -> None:
    # doveadm pw -p '' prints "{PLAIN}" and exits 0; an empty password in a user store
    # is a trap, so authbridge refuses it (documented in pw --help).
    assert doveadm_pw("-s", "PLAIN", "-p", "").stdout.strip() == "{PLAIN}"
    result = authbridge_pw("-s", "PLAIN", "-p", "")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["authbridge pw: empty passwords are not allowed"]


@pytest.mark.parametrize(
    ("scheme", "rounds", "made_with", "used"),
    [
        ("BLF-CRYPT", "3", "$2y$04$", "4"),
        ("SHA512-CRYPT", "500", "$6$rounds=1000$", "1000"),
    ],
)
def test_out_of_range_cost_is_clamped_as_doveadm_with_a_warning(
    scheme: str, rounds: str, made_with: str, used: str
) -> None:
    theirs = doveadm_pw("-s", scheme, "-r", rounds, "-p", "x")
    assert theirs.stdout.startswith("{" + scheme + "}" + made_with), theirs.stdout
    assert theirs.stderr == ""  # doveadm says nothing
    ours = authbridge_pw("-s", scheme, "-r", rounds, "-p", "x")
    assert ours.returncode == 0
    assert ours.stdout.startswith("{" + scheme + "}" + made_with)
    assert ours.stderr.splitlines() == [
        f"authbridge pw: warning: -r {rounds} is out of range for {scheme} "
        f"({'4-31' if scheme == 'BLF-CRYPT' else '1000-999999999'}); using {used}"
    ]


def test_rounds_for_a_scheme_without_cost_is_ignored_with_a_warning() -> None:
    result = authbridge_pw("-s", "SSHA256", "-r", "7", "-p", "x")
    assert result.returncode == 0
    assert result.stdout.startswith("{SSHA256}")
    assert "-r 7 is ignored" in result.stderr


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    seen = b""
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # a pty reads EIO once the child has gone
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _exit_status_within(pid: int, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def _default_sigint() -> None:
    """Give the child Ctrl-C's usual meaning: a test run started in the background by a
    non-interactive shell (as a CI job may be) inherits SIGINT ignored, and an ignored
    SIGINT rightly leaves pw running."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_a_cost_31_bcrypt_with_130() -> None:
    proc = subprocess.Popen(
        [*PW, "-s", "BLF-CRYPT", "-r", "40", "-p", "x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stderr is not None
        said = _read_until(proc.stderr.fileno(), b"using 31\n", time.monotonic() + 30)
        assert b"-r 40 is out of range for BLF-CRYPT (4-31); using 31" in said, said
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends; hashing has started or is next
        status = _exit_status_within(proc.pid, time.monotonic() + 10)
        assert status == 130, "Ctrl-C did not end the hash"
        rest = proc.stderr.read().decode()
        assert rest == "authbridge pw: interrupted\n"
        assert proc.stdout is not None and proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_ctrl_c_at_the_prompt_exits_130_without_traceback() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its terminal, so pw prompts
        _default_sigint()
        os.execv(sys.executable, [*PW, "-s", "SSHA256"])
    status = None
    try:
        seen = _read_until(fd, b"password: ", time.monotonic() + 30)
        assert b"Enter new password: " in seen
        os.write(fd, b"\x03")  # the terminal turns ^C into SIGINT for the foreground
        seen += _read_until(fd, b"interrupted", time.monotonic() + 10)
        status = _exit_status_within(pid, time.monotonic() + 10)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status == 130, seen
    assert b"Traceback" not in seen
    assert b"authbridge pw: interrupted" in seen
