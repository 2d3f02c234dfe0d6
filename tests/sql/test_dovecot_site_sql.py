"""``serve --dovecot-config`` with dovecot-pgsql's example beside the REAL Dovecot.

Debian's shipped tree is copied with auth-sql and auth-passwdfile enabled; its
dovecot-sql.conf.ext keeps the example query as shipped (``username`` and ``domain``
columns, ``%n`` and ``%d``) on the example ``users`` table it describes, with only
``driver`` and ``connect`` filled in. The real Dovecot (its pgsql driver) and authbridge
serve the same tree from the same PostgreSQL; the same logins must succeed and fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.schemes import generate
from tests.sql.pgcluster import PgCluster
from tests.support import missing_peer, require_binary
from tests.support.dovecot_site import SiteAuthbridge, SiteDovecot, copy_site, outcomes

pytestmark = pytest.mark.interop

#: The example table of the comments in dovecot-sql.conf.ext.
EXAMPLE_TABLE = """
CREATE TABLE users (
    username VARCHAR(128) NOT NULL,
    domain VARCHAR(128) NOT NULL,
    password VARCHAR(64) NOT NULL,
    home VARCHAR(255) NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    active CHAR(1) DEFAULT 'Y' NOT NULL
)
"""

CASES = [
    ("ann@example.org", "annpw"),  # {PLAIN} in SQL
    ("ann@example.org", "wrong"),
    ("Ann@Example.org", "annpw"),  # %Lu first
    ("bob@example.org", "bobpw"),  # no prefix: default_pass_scheme MD5 (MD5-CRYPT)
    ("carol@example.org", "carolsql"),  # SQL mismatch, the passwd-file after it matches
    ("carol@example.org", "carolfile"),
    ("dan", "danpw"),  # only in the passwd-file
    ("ann", "annpw"),  # no domain: %d is empty, no row
    ("nobody@example.org", "x"),
]
SUCCEED = {
    ("ann@example.org", "annpw"),
    ("Ann@Example.org", "annpw"),
    ("bob@example.org", "bobpw"),
    ("carol@example.org", "carolsql"),
    ("carol@example.org", "carolfile"),
    ("dan", "danpw"),
}


def fill_database(pg: PgCluster) -> None:
    with pg.admin("postgres") as conn:
        conn.execute("DROP DATABASE IF EXISTS dovecot_example")
        conn.execute("CREATE DATABASE dovecot_example")
    with pg.admin("dovecot_example") as conn:
        conn.execute(EXAMPLE_TABLE)
        conn.execute("GRANT SELECT ON users TO authbridge")
        md5 = generate("MD5-CRYPT", b"bobpw", "bob").removeprefix("{MD5-CRYPT}")
        for name, password in [("ann", "{PLAIN}annpw"), ("bob", md5), ("carol", "{PLAIN}carolsql")]:
            conn.execute(
                "INSERT INTO users (username, domain, password, home, uid, gid) "
                "VALUES (%s, 'example.org', %s, '/nonexistent', 65534, 65534)",
                (name, password),
            )


def make_site(base: Path, pg: PgCluster) -> Path:
    config = copy_site(base, enable=("sql", "passwdfile"))
    sql = base / "dovecot-sql.conf.ext"
    text = sql.read_text()
    connect = pg.dsn(dbname="dovecot_example")
    for old, new in [
        ("#driver = \n", "driver = pgsql\n"),
        ("#connect =\n", f"connect = {connect}\n"),
        ("#password_query = \\\n#  SELECT", "password_query = \\\n  SELECT"),
        (
            "#  FROM users WHERE username = '%n' AND domain = '%d'\n\n# userdb",
            "  FROM users WHERE username = '%n' AND domain = '%d'\n\n# userdb",
        ),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)  # the first: the example query, not the prefetch one
    sql.write_text(text)
    (base / "users").write_text("carol@example.org:{PLAIN}carolfile\ndan:{PLAIN}danpw\n")
    return config


@pytest.fixture(scope="module")
def servers(pg: PgCluster, sql_dir: Path) -> Iterator[tuple[SiteDovecot, SiteAuthbridge]]:
    require_binary("dovecot")
    require_binary("doveadm")
    if not any(Path("/usr/lib/dovecot/modules").glob("libdriver_pgsql.so")):
        missing_peer("Dovecot's pgsql driver (dovecot-pgsql) is not installed")
    fill_database(pg)
    base = sql_dir / "dovecot-site"
    config = make_site(base / "site", pg)
    dovecot = SiteDovecot(config, base / "dovecot.sock", base / "dovecot")
    ours = SiteAuthbridge(config, base / "authbridge.sock")
    dovecot.start()
    try:
        ours.start()
        try:
            yield dovecot, ours
        finally:
            ours.stop()
    finally:
        dovecot.stop()


def test_the_same_logins_succeed_and_fail(servers: tuple[SiteDovecot, SiteAuthbridge]) -> None:
    dovecot, ours = servers
    theirs = outcomes(dovecot.socket_path, CASES)
    expected = {case: "ok" if case in SUCCEED else "fail" for case in CASES}
    assert theirs == expected, f"Dovecot disagrees with the expectation:\n{dovecot.log_tail()}"
    assert outcomes(ours.socket_path, CASES) == theirs, ours.stderr_text()[-3000:]
