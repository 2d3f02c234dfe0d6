"""The sql store on a real PostgreSQL: bound parameters as the server logs them,
fields, and every kind of outage (down at start, stopped, slow, refusing, broken query)
ending as StoreUnavailable within the timeout, with recovery and no restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from authbridge.checks.expand import expand, variables
from authbridge.config import StoreConfig
from authbridge.observability.metrics import Metrics
from authbridge.passdb.base import StoreUnavailable
from authbridge.passdb.sql import SqlStore, open_sql_store
from authbridge.schemes import verify_password
from tests.sql.conftest import QUERY, load_schema, make_cluster
from tests.sql.pgcluster import PgCluster
from tests.sql.test_sqlite import INJECTIONS, SSHA512


def pg_store(cluster: PgCluster, query: str = QUERY, **kwargs: Any) -> SqlStore:
    settings: dict[str, Any] = {"timeout": 2.0, "pool_size": 2, **kwargs}
    observe = settings.pop("observe", None)
    config = StoreConfig(
        "sql",
        driver="postgresql",
        dsn=cluster.dsn(),
        password_query=query,
        default_scheme="MD5",
        **settings,
    )
    return open_sql_store(config, observe=observe)


async def test_found_with_fields_and_booleans(pg: PgCluster, pg_users: Callable[..., None]) -> None:
    pg_users("alice@example.org", SSHA512)
    pg_users("bob@example.org", "{PLAIN}b", allow_nets="192.0.2.0/24", nologin=True, reason="moved")
    store = pg_store(pg)
    try:
        alice = await store.lookup("alice@example.org")
        assert alice is not None and alice.password is not None
        assert verify_password(alice.password, b"example-password", alice.user)
        # nologin = false is left out like NULL; reason is NULL via the CASE.
        assert alice.fields == (("user", "alice@example.org"),)
        bob = await store.lookup("bob@example.org")
        assert bob is not None
        assert bob.fields == (
            ("user", "bob@example.org"),
            ("allow_nets", "192.0.2.0/24"),
            ("nologin", None),
            ("reason", "moved"),
        )
        assert await store.lookup("nobody@example.org") is None
    finally:
        await store.aclose()


async def test_inactive_and_null_password(pg: PgCluster, pg_users: Callable[..., None]) -> None:
    pg_users("off@example.org", "{PLAIN}x", active=False)
    pg_users("nopw@example.org", None)
    store = pg_store(pg)
    try:
        assert await store.lookup("off@example.org") is None
        entry = await store.lookup("nopw@example.org")
        assert entry is not None and entry.password is None
    finally:
        await store.aclose()


async def test_request_variables_are_bound_too(
    pg: PgCluster, pg_users: Callable[..., None]
) -> None:
    pg_users("carol@example.org", "{PLAIN}c")

    class Info:
        service, rip, lip = "smtp", "192.0.2.9", None

    query = (
        "SELECT password, %{rip}::text AS rip_seen, %s AS service_seen "
        "FROM mail_users WHERE username = '%u'"
    )
    store = pg_store(pg, query)
    try:
        assert store.uses_request
        entry = await store.lookup("carol@example.org", Info())
        assert entry is not None
        assert entry.fields == (("rip_seen", "192.0.2.9"), ("service_seen", "smtp"))
        plain = await store.lookup("carol@example.org")  # old call style still works
        assert plain is not None and plain.fields == (("rip_seen", ""), ("service_seen", ""))
    finally:
        await store.aclose()


async def test_injection_strings_are_parameters_in_the_server_log(
    pg: PgCluster, pg_users: Callable[..., None]
) -> None:
    for i, user in enumerate(INJECTIONS):
        if "\0" not in user:
            pg_users(user, f"{{PLAIN}}secret-{i}")
    pg_users("alice@example.org", "{PLAIN}a")
    store = pg_store(pg)
    log_start = len(pg.log_text())
    try:
        for i, user in enumerate(INJECTIONS):
            entry = await store.lookup(user)
            if "\0" in user:
                assert entry is None  # PostgreSQL text cannot hold NUL: never sent
                continue
            assert entry is not None and entry.password is not None
            assert entry.password.data == f"secret-{i}"
            shown = expand(entry.field("user") or "", variables("x", "smtp", None, None))
            assert shown == user
        assert await store.lookup("x' or '1'='1") is None
        assert await store.lookup("alice@example.org") is not None  # no table was dropped
    finally:
        await store.aclose()
    log = pg.log_text()[log_start:]
    statements = [line for line in log.splitlines() if "mail_users" in line and "execute" in line]
    assert len(statements) >= len(INJECTIONS)
    for line in statements:
        # The statement as the server received it: a $1 placeholder, no user data.
        assert "WHERE username = $1 AND active" in line, line
        for user in INJECTIONS:
            assert user.replace("\0", "") not in line
    details = re.findall(r"DETAIL:\s+[Pp]arameters: \$1 = (.*)", log)
    assert "'x''; drop table mail_users;--'" in details


async def test_broken_query_is_an_outage(pg: PgCluster) -> None:
    store = pg_store(pg, "SELECT passwd FROM mail_users WHERE username = '%u'")
    try:
        with pytest.raises(StoreUnavailable, match="passwd"):
            await store.lookup("alice@example.org")
    finally:
        await store.aclose()


async def test_slow_query_times_out_and_the_connection_comes_back(
    pg: PgCluster, pg_users: Callable[..., None]
) -> None:
    pg_users("slow@example.org", "{PLAIN}s")
    slow_query = "SELECT password FROM mail_users, pg_sleep(5) WHERE username = '%u'"
    store = pg_store(pg, slow_query, timeout=1.0, pool_size=1)
    fast = pg_store(pg, pool_size=1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no answer within 1 s"):
            await store.lookup("slow@example.org")
        assert time.monotonic() - started < 1.6
        # statement_timeout cancels it on the server: the single pooled connection is
        # free again soon, the next lookup is answered (and fails in time again).
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.lookup("slow@example.org")
        assert time.monotonic() - started < 1.6
        assert await fast.lookup("slow@example.org") is not None
    finally:
        await store.aclose()
        await fast.aclose()


@pytest.mark.parametrize(
    ("dsn_of", "message"),
    [
        (lambda pg: pg.dsn(user="no_such_role"), 'role "no_such_role" does not exist'),
        (lambda pg: pg.dsn(dbname="no_such_db"), 'database "no_such_db" does not exist'),
        # nothing listens on that socket
        (lambda pg: f"host={pg.sockdir} port=1 dbname=mail user=authbridge", "No such file"),
    ],
)
async def test_refused_connections_are_outages_within_the_timeout(
    pg: PgCluster, dsn_of: Callable[[PgCluster], str], message: str
) -> None:
    config = StoreConfig(
        "sql", driver="postgresql", dsn=dsn_of(pg), password_query=QUERY, timeout=1.0
    )
    store = open_sql_store(config)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=message):
                await store.lookup("alice@example.org")
            assert time.monotonic() - started < 1.2
    finally:
        await store.aclose()


@pytest.fixture
def own_cluster(sql_dir: Path) -> Iterator[PgCluster]:
    """A cluster this test may stop and start."""
    base = sql_dir / f"pg-own-{time.monotonic_ns()}"
    cluster = make_cluster(base)
    with cluster.admin() as conn:
        conn.execute("INSERT INTO mail_users (username, password) VALUES ('u@x', '{PLAIN}p')")
    yield cluster
    cluster.remove()


async def test_stopped_database_then_restarted_needs_no_restart(own_cluster: PgCluster) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = pg_store(own_cluster, timeout=1.0, observe=metrics.observe_lookup)
    try:
        assert await store.lookup("u@x") is not None
        own_cluster.stop()  # fast shutdown by the postmaster's PID
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.lookup("u@x")
            assert time.monotonic() - started < 1.6
        own_cluster.start()
        # The pooled connections died with the server; the first lookup after the
        # restart already succeeds (dead ones are skipped, new ones are made).
        with trio.fail_after(3):
            assert await store.lookup("u@x") is not None
        for _ in range(5):
            assert await store.lookup("u@x") is not None
    finally:
        await store.aclose()

    def count(result: str) -> float:
        value = registry.get_sample_value(
            "authbridge_store_lookup_duration_seconds_count",
            {"store": store.name, "result": result},
        )
        return value or 0.0

    assert count("error") == 3
    assert count("found") == 7


async def test_down_at_start_then_up(sql_dir: Path) -> None:
    cluster = PgCluster(sql_dir / f"pg-late-{time.monotonic_ns()}")
    cluster.init()
    config = StoreConfig(
        "sql", driver="postgresql", dsn=cluster.dsn(), password_query=QUERY, timeout=1.0
    )
    started = time.monotonic()
    store = open_sql_store(config)  # must not wait for (or need) the database
    assert time.monotonic() - started < 0.5
    try:
        with pytest.raises(StoreUnavailable):
            await store.lookup("u@x")
        load_schema(cluster.start())
        with cluster.admin() as conn:
            conn.execute("INSERT INTO mail_users (username, password) VALUES ('u@x', '{PLAIN}p')")
        deadline = time.monotonic() + 10
        while True:
            try:
                entry = await store.lookup("u@x")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "never reconnected"
                await trio.sleep(0.2)
        assert entry is not None
    finally:
        await store.aclose()
        cluster.remove()


def test_name_never_shows_a_password(pg: PgCluster) -> None:
    config = StoreConfig(
        "sql", driver="postgresql", dsn=pg.dsn() + " password=hunter2", password_query=QUERY
    )
    store = open_sql_store(config)
    assert "hunter2" not in store.name and "hunter2" not in repr(config)
    assert store.name == f"sql:postgresql:{pg.sockdir}:{pg.port}/mail"


async def test_more_than_one_row_is_an_outage(pg: PgCluster) -> None:
    store = pg_store(pg, "SELECT '{PLAIN}x' AS password FROM generate_series(1, 5) WHERE %u <> ''")
    try:
        with pytest.raises(StoreUnavailable, match="more than one row"):
            await store.lookup("alice@example.org")
    finally:
        await store.aclose()


async def test_utf8_names_on_a_latin1_database(pg: PgCluster) -> None:
    """Parameters and values travel as UTF-8 whatever the database's own encoding."""
    with pg.admin("postgres") as conn:
        conn.execute(
            "CREATE DATABASE latin1 ENCODING 'LATIN1' TEMPLATE template0 "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    with pg.admin("latin1") as conn:
        conn.execute("CREATE TABLE u (name text, password text, reason text)")
        conn.execute("GRANT SELECT ON u TO authbridge")
        conn.execute("INSERT INTO u VALUES ('josé@example.org', '{PLAIN}x', 'ça va')")
    config = StoreConfig(
        "sql",
        driver="postgresql",
        dsn=pg.dsn(dbname="latin1"),
        password_query="SELECT password, reason FROM u WHERE name = '%u'",
    )
    store = open_sql_store(config)
    try:
        entry = await store.lookup("josé@example.org")
        assert entry is not None and entry.fields == (("reason", "ça va"),)
        assert await store.lookup("jose@example.org") is None
    finally:
        await store.aclose()
