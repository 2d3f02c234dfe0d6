#!/usr/bin/env python3
"""What handing a connection from the supervisor to a worker costs, in instructions.

    python benchmarks/handoff_instructions.py

With ``workers = N`` the supervisor accepts and passes each connection to a worker over
a socketpair (``SCM_RIGHTS``; see ``authbridge/daemon/balance.py``). This counts, under
``valgrind --tool=callgrind``, the instructions per connection of two workloads that do
nothing with a connection but close it, so the difference is the handoff alone:

- ``direct``: one process accepts with the daemon's accept loop (``accept_connections``);
- ``handoff``: a supervisor loop (``Dispatcher.serve``) accepts and hands each connection
  to a worker loop (``receive_connections``, a second trio loop on its own thread) that
  closes it and counts it finished on the board.

A client thread connects and waits for the close, one connection after the other (its
own instructions are in both counts and cancel out in the difference). Each count is
the difference between two connection counts divided by the extra connections.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

from instructions import callgrind_instructions  # benchmarks/, beside this script

REPO = Path(__file__).resolve().parents[1]
SMALL, LARGE = 200, 1000


def workload(mode: str, count: int) -> None:
    import trio

    from authbridge.daemon.balance import Board, Dispatcher, Outlet, channel_pair
    from authbridge.daemon.listeners import accept_connections, receive_connections, unix_listener
    from authbridge.observability import logs

    logs.configure("json", "warning", open(os.devnull, "w"))  # noqa: SIM115 - whole run
    directory = tempfile.mkdtemp(prefix="ab-handoff-")
    path = os.path.join(directory, "sock")
    listener = unix_listener(path, 0o600, None, None)

    def client() -> None:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            if sock.recv(1) != b"":
                raise SystemExit("expected the server to close")
            sock.close()

    async def close_it(sock: socket.socket, *_: object) -> None:
        sock.close()

    if mode == "direct":

        async def direct() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_connections, listener, close_it, nursery)
                await trio.to_thread.run_sync(client)
                nursery.cancel_scope.cancel()

        trio.run(direct)
    else:
        board = Board.create(os.path.join(directory, "board"), 1)
        ours, theirs = channel_pair()
        outlet = Outlet(0, ours)

        async def finish(sock: socket.socket) -> None:
            sock.close()
            board.slots[0] += 1

        async def worker() -> None:
            async with trio.open_nursery() as nursery:
                await receive_connections(theirs, finish, nursery)

        thread = threading.Thread(target=trio.run, args=(worker,))
        thread.start()

        async def supervisor() -> None:
            changed = trio.Event()
            dispatcher = Dispatcher(board, lambda: [outlet], lambda: changed)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dispatcher.serve, 0, listener)
                await trio.to_thread.run_sync(client)
                nursery.cancel_scope.cancel()

        trio.run(supervisor)
        ours.close()  # the worker loop ends when its channel closes
        thread.join()
    listener.remove()
    listener.sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def counted(mode: str, count: int) -> int:
    return callgrind_instructions(REPO, __file__, "--run", mode, str(count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        workload(args.run[0], int(args.run[1]))
        return 0
    per = {}
    for mode in ("direct", "handoff"):
        small, large = counted(mode, SMALL), counted(mode, LARGE)
        per[mode] = (large - small) / (LARGE - SMALL)
        print(f"{mode}: {per[mode] / 1000:.1f}k instructions per connection (accept + close)")
    print(f"handoff adds {(per['handoff'] - per['direct']) / 1000:.1f}k per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
