"""``authbridge app-password add``/``revoke`` (real processes) while the admin edits the
companion file (``echo >>`` in a shell, an editor's rename) and a running daemon reloads
it (its watcher, and SIGHUP) and serves logins with app passwords. At the end every
admin edit and every add/revoke is in the file, the daemon serves the final file, and
no login of a stable app password failed.

The editor here checks, as vim does, that the file did not change since it read it
before renaming over it: an editor that does not would itself throw away a change made
meanwhile (by anyone: no rename-based writer can prevent that). Waits are for the file
or a login, with a deadline; sleeps only pace the edits.
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

from authbridge.passdb import app_passwords as ap
from authbridge.schemes import generate
from tests.passdb.test_app_password_daemon import app_password, plain
from tests.policy.authclient import AuthClient
from tests.support import runtime_dir, wait_for_value
from tests.support.authbridge_proc import AuthbridgeServer

STABLE = 4  # alice's app passwords nobody touches: each login with them must work
CLI_ADDS = 10  # every other one is revoked again
HUP_EVERY = 15


def _line(user: str, label: str, password: str) -> str:
    return f"{user}:{label}:{generate('SSHA512', password.encode(), user)}:smtp:"


class Admin:
    """The admin's edits of the companion file, and the lines they must leave."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path, self.rng = path, rng
        self.lines: list[str] = []
        self.done = 0

    def append(self) -> None:
        """``echo LINE >> file`` in a shell."""
        line = _line("bob", f"echo{self.done}", f"pw-echo{self.done}")
        subprocess.run(["sh", "-c", f"echo '{line}' >> '{self.path}'"], check=True, timeout=30)
        self.lines.append(line)

    def editor(self) -> None:
        """A new line and a changed comment, saved as an editor does: a new file renamed
        over the old, unless the file changed since it was read (then read again)."""
        line = _line("carol", f"ed{self.done}", f"pw-ed{self.done}")
        temp = self.path.with_name(".users.app.swp")
        while True:
            with open(self.path, "rb") as source:
                seen = os.fstat(source.fileno())
                data = source.read().decode()
            text = data.replace("# edited ", f"# edited {self.done} ", 1) + line + "\n"
            temp.write_text(text)
            now = os.stat(self.path)
            if (now.st_ino, now.st_mtime_ns, now.st_size) == (
                seen.st_ino,
                seen.st_mtime_ns,
                seen.st_size,
            ):
                os.replace(temp, self.path)
                break
        self.lines.append(line)


def test_app_password_commands_during_admin_edits_reloads_and_logins(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    rundir = runtime_dir(tmp_path_factory, "apppw-race")
    users = rundir / "users"
    users.write_text("alice:{PLAIN}main-a::::::\nbob:{PLAIN}main-b::::::\ncarol:{PLAIN}c::::::\n")
    apps = rundir / "users.app"
    stable = [_line("alice", f"s{n}", f"pw-s{n}") for n in range(STABLE)]
    apps.write_text("# edited by the admin\n" + "".join(line + "\n" for line in stable))
    config = rundir / "authbridge.toml"
    config.write_text(
        f'[[store]]\npath = "{users}"\napp_passwords = "{apps}"\n'
        '[app_passwords]\nscheme = "SSHA512"\n'
    )
    rng = random.Random(int.from_bytes(os.urandom(4)))
    admin = Admin(apps, rng)
    failures: list[str] = []
    kept: dict[str, str] = {}  # label -> password of the CLI adds left in place
    revoked: dict[str, str] = {}
    args = ["--config", str(config), "--failure-delay", "0"]

    with AuthbridgeServer(users, rundir / "auth-client", extra_args=args) as server:
        assert server.proc is not None
        proc = server.proc

        def cli_loop() -> None:
            try:
                for n in range(CLI_ADDS):
                    added = app_password(config, "add", "alice", "--label", f"cli{n}")
                    if added.returncode != 0 or "Traceback" in added.stderr:
                        failures.append(f"add cli{n}: {added.returncode} {added.stderr}")
                        continue
                    kept[f"cli{n}"] = added.stdout.strip()
                    if n % 2:
                        gone = app_password(config, "revoke", "alice", f"cli{n}")
                        if gone.returncode != 0:
                            failures.append(f"revoke cli{n}: {gone.returncode} {gone.stderr}")
                        revoked[f"cli{n}"] = kept.pop(f"cli{n}")
            except BaseException as exc:
                failures.append(f"cli: {exc!r}")
                raise

        def edit_loop() -> None:
            try:
                while cli.is_alive():
                    admin.done += 1
                    if admin.done % HUP_EVERY == 0:
                        proc.send_signal(signal.SIGHUP)
                    (admin.append if admin.done % 2 else admin.editor)()
                    time.sleep(rng.uniform(0.01, 0.06))  # pacing, not a synchronisation
            except BaseException as exc:
                failures.append(f"admin edit: {exc!r}")
                raise

        cli = threading.Thread(target=cli_loop)
        editor = threading.Thread(target=edit_loop)
        cli.start()
        editor.start()
        logins = 0
        try:
            with AuthClient(server.socket_path) as client:
                while cli.is_alive() or editor.is_alive():
                    n = rng.randrange(STABLE)
                    logins += 1
                    reply = plain(client, logins, "alice", f"pw-s{n}", "smtp")
                    if not reply.startswith("OK"):
                        failures.append(f"s{n}: {reply}")
        finally:
            cli.join()
            editor.join()

        # The daemon ends up serving the final file: the adds left in place log in,
        # the revoked ones do not, nor do they come back.
        def serves_final() -> bool:
            with AuthClient(server.socket_path) as client:
                ok = all(
                    plain(client, i + 1, "alice", pw, "smtp").startswith("OK")
                    for i, pw in enumerate(kept.values())
                )
                fail = all(
                    plain(client, 100 + i, "alice", pw, "smtp").startswith("FAIL")
                    for i, pw in enumerate(revoked.values())
                )
            return ok and fail

        wait_for_value(serves_final, bool, timeout=30.0, what="the daemon serving the final file")
        log = server.stderr_text()

    assert failures == []
    assert logins > 50 and admin.done > 10
    data = apps.read_bytes()
    parsed = ap.parse_file(data, str(apps), "CRYPT")  # whole, no label twice
    text = data.decode()
    assert text.startswith(f"# edited {admin.done if admin.done % 2 == 0 else admin.done - 1} ")
    for line in [*stable, *admin.lines]:  # every admin edit is there, as written
        assert f"\n{line}\n" in text, line
    labels = {entry.label for entry in parsed["alice"]}
    assert labels == {f"s{n}" for n in range(STABLE)} | set(kept)
    assert len(kept) == CLI_ADDS - CLI_ADDS // 2 and len(revoked) == CLI_ADDS // 2
    assert len(parsed["bob"]) + len(parsed["carol"]) == len(admin.lines)
    assert "Traceback" not in log
    assert [p.name for p in rundir.iterdir() if p.name.endswith(".new")] == []
