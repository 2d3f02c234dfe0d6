"""Two ``authbridge serve`` daemons (and one daemon with ``workers = 2``) rehashing the same
passwd-file: each user logs in on both at once, so both verify the old hash and both
queue a rehash. The file's lock keeps the writes apart; the later writer finds the line
changed and writes nothing. At the end every user holds one valid ARGON2ID hash, no
other line is lost, the rehashes were written exactly once per user, and no process
logged the other's writes as a store reload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.observability.helpers import Scrape, scrape
from tests.policy.authclient import AuthClient
from tests.support import free_tcp_port, runtime_dir, wait_for_text, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

USERS = 6
REHASHES = "authbridge_rehashes_total"
MD5 = "{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99"  # "password"
OTHER_LINES = "# kept\r\nkept:{PLAIN}keptpass::::::\n"


def login_everywhere(sockets: list[Path], users: list[str], password: str = "password") -> None:
    """Each user logs in on every socket at the same moment (one thread per socket)."""
    failures: list[str] = []
    start = threading.Barrier(len(sockets))

    def run(socket: Path) -> None:
        with AuthClient(socket) as client:
            for n, user in enumerate(users, start=1):
                start.wait(timeout=30)
                reply = client.plain(n, user, password, "secured")
                if not reply.startswith("OK"):
                    failures.append(f"{socket.name} {user}: {reply}")

    threads = [threading.Thread(target=run, args=(s,)) for s in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []


def rehash_totals(scrapes: list[Scrape]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for one in scrapes:
        for labels, value in one.series(REHASHES).items():
            name = dict(labels)["result"]
            totals[name] = totals.get(name, 0.0) + value
    return totals


def wait_all_attempted(
    ports: list[int], expected: int, results: tuple[str, ...] = ("written", "skipped_changed")
) -> dict[str, float]:
    """Until ``expected`` rehashes had one of ``results``, summed over the daemons."""

    def totals() -> dict[str, float]:
        try:
            return rehash_totals([scrape(port) for port in ports])
        except OSError:
            return {}

    return wait_for_value(
        totals,
        lambda t: sum(t.get(result, 0) for result in results) >= expected,
        timeout=90,
        what="every rehash attempted",
    )


def _config(base: Path, extra: str = "") -> Path:
    path = base / "authbridge.toml"
    path.write_text(
        f'[server]\nmechanisms = ["plain", "login"]\n{extra}'
        '[log]\nlevel = "debug"\n[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n'
        '[rehash]\nenabled = true\nscheme = "ARGON2ID"\n'
    )
    return path


def _check_file(users_file: Path, users: list[str]) -> None:
    from authbridge.passdb.passwd_file import PasswdFileStore
    from authbridge.schemes import verify_password

    text = users_file.read_bytes().decode()
    assert text.startswith(OTHER_LINES)
    store = PasswdFileStore(users_file, strict=True)
    assert store.load() == len(users) + 1
    for user in users:
        entry = store.get(user)
        assert entry is not None and entry.password is not None
        assert entry.password.scheme == "ARGON2ID"
        assert verify_password(entry.password, b"password", user)
        assert text.count(f"\n{user}:") == 1


def _users_file(base: Path, users: list[str]) -> Path:
    path = base / "users"
    path.write_text(OTHER_LINES + "".join(f"{u}:{MD5}::::::\n" for u in users))
    return path


def test_two_daemons_rehash_the_same_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "two-daemons")
    users = [f"user{n}" for n in range(USERS)]
    users_file = _users_file(base, users)
    config = _config(base)
    ports = [free_tcp_port(), free_tcp_port()]
    servers = [
        AuthbridgeServer(
            users_file,
            base / f"auth-{n}",
            extra_args=["--config", str(config), "--metrics-listen", f"127.0.0.1:{port}"],
        )
        for n, port in enumerate(ports)
    ]
    with servers[0], servers[1]:
        login_everywhere([s.socket_path for s in servers], users)
        totals = wait_all_attempted(ports, 2 * USERS)
        for server in servers:  # the new hashes serve on both
            with AuthClient(server.socket_path) as client:
                for n, user in enumerate(users, start=1):
                    assert client.plain(n, user, "password", "secured").startswith("OK")
        logs = wait_for_value(
            lambda: [s.stderr_text() for s in servers],
            lambda texts: any("store took in rehashed passwords" in t for t in texts),
            what="a daemon taking the other's rehash in",
        )
    assert totals.get("written") == USERS  # one write per user, whoever won
    assert totals.get("skipped_changed", 0) >= 1  # the later writer found the new hash
    assert totals.get("failed", 0) == 0
    _check_file(users_file, users)
    for log in logs:
        assert "store reloaded" not in log  # the other daemon's rehashes: taken quietly


def test_two_workers_rehash_quietly(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = runtime_dir(tmp_path_factory, "two-workers")
    users = [f"user{n}" for n in range(USERS)]
    users_file = _users_file(base, users)
    config = _config(base, "workers = 2\n")
    port = free_tcp_port()
    args = ["--config", str(config), "--metrics-listen", f"127.0.0.1:{port}"]
    with AuthbridgeServer(users_file, base / "auth-client", extra_args=args) as server:
        serving: Callable[[], object] = lambda: scrape(port).value(  # noqa: E731
            "authbridge_workers", state="ready"
        )
        wait_for_value(_or_zero(serving), lambda v: v == 2, timeout=30, what="2 workers")
        # Several connections at once: the supervisor spreads them over both workers.
        login_everywhere([server.socket_path] * 4, users)
        # Each worker queues a user once (while it is queued, again is not again).
        totals = wait_all_attempted([port], USERS, ("written",))
        log = wait_for_text(server.stderr_text, "store took in rehashed passwords")
    assert totals.get("written") == USERS
    assert totals.get("failed", 0) == 0
    _check_file(users_file, users)
    assert "store reloaded" not in log


def _or_zero(read: Callable[[], object]) -> Callable[[], object]:
    def guarded() -> object:
        try:
            return read()
        except OSError:
            return 0

    return guarded
