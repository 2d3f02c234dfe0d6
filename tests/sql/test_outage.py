"""Issue 9 item 3 end to end: a database that is down or slow is an internal failure,
which the real Exim answers with 435 and the real Postfix with 454 (the client retries
later), bounded by the store timeout; when the database is back, authbridge serves
again by itself, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.schemes import generate
from tests.policy.mta import exim_for, exim_session, postfix_for, postfix_session
from tests.sql.conftest import load_schema, make_cluster
from tests.sql.daemon import SqlBridge, auth, bridge_config, lookup_counts, start_bridge
from tests.sql.pgcluster import PgCluster
from tests.support import free_tcp_port, require_binary, wait_for_text
from tests.support.exim import EximConfig
from tests.support.postfix import PostfixMaster
from tests.support.tls import make_self_signed

pytestmark = pytest.mark.interop

LAN = "192.168.0.10"
USER, PASSWORD = "mx@example.org", "outage-pass"
SLOW_USER = "slow@example.org"
TIMEOUT = 1.0
#: The deploy query, plus a server-side sleep for one user: a slow database on demand.
SLOW_QUERY = (
    "SELECT username AS user, password FROM mail_users, "
    "pg_sleep(CASE WHEN username = 'slow@example.org' THEN 4 ELSE 0 END) "
    "WHERE username = '%u' AND active"
)


class Site:
    def __init__(
        self, db: PgCluster, bridge: SqlBridge, exim: EximConfig, postfix: PostfixMaster
    ) -> None:
        self.db, self.bridge, self.exim, self.postfix = db, bridge, exim, postfix

    @property
    def metrics_port(self) -> int:
        config = (self.bridge.socket_path.parent / "authbridge.toml").read_text()
        return int(config.split('listen = "127.0.0.1:')[1].split('"')[0])


@pytest.fixture(scope="module")
def site(sql_dir: Path) -> Iterator[Site]:
    require_binary("openssl")
    base = sql_dir / "outage"
    db = make_cluster(base / "pg")
    try:
        with db.admin() as conn:
            for user in (USER, SLOW_USER):
                conn.execute(
                    "INSERT INTO mail_users (username, password) VALUES (%s, %s)",
                    (user, generate("SSHA512", PASSWORD.encode(), user)),
                )
        metrics = f'[metrics]\nlisten = "127.0.0.1:{free_tcp_port()}"\n'
        config = bridge_config(db.dsn(), SLOW_QUERY, timeout=TIMEOUT, extra=metrics)
        bridge = start_bridge(base / "bridge", config)
        try:
            tls = make_self_signed(base / "tls")
            exim = exim_for(bridge.socket_path, base, "exim", tls)
            with PostfixMaster(postfix_for(bridge.socket_path, base, "postfix", tls)) as postfix:
                yield Site(db, bridge, exim, postfix)
        finally:
            bridge.stop()
    finally:
        db.remove()


def exim_code(site: Site, user: str) -> int | None:
    result = exim_session(site.exim, user, client_ip=LAN, tls=True, password=PASSWORD, timeout=15)
    return result.auth_code


def postfix_code(site: Site, user: str) -> int | None:
    return postfix_session(site.postfix.server, user, password=PASSWORD, timeout=15).auth_code


def test_database_down_then_back(site: Site) -> None:
    assert auth(site.bridge, USER, PASSWORD) == "OK"
    assert exim_code(site, USER) == 235
    assert postfix_code(site, USER) == 235

    before = lookup_counts(site.metrics_port)
    site.db.stop()  # fast shutdown of the postmaster, by PID
    try:
        started = time.monotonic()
        assert auth(site.bridge, USER, PASSWORD) == "CLOSED"
        assert time.monotonic() - started < TIMEOUT + 1.0
        assert exim_code(site, USER) == 435
        assert postfix_code(site, USER) == 454
        # An internal failure is never a wrong password: the log says what happened.
        wait_for_text(site.bridge.stderr_text, "store unavailable")
        # ... and /metrics counts the backend errors (with their latency) per store.
        during = lookup_counts(site.metrics_port)
        assert during.get("error", 0) - before.get("error", 0) >= 3
        assert during.get("found", 0) == before.get("found", 0)
    finally:
        site.db.start()

    # Back by itself: no signal, no restart of authbridge.
    deadline = time.monotonic() + 15
    while auth(site.bridge, USER, PASSWORD) != "OK":
        assert time.monotonic() < deadline, "authbridge did not reconnect"
        time.sleep(0.2)
    assert exim_code(site, USER) == 235
    assert postfix_code(site, USER) == 235


def test_slow_database_is_a_temporary_failure_within_the_timeout(site: Site) -> None:
    started = time.monotonic()
    assert auth(site.bridge, SLOW_USER, PASSWORD) == "CLOSED"
    assert time.monotonic() - started < TIMEOUT + 1.0
    assert exim_code(site, SLOW_USER) == 435
    assert postfix_code(site, SLOW_USER) == 454
    # Other users are answered meanwhile (statement_timeout freed the connection).
    assert auth(site.bridge, USER, PASSWORD) == "OK"


def test_daemon_starts_while_the_database_is_down(sql_dir: Path) -> None:
    base = sql_dir / "late"
    db = PgCluster(base / "pg").init()  # made, not started
    try:
        bridge = start_bridge(base / "bridge", bridge_config(db.dsn(), SLOW_QUERY, timeout=TIMEOUT))
        try:
            assert auth(bridge, USER, PASSWORD) == "CLOSED"
            load_schema(db.start())
            with db.admin() as conn:
                conn.execute(
                    "INSERT INTO mail_users (username, password) VALUES (%s, %s)",
                    (USER, generate("SSHA512", PASSWORD.encode(), USER)),
                )
            assert auth(bridge, USER, PASSWORD) == "OK"
        finally:
            bridge.stop()
    finally:
        db.remove()
