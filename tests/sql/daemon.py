"""``authbridge serve`` with an sql store, for the daemon-level tests."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

from tests.policy.authclient import AuthClient, ConnectionClosed
from tests.support.authbridge_proc import AuthbridgeServer


class SqlBridge(AuthbridgeServer):
    """authbridge serve --config FILE, with the stores of that file (no --passwd-file)."""

    def __init__(self, config_path: Path, socket_path: Path) -> None:
        super().__init__(config_path, socket_path, extra_args=["--config", str(config_path)])

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "authbridge",
            "serve",
            "--socket",
            str(self.socket_path),
            "--socket-mode",
            "0666",
            *self.extra_args,
        ]


def bridge_config(
    dsn: str, query: str, *, timeout: float = 1.0, cache_ttl: float = 0, extra: str = ""
) -> str:
    cache = (
        f"[cache]\nenabled = true\nttl = {cache_ttl}\nnegative_ttl = {cache_ttl}\n"
        if cache_ttl
        else ""
    )
    return (
        f'[[store]]\ntype = "sql"\ndriver = "postgresql"\ndsn = "{dsn}"\n'
        f'password_query = """{query}"""\ntimeout = {timeout}\npool_size = 2\n'
        "[policy]\nfailure_delay = 0\n[penalty]\nenabled = false\n" + cache + extra
    )


def start_bridge(directory: Path, config: str) -> SqlBridge:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    path = directory / "authbridge.toml"
    path.write_text(config)
    bridge = SqlBridge(path, directory / "auth-client")
    bridge.start()
    return bridge


def auth(bridge: SqlBridge, user: str, password: str) -> str:
    """One PLAIN request on a fresh connection: "OK", "FAIL" or "CLOSED" (internal failure)."""
    with AuthClient(bridge.socket_path, timeout=10) as client:
        client.auth_plain(1, user, password, "secured")
        try:
            line = client.reply(1)
        except ConnectionClosed:  # how an internal failure ends (tempfail_disconnects)
            return "CLOSED"
        return line.split("\t")[0]


def lookup_counts(metrics_port: int, store_prefix: str = "sql:postgresql:") -> dict[str, float]:
    """authbridge_store_lookup_duration_seconds_count by result, for the sql store."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    pattern = re.compile(
        r"^authbridge_store_lookup_duration_seconds_count\{(?P<labels>[^}]*)\} (?P<value>\S+)$"
    )
    for line in text.splitlines():
        match = pattern.match(line)
        if match and f'store="{store_prefix}' in match["labels"]:
            result = re.search(r'result="([^"]+)"', match["labels"])
            assert result is not None
            counts[result[1]] = float(match["value"])
    return counts
