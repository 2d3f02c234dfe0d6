"""A ``nologin`` user cannot send mail through the real Exim and Postfix (issue 15).

Both MTAs ignore ``nologin`` and ``reason=`` in an OK, so authbridge's default mode
answers such a user's right password with a FAIL and the MTA says 535; a normal user gets
235 from the same daemon and MTA. The same run against ``--dovecot-compat`` (Dovecot's OK)
gets 235 for the nologin user: proof that the test can fail. Users come from a
passwd-file and from an SQLite store queried with the shipped deploy/sql example.
"""

from __future__ import annotations

import smtplib
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mta.conftest import emit
from tests.mta.exim_helpers import exim_check, exim_owned_dirs
from tests.mta.postfix_helpers import emit_postfix, wait_for_banner
from tests.mta.test_scram import _login
from tests.sql.conftest import DEPLOY, make_sqlite
from tests.support import free_tcp_port, require_binary, runtime_dir
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.exim import EximConfig, EximDaemon
from tests.support.postfix import PostfixMaster
from tests.support.swaks import run_swaks
from tests.support.tls import TlsFiles

MECHANISMS = ("plain", "login", "cram-md5", "scram-sha-256")
PASSWORDS = {
    "alice": "alice-secret",
    "moved": "moved-secret",  # passwd-file: nologin reason=Mailbox_moved
    "gone@example.org": "gone-secret",  # SQLite: nologin = 1, reason = 'Moved away'
}
NOLOGIN_USERS = ("moved", "gone@example.org")
REASONS = {"moved": "Mailbox_moved", "gone@example.org": "Moved away"}
MODES = ("default", "compat")
MTAS = ("exim", "postfix")


class ConfiguredAuthbridge(AuthbridgeServer):
    """``authbridge serve --config FILE``: the stores come from the file alone."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "authbridge", "serve", *self.extra_args]


@pytest.fixture(scope="module")
def nologin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_dir(tmp_path_factory, "nologin")


@pytest.fixture(scope="module")
def stores(nologin_dir: Path) -> str:
    """The ``[[store]]`` tables: a passwd-file, then SQLite with the shipped query."""
    users = nologin_dir / "users.passwd"
    users.write_text(
        "alice:{PLAIN}alice-secret::::::\n"
        "moved:{PLAIN}moved-secret::::::nologin reason=Mailbox_moved\n"
    )
    users.chmod(0o644)
    database = make_sqlite(
        nologin_dir / "users.sqlite",
        [("gone@example.org", "{PLAIN}gone-secret", 1, None, 1, "Moved away")],
    )
    database.chmod(0o644)
    shipped = tomllib.loads((DEPLOY / "authbridge-sqlite.toml").read_text())
    query = shipped["store"][0]["password_query"]
    return (
        f'[[store]]\ntype = "passwd-file"\npath = "{users}"\n'
        f'[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "{database}"\n'
        f'password_query = """{query}"""\n'
    )


def _daemon(base: Path, stores: str, mode: str) -> ConfiguredAuthbridge:
    run = runtime_dir(base, f"auth-{mode}")
    socket_path = run / "auth-client"
    config = run / "authbridge.toml"
    config.write_text(
        f'[server]\nsocket = "{socket_path}"\nsocket_mode = "0666"\n'
        f"mechanisms = {list(MECHANISMS)}\n"
        "[policy]\nfailure_delay = 0.0\n"
        "[penalty]\nenabled = false\n"  # many refusals from 127.0.0.1 in a row
        f"{stores}"
    )
    args = ["--config", str(config)] + (["--dovecot-compat"] if mode == "compat" else [])
    return ConfiguredAuthbridge(config, socket_path, MECHANISMS, extra_args=args)


@pytest.fixture(scope="module")
def daemons(nologin_dir: Path, stores: str) -> Iterator[dict[str, Path]]:
    started = {mode: _daemon(nologin_dir, stores, mode).start() for mode in MODES}
    yield {mode: server.socket_path for mode, server in started.items()}
    for server in started.values():
        server.stop()


def _exim(base: Path, socket_path: Path, tls: TlsFiles) -> EximDaemon:
    require_binary("exim")
    exim_owned_dirs(base / "spool", base / "log")
    port = free_tcp_port()
    conf = base / "exim.conf"
    result = emit(
        "emit-exim-config", "--standalone", str(conf), "--socket", str(socket_path),
        "--mechanisms", ",".join(MECHANISMS),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--spool-dir", str(base / "spool"), "--log-file-path", f"{base}/log/%slog",
        "--pid-file", str(base / "exim.pid"), "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exim_check(conf)
    return EximDaemon(EximConfig(conf, base, base / "log", port, socket_path))


@pytest.fixture(scope="module")
def servers(
    nologin_dir: Path, daemons: dict[str, Path], tls_files: TlsFiles
) -> Iterator[dict[tuple[str, str], str]]:
    """(mta, mode) -> "host:port" of a real Exim or Postfix in front of that daemon."""
    running: dict[tuple[str, str], EximDaemon | PostfixMaster] = {}
    try:
        for mode, socket_path in daemons.items():
            exim = _exim(runtime_dir(nologin_dir, f"exim-{mode}"), socket_path, tls_files)
            running["exim", mode] = exim.start()
            emitted = emit_postfix(
                runtime_dir(nologin_dir, f"postfix-{mode}"), socket_path, tls_files,
                free_tcp_port(), "--socket", str(socket_path),
                "--mechanisms", ",".join(MECHANISMS),
            )  # fmt: skip
            postfix = PostfixMaster(emitted.config).start()
            running["postfix", mode] = postfix
            wait_for_banner(postfix)
        yield {key: server.server for key, server in running.items()}
    finally:
        for server in running.values():
            server.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("mta", MTAS)
def test_nologin_users_get_535_and_others_235(
    servers: dict[tuple[str, str], str], mta: str, mechanism: str
) -> None:
    server = servers[mta, "default"]
    alice = run_swaks(
        server=server, tls=True, auth=mechanism, user="alice", password=PASSWORDS["alice"]
    )
    assert alice.auth_code == 235, alice.transcript
    for user in NOLOGIN_USERS:
        refused = run_swaks(
            server=server, tls=True, auth=mechanism, user=user, password=PASSWORDS[user]
        )
        assert refused.auth_code == 535, refused.transcript
        if mta == "postfix":  # Postfix shows the FAIL's reason= in its reply
            assert f"authentication failed: {REASONS[user]}" in refused.transcript
        guess = run_swaks(server=server, tls=True, auth=mechanism, user=user, password="guess")
        assert guess.auth_code == 535, guess.transcript
        assert REASONS[user] not in guess.transcript  # a wrong password learns nothing


@pytest.mark.parametrize("mta", MTAS)
def test_nologin_users_get_535_over_scram(
    servers: dict[tuple[str, str], str], tls_files: TlsFiles, mta: str
) -> None:
    host, port = servers[mta, "default"].split(":")
    address = (host, int(port))
    assert _login(address, tls_files, "SCRAM-SHA-256", "alice", PASSWORDS["alice"]).verified
    for user in NOLOGIN_USERS:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            _login(address, tls_files, "SCRAM-SHA-256", user, PASSWORDS[user])
        assert refused.value.smtp_code == 535


@pytest.mark.parametrize("mechanism", ["PLAIN", "CRAM-MD5"])
@pytest.mark.parametrize("mta", MTAS)
def test_compat_mode_lets_them_in_as_dovecot_would(
    servers: dict[tuple[str, str], str], mta: str, mechanism: str
) -> None:
    """What the default mode prevents: Dovecot's OK with nologin is a 235 for the MTA."""
    for user in NOLOGIN_USERS:
        result = run_swaks(
            server=servers[mta, "compat"],
            tls=True,
            auth=mechanism,
            user=user,
            password=PASSWORDS[user],
        )
        assert result.auth_code == 235, result.transcript
