"""Rehash on login in a real ``authbridge serve`` while the admin edits the file and the
daemon reloads: appends, line changes (in place and by an editor's rename), touch, and
SIGHUP, all while weak users log in. At the end every admin edit is in the file, every
weak user the admin left alone has the target scheme (and its password), every user the
admin changed holds exactly the admin's line, and no login failed.

The target is SHA512-CRYPT so that forty users are hashed in moments; the file write
path is the same for every scheme. Waits are for the file, with a deadline.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from authbridge.schemes import generate, parse_stored, verify_password
from tests.policy.authclient import AuthClient
from tests.support import runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

WEAK_USERS = 40
ADMIN_USERS = 8
ADMIN_EDITS = 120
LOGIN_ROUNDS = 4
TARGET = "SHA512-CRYPT"


def _weak_line(n: int) -> str:
    return f"r{n}:{generate('PLAIN-MD5', f'pw-r{n}'.encode(), f'r{n}')}::::::\n"


class Admin:
    """The admin's edits, and what each user's line must be at the end."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path, self.rng = path, rng
        #: user -> the exact line (without newline) the admin last wrote for it.
        self.lines: dict[str, str] = {f"a{n}": f"a{n}:{{PLAIN}}v00000::::::" for n in range(8)}
        #: Weak users the admin gave a strong hash of the same password (still log in).
        self.changed_weak: set[str] = set()
        self.done = 0

    def _lines_now(self) -> list[str]:
        return self.path.read_text().splitlines()

    def append(self) -> None:
        """``echo LINE >> users`` in a shell, as an admin appends. (An append from a file
        descriptor opened before a rehash's rename and written through after it lands
        in the replaced file: the one edit no rename-based writer can see; a shell's
        open and write are microseconds apart, a Python thread's can be milliseconds
        under the GIL.)"""
        user = f"new{self.done}"
        line = f"{user}:{{PLAIN}}p{self.done}::::::"
        subprocess.run(["sh", "-c", f"echo '{line}' >> '{self.path}'"], check=True, timeout=30)
        self.lines[user] = line

    def _replace_line(self, user: str, line: str) -> list[str]:
        lines = self._lines_now()
        index = next(i for i, old in enumerate(lines) if old.startswith(user + ":"))
        lines[index] = line
        self.lines[user] = line
        return lines

    def editor(self) -> None:
        """Change a line the way vim or sed -i do: a new file renamed over the old."""
        user = f"a{self.rng.randrange(ADMIN_USERS)}"
        lines = self._replace_line(user, f"{user}:{{PLAIN}}v{self.done:05d}::::::")
        temp = self.path.with_name(".users.swp")
        temp.write_text("\n".join(lines) + "\n")
        os.replace(temp, self.path)

    def in_place(self) -> None:
        """Change a line in place, same length (one pwrite), like a careful tool."""
        user = f"a{self.rng.randrange(ADMIN_USERS)}"
        data = self.path.read_bytes()
        old = self.lines[user].encode()
        at = data.find(b"\n" + old + b"\n") + 1
        assert at > 0, user
        new = f"{user}:{{PLAIN}}w{self.done:05d}::::::"
        assert len(new) == len(old)
        with open(self.path, "r+b") as out:
            os.pwrite(out.fileno(), new.encode(), at)
        self.lines[user] = new

    def touch(self) -> None:
        os.utime(self.path)

    def change_weak_user(self) -> None:
        """Give a weak user a strong hash of the same password: the admin's line wins."""
        left = sorted(f"r{n}" for n in range(0, WEAK_USERS, 5) if f"r{n}" not in self.changed_weak)
        if not left:
            return self.append()
        user = left[0]
        password = f"pw-{user}".encode()
        line = f"{user}:{generate('SSHA512', password, user)}::::::"
        lines = self._replace_line(user, line)
        temp = self.path.with_name(".users.swp")
        temp.write_text("\n".join(lines) + "\n")
        os.replace(temp, self.path)
        self.changed_weak.add(user)


def test_rehash_during_admin_edits_and_reloads_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    rundir = runtime_dir(tmp_path_factory, "rehash-race")
    users = rundir / "users"
    rng = random.Random(int.from_bytes(os.urandom(4)))
    admin = Admin(users, rng)
    users.write_text(
        "# users\n"
        + "".join(_weak_line(n) for n in range(WEAK_USERS))
        + "".join(line + "\n" for line in admin.lines.values())
    )
    config = rundir / "authbridge.toml"
    config.write_text(
        '[server]\nmechanisms = ["plain", "login"]\n'
        f'[rehash]\nenabled = true\nscheme = "{TARGET}"\n'
    )
    args = ["--config", str(config), "--failure-delay", "0"]
    failures: list[str] = []
    logins = 0

    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        assert server.proc is not None
        edits = [admin.append, admin.editor, admin.in_place, admin.touch, admin.change_weak_user]

        def edit_loop() -> None:
            try:
                for n in range(ADMIN_EDITS):
                    admin.done = n + 1
                    if n % 25 == 24:
                        server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
                    edits[n % len(edits)]()
                    time.sleep(rng.uniform(0.0, 0.02))  # pacing, not a synchronisation
            except BaseException as exc:
                failures.append(f"admin edit: {exc!r}")
                raise

        def log_in(client: AuthClient, user: str) -> None:
            nonlocal logins
            logins += 1
            reply = client.plain(logins, user, f"pw-{user}", "secured")
            if not reply.startswith("OK"):
                failures.append(f"{user}: {reply}")

        editor = threading.Thread(target=edit_loop)
        editor.start()
        try:
            with AuthClient(server.socket_path) as client:
                rounds = 0
                while rounds < LOGIN_ROUNDS or editor.is_alive():
                    rounds += 1
                    for n in rng.sample(range(WEAK_USERS), WEAK_USERS):
                        log_in(client, f"r{n}")
        finally:
            editor.join()

        def migrated() -> bool:
            """Every weak user the admin left alone holds the target; those that do not
            yet log in again (a rehash skipped while its line was being replaced)."""
            stored = _fields(users)
            missing = [
                f"r{n}"
                for n in range(WEAK_USERS)
                if f"r{n}" not in admin.changed_weak
                and not stored[f"r{n}"].startswith("{" + TARGET + "}")
            ]
            with AuthClient(server.socket_path) as client:
                for user in missing:
                    log_in(client, user)
            return not missing

        wait_for_value(migrated, bool, timeout=60.0, what="every untouched weak user rehashed")
        log = server.stderr_text()

    assert failures == []
    assert logins >= WEAK_USERS * LOGIN_ROUNDS
    text = users.read_text()
    for user, line in admin.lines.items():  # every admin edit is there, as written
        assert f"\n{line}\n" in text, user
    stored = _fields(users)
    expected = WEAK_USERS + len(admin.lines) - len(admin.changed_weak)
    assert len(stored) == expected  # nothing lost, nothing repeated
    for n in range(WEAK_USERS):
        user = f"r{n}"
        if user in admin.changed_weak:
            continue
        value = parse_stored(stored[user])
        assert value.scheme == TARGET
        assert verify_password(value, f"pw-{user}".encode(), user)
    assert admin.changed_weak  # the admin did change weak users meanwhile
    assert "rehash failed" not in log and "rehash not written" not in log
    assert [p.name for p in rundir.iterdir() if p.name.endswith(".new")] == []


def _fields(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            user, field = line.split(":")[:2]
            assert user not in found, f"{user} twice"
            found[user] = field
    return found
