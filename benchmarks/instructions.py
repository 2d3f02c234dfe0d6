#!/usr/bin/env python3
"""Instructions per request, counted by valgrind: a yardstick this VM's clock cannot spoil.

    python benchmarks/instructions.py                  # info level (the default)
    python benchmarks/instructions.py --log-level warning
    python benchmarks/instructions.py --repo /path/to/other/checkout   # compare trees
    python benchmarks/instructions.py --churn         # per connection instead

Timings on a shared VM move by 15 % between identical runs, which hides changes of a
few percent. ``valgrind --tool=callgrind`` counts the instructions the process executes
instead, the same on every run. The script runs an in-process server (the real
``AuthServer`` on a socketpair, a passwd-file user stored as ``{SSHA512}``) and a client
thread that sends one PLAIN request at a time and waits for the OK, under callgrind,
for two request counts; the difference divided by the extra requests is the cost of
one request (server and client thread together), free of start-up costs.

``--churn`` measures a connection instead, Exim's pattern: the server listens on a UNIX
socket with the daemon's accept loop, and the client thread connects, reads the
handshake, sends its VERSION and CPID and one AUTH PLAIN, reads the OK and closes, one
connection after the other; the difference between two connection counts divided by the
extra connections is the cost of one (handshake, one request, accept and close).

Needs valgrind (``apt-get install valgrind``); slow (about a minute per run).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import site
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMALL, LARGE = 200, 1000
CHURN_SMALL, CHURN_LARGE = 100, 500


def _measured_store(level: str) -> object:
    """Logs configured for the run and one {SSHA512} user ``joe`` (password ``pw``) in
    memory: the store both measured workloads authenticate against."""
    from authbridge.observability import logs
    from authbridge.passdb.passwd_file import parse_passwd_file
    from authbridge.schemes import generate

    logs.configure("json", level, open(os.devnull, "w"))  # noqa: SIM115 - for the whole run

    class Store:
        name = "memory"

        def __init__(self) -> None:
            stored = generate("SSHA512", b"pw", "joe")
            self.entries = parse_passwd_file(f"joe:{stored}\n", "memory")

        async def lookup(self, user: str, info: object = None) -> object:
            return self.entries.get(user)

        def get(self, user: str) -> object:
            return self.entries.get(user)

    return Store()


def serve_requests(count: int, level: str) -> None:
    """The measured workload (run inside valgrind)."""
    import trio

    from authbridge.checks.authenticator import Authenticator
    from authbridge.checks.hashing import Hasher
    from authbridge.config import Config
    from authbridge.daemon.server import AuthServer

    store = _measured_store(level)

    resp = base64.b64encode(b"\0joe\0pw").decode()

    async def main() -> None:
        server = AuthServer(Config(), Authenticator([store], Hasher()))  # type: ignore[list-item]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)

        def client() -> None:
            theirs.sendall(b"VERSION\t1\t2\nCPID\t1\n")
            greeting = b""
            while b"DONE\n" not in greeting:
                greeting += theirs.recv(65536)
            for n in range(1, count + 1):
                theirs.sendall(
                    f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\trip=10.0.0.1\tresp={resp}\n".encode()
                )
                reply = theirs.recv(65536)
                if not reply.startswith(b"OK"):
                    raise SystemExit(f"unexpected reply {reply!r}")
            theirs.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_background)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            nursery.start_soon(server.handle, stream)
            await trio.to_thread.run_sync(client)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _accept_forever(server: Any, listener: Any, nursery: Any) -> None:
    """The daemon's accept loop for ``listener`` (that of the tree being measured)."""
    from functools import partial

    import trio

    from authbridge.commands import serve
    from authbridge.daemon import listeners

    accept = getattr(listeners, "accept_connections", None)
    if accept is not None:
        await accept(listener, partial(serve._handle, server, listener), nursery)
    else:  # trees before the thin shell: trio.serve_listeners and SocketStream
        await trio.serve_listeners(
            partial(serve._handle, server, listener),
            [listener.trio_listener()],
            handler_nursery=nursery,
        )


def churn_connections(count: int, level: str) -> None:
    """The measured churn workload (run inside valgrind)."""
    import tempfile

    import trio

    from authbridge.checks.authenticator import Authenticator
    from authbridge.checks.hashing import Hasher
    from authbridge.config import Config
    from authbridge.daemon.listeners import unix_listener
    from authbridge.daemon.server import AuthServer

    store = _measured_store(level)

    resp = base64.b64encode(b"\0joe\0pw")
    hello = (
        b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tsecured\trip=10.0.0.1\tresp="
        + resp
        + b"\n"
    )
    directory = tempfile.mkdtemp(prefix="ab-churn-")
    path = os.path.join(directory, "auth-client")

    def client() -> None:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            # The MTA sends its hello without waiting for the handshake, as Exim does.
            sock.sendall(hello)
            received = b""
            while b"\nOK\t1" not in received:
                chunk = sock.recv(65536)
                if not chunk or b"\nFAIL" in received + chunk:
                    raise SystemExit(f"unexpected reply: {received + chunk!r}")
                received += chunk
            sock.close()

    async def main() -> None:
        server = AuthServer(Config(), Authenticator([store], Hasher()))  # type: ignore[list-item]
        listener = unix_listener(path, 0o600, None, None)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run_background)
                nursery.start_soon(_accept_forever, server, listener, nursery)
                await trio.to_thread.run_sync(client)
                nursery.cancel_scope.cancel()
        finally:
            listener.remove()
            listener.sock.close()
            os.rmdir(directory)

    trio.run(main)


def callgrind_instructions(repo: Path, script: str, *args: str) -> int:
    """Instructions of one run of ``script`` ``args`` under callgrind, ``repo`` first on
    the path."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    # valgrind runs the interpreter itself (a venv's python is a symlink it resolves):
    # the venv's packages come along on the path.
    path = [str(repo), *site.getsitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    result = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            os.path.realpath(sys.executable),
            script,
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"the measured run failed:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def counted(repo: Path, count: int, level: str, churn: bool = False) -> int:
    """Instructions of one run of the workload under callgrind."""
    extra = ["--churn"] if churn else []
    return callgrind_instructions(repo, __file__, "--run", str(count), "--log-level", level, *extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="info", choices=("info", "warning"))
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to measure")
    parser.add_argument(
        "--churn", action="store_true", help="instructions per connection (Exim's pattern)"
    )
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        if args.churn:
            churn_connections(args.run, args.log_level)
        else:
            serve_requests(args.run, args.log_level)
        return 0
    if args.churn:
        small = counted(args.repo, CHURN_SMALL, args.log_level, churn=True)
        large = counted(args.repo, CHURN_LARGE, args.log_level, churn=True)
        per_connection = (large - small) / (CHURN_LARGE - CHURN_SMALL)
        print(
            f"{args.repo}: {per_connection / 1000:.0f}k instructions per connection "
            f"(handshake + one PLAIN {{SSHA512}} + close, log level {args.log_level}; "
            f"{small:,} for {CHURN_SMALL} connections, {large:,} for {CHURN_LARGE})"
        )
        return 0
    small = counted(args.repo, SMALL, args.log_level)
    large = counted(args.repo, LARGE, args.log_level)
    per_request = (large - small) / (LARGE - SMALL)
    print(
        f"{args.repo}: {per_request / 1000:.0f}k instructions per request "
        f"(PLAIN {{SSHA512}}, one connection, log level {args.log_level}; "
        f"{small:,} for {SMALL} requests, {large:,} for {LARGE})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
