"""The load client, run once with tiny numbers against real servers (no speed assertions).

These prove that ``authbridge bench`` speaks the protocol, counts OK/FAIL correctly and
prints its table; how fast anything is belongs in benchmarks/, not in assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.benchclient.runner import percentile
from authbridge.benchclient.workload import WorkloadError, parse_credentials, prepare
from authbridge.schemes import generate
from tests.support import free_tcp_port, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

USERS = 12


def _write_store(base: Path) -> tuple[Path, Path]:
    store = base / "users.passwd"
    creds = base / "creds.txt"
    store_lines = []
    cred_lines = []
    for i in range(USERS):
        scheme = "PLAIN" if i % 2 == 0 else "SSHA512"
        password = f"pw-{i}"
        store_lines.append(f"user{i}:{generate(scheme, password.encode(), f'user{i}')}::::::")
        cred_lines.append(f"user{i}:{password}")
    store.write_text("\n".join(store_lines) + "\n")
    store.chmod(0o644)
    creds.write_text("# bench credentials\n" + "\n".join(cred_lines) + "\n")
    return store, creds


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = runtime_dir(tmp_path_factory, "bench")
    store, creds = _write_store(base)
    return base, store, creds


@pytest.fixture(scope="module")
def authbridge(files: tuple[Path, Path, Path]) -> Iterator[AuthbridgeServer]:
    base, store, _ = files
    with AuthbridgeServer(
        store, base / "ab.sock", extra_args=("--dovecot-compat", "--failure-delay", "0")
    ) as server:
        yield server


def bench(socket: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbridge", "bench", "--socket", str(socket), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bench_json(socket: str | Path, *args: str) -> dict[str, object]:
    proc = bench(socket, *args, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_pipelined_counts_are_right(
    authbridge: AuthbridgeServer, files: tuple[Path, Path, Path], mechanism: str
) -> None:
    _, _, creds = files
    if mechanism == "CRAM-MD5":
        # CRAM-MD5 needs a plaintext-capable scheme: only the {PLAIN} users (even numbers)
        plain_only = files[0] / "creds-plain.txt"
        lines = [f"user{i}:pw-{i}" for i in range(0, USERS, 2)]
        plain_only.write_text("\n".join(lines) + "\n")
        creds = plain_only
    result = bench_json(
        authbridge.socket_path,
        "--credentials", str(creds),
        "--mechanism", mechanism,
        "-n", "120", "-c", "3", "-d", "4", "-p", "2",
        "--wrong-share", "0.3",
    )  # fmt: skip
    assert result["ok"] + result["fail"] == 120  # type: ignore[operator]
    assert result["completed"] == 120
    assert result["mismatched"] == 0 and result["errors"] == 0
    assert result["ok"] > 0 and result["fail"] > 0  # type: ignore[operator]
    assert result["rate"] > 0  # type: ignore[operator]


def test_all_wrong_and_unknown_users_are_counted_as_failures(
    authbridge: AuthbridgeServer, files: tuple[Path, Path, Path]
) -> None:
    _, _, creds = files
    result = bench_json(
        authbridge.socket_path, "--credentials", str(creds), "-n", "40", "--wrong-share", "1"
    )
    assert (result["ok"], result["fail"], result["mismatched"]) == (0, 40, 0)
    # A user the store does not know: the client expects OK and must report the mismatch.
    ghost = files[0] / "ghost.txt"
    ghost.write_text("nobody:pw\n")
    proc = bench(authbridge.socket_path, "--credentials", str(ghost), "-n", "10", "--json")
    result = json.loads(proc.stdout)
    assert (result["ok"], result["fail"], result["mismatched"]) == (0, 10, 10)
    # nothing that should have succeeded did: a non-zero exit and a one-line reason
    assert proc.returncode == 1
    assert "no request succeeded" in proc.stderr and "Traceback" not in proc.stderr


def test_default_policy_needs_secured_and_bench_sends_it(
    files: tuple[Path, Path, Path],
) -> None:
    """Against authbridge's default policy (plaintext only when secured): bench says
    secured by default and succeeds; --no-secured fails every request and exits 1."""
    base, store, creds = files
    with AuthbridgeServer(
        store, base / "policy.sock", extra_args=("--failure-delay", "0")
    ) as server:
        secured = bench(server.socket_path, "--credentials", str(creds), "-n", "24", "--json")
        assert secured.returncode == 0, secured.stderr
        assert json.loads(secured.stdout)["ok"] == 24
        with_rip = bench(
            server.socket_path, "--credentials", str(creds), "-n", "12", "--rip", "192.0.2.9"
        )
        assert with_rip.returncode == 0, with_rip.stderr
        assert "ok=12 fail=0" in with_rip.stdout
        plain = bench(server.socket_path, "--credentials", str(creds), "-n", "8", "--no-secured")
    assert plain.returncode == 1
    assert "ok=0 fail=8" in plain.stdout
    assert "no request succeeded" in plain.stderr


def test_counts_only_the_measured_window(
    authbridge: AuthbridgeServer, files: tuple[Path, Path, Path]
) -> None:
    _, _, creds = files
    result = bench_json(
        authbridge.socket_path, "--credentials", str(creds),
        "-t", "0.4", "--warmup", "0.4", "-c", "2", "-d", "2",
    )  # fmt: skip
    # warm-up answers are neither in the rate nor in ok/fail
    assert result["ok"] + result["fail"] == result["completed"]  # type: ignore[operator]
    assert result["completed"] > 0  # type: ignore[operator]


def test_help_shows_the_defaults() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "authbridge", "bench", "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    text = " ".join(proc.stdout.split())
    for default in ("(default: 8)", "(default: 16)", "(default: 5.0)", "(default: 1.0)",
                    "(default: smtp)", "(default: PLAIN)", "(default: on)"):  # fmt: skip
        assert default in text, default


def test_churn_prints_the_table(
    authbridge: AuthbridgeServer, files: tuple[Path, Path, Path]
) -> None:
    _, _, creds = files
    proc = bench(
        authbridge.socket_path, "--credentials", str(creds), "--mode", "churn",
        "-n", "30", "-c", "2", "--label", "tiny-churn",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "auth/s" in proc.stdout and "p99 ms" in proc.stdout
    assert "tiny-churn" in proc.stdout
    assert "ok=30 fail=0 mismatched=0 errors=0" in proc.stdout


def test_timed_run_against_real_dovecot(files: tuple[Path, Path, Path]) -> None:
    base, store, creds = files
    with DovecotAuth(
        store,
        base / "dovecot.sock",
        workdir=base / "dovecot",
        extra_settings=("auth_debug = no", "auth_verbose = no"),
    ) as dovecot:
        result = bench_json(
            dovecot.socket_path, "--credentials", str(creds),
            "-t", "0.5", "--warmup", "0.2", "-c", "2", "-d", "2", "--wrong-share", "0.2",
        )  # fmt: skip
    assert result["completed"] > 0 and result["errors"] == 0  # type: ignore[operator]
    assert result["mismatched"] == 0
    assert result["p50_ms"] <= result["p99_ms"]  # type: ignore[operator]


def test_tcp_listener(files: tuple[Path, Path, Path]) -> None:
    base, store, creds = files
    port = free_tcp_port()
    config = base / "tcp.toml"
    config.write_text(f'[server]\ntcp_listen = ["127.0.0.1:{port}"]\n')
    with AuthbridgeServer(
        store, base / "tcp-unix.sock",
        extra_args=("--config", str(config), "--dovecot-compat", "--failure-delay", "0"),
    ):  # fmt: skip
        result = bench_json(
            f"127.0.0.1:{port}", "--credentials", str(creds), "-n", "50",
            "--wrong-share", "0.5", "-c", "2",
        )  # fmt: skip
    assert result["ok"] + result["fail"] == 50  # type: ignore[operator]
    assert result["mismatched"] == 0 and result["errors"] == 0


def test_unreachable_socket_is_a_clear_error(tmp_path: Path) -> None:
    proc = bench(tmp_path / "missing.sock", "-n", "1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("authbridge bench:")
    assert "Traceback" not in proc.stderr


def test_server_without_the_mechanism_is_refused(
    files: tuple[Path, Path, Path],
) -> None:
    base, store, creds = files
    with AuthbridgeServer(
        store, base / "plain-only.sock", mechanisms=("plain",),
        extra_args=("--dovecot-compat", "--failure-delay", "0"),
    ) as server:  # fmt: skip
        proc = bench(server.socket_path, "--credentials", str(creds), "--mechanism", "LOGIN")
    assert proc.returncode == 1
    assert "does not offer LOGIN" in proc.stderr


def test_credentials_parsing_and_wrong_share() -> None:
    creds = parse_credentials(["# c", "", "a:b:c", "x:"])
    assert [(c.user, c.password) for c in creds] == [("a", "b:c"), ("x", "")]
    with pytest.raises(WorkloadError):
        parse_credentials(["no-colon"])
    attempts = prepare(creds, "PLAIN", 0.25, count=4000)
    wrong = sum(not a.expect_ok for a in attempts)
    assert 800 < wrong < 1200
    assert all(a.password.endswith("-wrong") for a in attempts if not a.expect_ok)
    with pytest.raises(WorkloadError):
        prepare(creds, "DIGEST-MD5", 0.0)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
