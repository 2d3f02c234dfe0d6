"""Item 10: no password reaches a log line or the metrics, in info and in debug mode.

The daemon runs real authentications (our client, doveadm, Exim) with known passwords,
then malformed lines that carry them the way a broken client would: Dovecot's own error
messages quote the offending line, base64 password included. Every log line (raw, and
each JSON value decoded) and /metrics are searched for the passwords in clear and for
any base64 run that decodes to something containing one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.core import wire
from tests.policy.authclient import AuthClient, plain_resp
from tests.policy.conftest import StartBridge
from tests.policy.daemon import metrics_args, scrape_text, wait_for_metrics
from tests.policy.mta import exim_for, exim_session
from tests.policy.users import PASSWORDS
from tests.support.dovecot import doveadm_auth
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.interop

CONFIG = """\
[policy]
failure_delay = 0.2
[penalty]
steps = [0.1]
[cache]
enabled = true
"""

_B64_RUN = re.compile(rb"[A-Za-z0-9+/]{8,}={0,2}")


def _decodings(blob: bytes) -> Iterator[bytes]:
    """Every way a base64 run might decode: from each of 4 offsets, a cut-off tail repadded."""
    for match in _B64_RUN.finditer(blob):
        run = match.group().rstrip(b"=")
        for start in range(4):
            part = run[start:]
            rest = len(part) % 4
            part = part[:-1] if rest == 1 else part + b"=" * ((4 - rest) % 4)
            if part:
                try:
                    yield base64.b64decode(part)
                except (binascii.Error, ValueError):
                    continue


def _json_values(line: str) -> Iterator[str]:
    try:
        obj = json.loads(line)
    except ValueError:
        return
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item


def find_secrets(text: str, secrets: list[str]) -> list[str]:
    """Each (secret, line) where a secret shows, in clear, JSON-escaped or base64."""
    found = []
    for line in text.splitlines():
        views = [line, *_json_values(line)]
        for view in views:
            raw = view.encode("utf-8", "surrogateescape")
            decoded = list(_decodings(raw))
            for secret in secrets:
                needle = secret.encode()
                hit = f"{secret!r} in: {line[:300]}"
                if (needle in raw or any(needle in d for d in decoded)) and hit not in found:
                    found.append(hit)
    return found


def _drive(socket_path: Path) -> None:
    """The authentications and the malformed lines, every one with a known password."""
    good = PASSWORDS["plainuser"]
    with AuthClient(socket_path) as c:
        c.plain(1, "plainuser", good, "secured", "rip=192.0.2.1")
        c.plain(2, "plainuser", good, "secured", "rip=192.0.2.1")  # cache hit
        c.plain(3, "plainuser", PASSWORDS["quoteuser"], "secured", "rip=192.0.2.1")
        c.plain(4, "plainuser", good, "rip=192.0.2.1")  # refused: not secured
        c.plain(5, "sha512user", PASSWORDS["sha512user"], "secured")
        c.plain(6, "spaceuser", PASSWORDS["spaceuser"], "secured")
        c.plain(7, "nosuchuser", PASSWORDS["bcryptuser"], "secured")
        c.plain(8, "!bad name", PASSWORDS["alice@example.com"], "secured")
        # LOGIN: the password travels alone in a CONT.
        c.send("AUTH\t9\tLOGIN\tservice=smtp\tsecured\n")
        c.read_line()
        c.send("CONT\t9\t" + wire.b64encode(b"sha512user") + "\n")
        c.read_line()
        c.send("CONT\t9\t" + wire.b64encode(PASSWORDS["sha512user"].encode()) + "\n")
        c.reply(9)
        c.send("AUTH\t10\tLOGIN\tservice=smtp\tsecured\n")
        c.read_line()
        c.send("CONT\t10\t" + wire.b64encode(b"sha512user") + "\n")
        c.read_line()
        c.send("CONT\t10\t" + wire.b64encode(PASSWORDS["quoteuser"].encode()) + "\n")
        c.reply(10)
        # Invalid base64 around a real one; a clear-text password as a continuation.
        c.send(f"AUTH\t11\tPLAIN\tservice=smtp\tsecured\tresp={plain_resp('plainuser', good)}!\n")
        c.reply(11)
        c.send("AUTH\t12\tLOGIN\tservice=smtp\tsecured\n")
        c.read_line()
        c.send(f"CONT\t12\t{PASSWORDS['cramuser']}\n")
        c.reply(12)
    malformed = [
        # Spaces instead of tabs: an unknown command that carries a PLAIN response.
        "AUTH 1 PLAIN service=smtp resp=" + plain_resp("plainuser", good),
        # A mechanism field with the rest of the line glued on.
        "AUTH\t1\tPLAIN resp=" + plain_resp("plainuser", good) + "\tservice=smtp",
        # A duplicate id makes Dovecot drop the connection.
        "AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tPLAIN\tservice=smtp\tresp="
        + plain_resp("plainuser", good),
        # 16 KiB without a line feed.
        "AUTH\t1\tPLAIN\tservice=smtp\tresp=" + plain_resp("plainuser", good) * 700,
    ]
    for line in malformed:
        with AuthClient(socket_path) as c:
            c.send(line + "\n")
            c.closed_within(3)
    # Lines where the handshake is expected.
    auth_line = "AUTH\t1\tPLAIN\tservice=smtp\tresp=" + plain_resp("plainuser", good) + "\n"
    for prefix in ("", "VERSION\t1\t2\n"):
        with AuthClient(socket_path, handshake=False) as c:
            c.send(prefix + auth_line)
            c.closed_within(3)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_password_in_logs_or_metrics(
    bridge: StartBridge, policy_dir: Path, policy_tls: TlsFiles, level: str
) -> None:
    args, url = metrics_args()
    server = bridge(f"secrets-{level}", CONFIG, [*args, "--log-level", level])
    wait_for_metrics(url)
    _drive(server.socket_path)
    for user in ("sha512user", "cramuser"):
        doveadm_auth(server.socket_path, user, PASSWORDS[user], "secured")
        doveadm_auth(server.socket_path, user, PASSWORDS["bcryptuser"], "secured")
    exim = exim_for(server.socket_path, policy_dir, f"secrets-exim-{level}", policy_tls)
    for user in ("plainuser", "quoteuser"):
        exim_session(exim, user, client_ip="192.168.0.10", tls=True)
        exim_session(exim, user, client_ip="192.168.0.10", tls=True, mech="LOGIN")
        exim_session(exim, user, client_ip="192.168.0.10", password=PASSWORDS["cramuser"])
    exim_session(exim, "cramuser", client_ip="192.168.0.10", mech="CRAM-MD5")
    metrics = scrape_text(url)
    server.stop()
    log = server.stderr_text()
    if level == "debug":
        assert '"authbridge.trace"' in log, "debug mode did not trace the protocol"
    assert "authentication" in log
    secrets = sorted(set(PASSWORDS.values()))
    leaks = find_secrets(log, secrets) + find_secrets(metrics, secrets)
    assert not leaks, "\n".join(leaks[:20])


def test_the_scanner_finds_what_it_must() -> None:
    """The search above would see a leak in each form a leak can take."""
    secret = PASSWORDS["spaceuser"]
    b64 = plain_resp("spaceuser", secret)
    assert find_secrets(f"x {secret} y", [secret])
    assert find_secrets(json.dumps({"reason": f"line: {secret}"}), [secret])
    assert find_secrets(f"unknown command: AUTH 1 PLAIN resp={b64}", [secret])
    plain = plain_resp("plainuser", "plainpass")
    assert find_secrets(json.dumps({"reason": f"AUTH?1?PLAIN?resp={plain}"}), ["plainpass"])
    assert find_secrets("resp=" + base64.b64encode(secret.encode()).decode()[:-2], [secret[:-2]])
    assert not find_secrets(f"resp=<redacted> user=spaceuser {b64[:6]}", [secret])
