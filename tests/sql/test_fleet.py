"""Issue 9 item 4: two authbridge daemons on one PostgreSQL, as two MX hosts would be.

A password changed in the database is honoured by both within the cache TTL, and a
user switched off (``active = false``) is refused by both, without touching either
daemon.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.schemes import generate
from tests.sql.conftest import QUERY
from tests.sql.daemon import SqlBridge, auth, bridge_config, start_bridge
from tests.sql.pgcluster import PgCluster
from tests.support import wait_for_value

TTL = 1.0
USER = "fleet@example.org"


@pytest.fixture
def fleet(pg: PgCluster, sql_dir: Path) -> Iterator[tuple[SqlBridge, SqlBridge]]:
    with pg.admin() as conn:
        conn.execute(
            "INSERT INTO mail_users (username, password) VALUES (%s, %s)",
            (USER, generate("SSHA512", b"first-pass", USER)),
        )
    config = bridge_config(pg.dsn(), QUERY, cache_ttl=TTL)
    stamp = time.monotonic_ns()
    one = start_bridge(sql_dir / f"mx1-{stamp}", config)
    try:
        two = start_bridge(sql_dir / f"mx2-{stamp}", config)
        try:
            yield one, two
        finally:
            two.stop()
    finally:
        one.stop()
        with pg.admin() as conn:
            conn.execute("DELETE FROM mail_users WHERE username = %s", (USER,))


def both(fleet: tuple[SqlBridge, SqlBridge], password: str) -> list[str]:
    return [auth(bridge, USER, password) for bridge in fleet]


#: What a loaded machine may add to the TTL: scheduling, a new connection, one query.
SLACK = 1.5


def honoured_within_ttl(fleet: tuple[SqlBridge, SqlBridge], password: str, expected: str) -> None:
    """Ask both daemons again and again until both answer ``expected``.

    Fails (TimeoutError) unless that happens within the cache TTL plus :data:`SLACK`.
    """
    wait_for_value(
        lambda: both(fleet, password),
        lambda replies: replies == [expected, expected],
        timeout=TTL + SLACK,
        what=f"both daemons answering {expected} within the {TTL} s cache TTL",
    )


def test_password_change_is_honoured_by_both_within_the_ttl(
    pg: PgCluster, fleet: tuple[SqlBridge, SqlBridge]
) -> None:
    assert both(fleet, "first-pass") == ["OK", "OK"]
    assert both(fleet, "second-pass") == ["FAIL", "FAIL"]
    with pg.admin() as conn:
        conn.execute(
            "UPDATE mail_users SET password = %s WHERE username = %s",
            (generate("SSHA512", b"second-pass", USER), USER),
        )
    honoured_within_ttl(fleet, "second-pass", "OK")
    assert both(fleet, "first-pass") == ["FAIL", "FAIL"]


def test_disabled_user_is_refused_by_both(
    pg: PgCluster, fleet: tuple[SqlBridge, SqlBridge]
) -> None:
    assert both(fleet, "first-pass") == ["OK", "OK"]
    with pg.admin() as conn:
        conn.execute("UPDATE mail_users SET active = false WHERE username = %s", (USER,))
    honoured_within_ttl(fleet, "first-pass", "FAIL")
    with pg.admin() as conn:
        conn.execute("UPDATE mail_users SET active = true WHERE username = %s", (USER,))
    honoured_within_ttl(fleet, "first-pass", "OK")


HOSTILE = [
    "o'brien@example.org",
    'say"hi@example.org',
    "back\\slash@example.org",
    "100%u@example.org",
    "x';--@example.org",
]


def test_hostile_names_through_the_daemon(
    pg: PgCluster, fleet: tuple[SqlBridge, SqlBridge]
) -> None:
    """Dovecot's default auth_username_chars refuse all of these before any lookup
    (the store's own handling of such raw strings is in test_sqlite/test_postgresql):
    through the daemon they are plain FAILs, never an internal failure or a login."""
    with pg.admin() as conn:
        for name in HOSTILE:
            conn.execute(
                "INSERT INTO mail_users (username, password) VALUES (%s, %s)",
                (name, generate("SSHA512", b"hostile-pass", name)),
            )
    try:
        one = fleet[0]
        for name in HOSTILE:
            assert auth(one, name, "hostile-pass") == "FAIL", name
        for attack in ("x' or '1'='1", "' or 1=1 --", "fleet@example.org' --"):
            assert auth(one, attack, "first-pass") == "FAIL", attack
        assert auth(one, USER, "first-pass") == "OK"  # the table is still there
    finally:
        with pg.admin() as conn:
            conn.execute("DELETE FROM mail_users WHERE username = ANY(%s)", (HOSTILE,))
