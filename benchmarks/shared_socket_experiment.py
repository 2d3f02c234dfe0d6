#!/usr/bin/env python3
"""What would several serving processes give? Measure it with today's authbridge.

Binds one UNIX listening socket, then starts N unmodified ``authbridge serve`` processes
that inherit it through systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``): the
kernel hands every ``accept()`` to one of them, exactly as a pre-fork design would.
Runs the same workloads with N = 1 and N = 2 (or ``--processes``) and prints auth/s.

    python benchmarks/shared_socket_experiment.py --users users.passwd --credentials c.txt
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from authbridge.benchclient.engine import Plan  # noqa: E402
from authbridge.benchclient.runner import run_plan  # noqa: E402
from authbridge.benchclient.workload import load_credentials, prepare  # noqa: E402

#: sh moves the inherited socket to fd 3 and sets LISTEN_PID to its own pid, which
#: ``exec`` keeps, so the daemon sees itself socket-activated.
_WRAPPER = 'exec 3<&"$FD"; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=auth exec "$@"'


@contextlib.contextmanager
def serving(
    users: Path, count: int, workdir: Path
) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    path = workdir / f"shared-{count}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o666)
    listener.listen(1024)
    fd = listener.fileno()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "FD": str(fd), "PYTHONPATH": str(REPO)}
    try:
        for index in range(count):
            log = (workdir / f"serve-{count}-{index}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [
                        "sh",
                        "-c",
                        _WRAPPER,
                        "sh",
                        sys.executable,
                        "-m",
                        "authbridge",
                        "serve",
                        "--dovecot-compat",
                        "--failure-delay",
                        "0",
                        "--passwd-file",
                        str(users),
                        "--socket",
                        str(workdir / f"unused-{index}.sock"),
                        "--log-level",
                        "warning",
                    ],
                    pass_fds=(fd,),
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
        time.sleep(1.0 + 1.5 * count)  # stores loaded and hash pools warm in every process
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"authbridge exited with {proc.returncode}; see {workdir}")
        yield path, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def cpu_seconds(pid: int) -> float:
    """User+system CPU of one process (not its hash pool children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=Path, required=True, help="passwd-file")
    parser.add_argument("--credentials", type=Path, required=True, help="user:password file")
    parser.add_argument("--processes", default="1,2", help="server process counts to try")
    parser.add_argument("--client-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    creds = load_credentials(args.credentials)
    workloads = [
        ("PLAIN 8x16", "PLAIN", "pipeline", 8, 16),
        ("churn x8", "PLAIN", "churn", 8, 1),
    ]
    with tempfile.TemporaryDirectory(prefix="authbridge-shared-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        for count in (int(n) for n in args.processes.split(",")):
            with serving(args.users.resolve(), count, workdir) as (sock, procs):
                for label, mech, mode, conns, depth in workloads:
                    before = [cpu_seconds(p.pid) for p in procs]
                    plan = Plan(str(sock), mech, mode, conns, depth, args.duration, 1.0, None)  # type: ignore[arg-type]
                    s = run_plan(plan, prepare(creds, mech, 0.0), args.client_processes, label)
                    used = [cpu_seconds(p.pid) - b for p, b in zip(procs, before, strict=True)]
                    print(
                        f"{count} serving process(es)  {label:<11} {s.rate:>8.0f} auth/s  "
                        f"p99 {s.p99_ms:7.2f} ms  ok={s.ok} err={s.errors}  CPU s per "
                        f"process: {' '.join(f'{u:.2f}' for u in used)}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
