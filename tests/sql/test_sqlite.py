"""The sql store on SQLite: rows to entries, bound parameters, outages as StoreUnavailable."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from authbridge.checks.expand import expand, variables
from authbridge.config import ConfigError, StoreConfig, parse_config
from authbridge.passdb.base import StoreFormatError, StoreUnavailable
from authbridge.passdb.sql import SqlStore, open_sql_store
from authbridge.passdb.sql_sqlite import SqliteBackend
from authbridge.schemes import StoredPassword, verify_password
from tests.sql.conftest import QUERY, make_sqlite

# authbridge pw -s SSHA512 -p example-password
SSHA512 = (
    "{SSHA512}m/dgwUK+bKfYNXWzAgHgArUcbBmhFSCTN3QsjbnKQ8BLO1fylc7TPZcT6cpA2o3In"
    "N7D4o8jAr8d/P1XaH9y4w1oIRw="
)
INJECTIONS = [
    "o'brien@example.org",
    'say"hi@example.org',
    "back\\slash@example.org",
    "100%u@example.org",
    "x'; drop table mail_users;--",
    "' or '1'='1",
    "a\x00b@example.org",
    "%{rip}",
]


class RecordingConnection(sqlite3.Connection):
    """Records exactly what the store hands the driver."""

    calls: list[tuple[str, tuple[Any, ...]]]

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        RecordingConnection.calls.append((sql, tuple(parameters)))
        return super().execute(sql, parameters)


def store_for(path: Path, query: str = QUERY, **kwargs: Any) -> SqlStore:
    return SqlStore(SqliteBackend(str(path)), query, **kwargs)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_sqlite(
        tmp_path / "users.sqlite",
        [
            ("alice@example.org", SSHA512),
            ("bob@example.org", "{PLAIN}bobpass", 1, "192.0.2.0/24", 1, "closed"),
            ("carol@example.org", None),
            ("dave@example.org", "{PLAIN}x", 0),
            *[(u, f"{{PLAIN}}secret-{i}") for i, u in enumerate(INJECTIONS) if "\0" not in u],
        ],
    )


async def test_found_user_has_password_and_no_null_fields(db: Path) -> None:
    entry = await store_for(db).lookup("alice@example.org")
    assert entry is not None
    assert entry.password is not None and entry.password.scheme == "SSHA512"
    assert verify_password(entry.password, b"example-password", entry.user)
    # user is the only non-NULL extra column; nologin NULL and reason NULL are skipped.
    assert entry.fields == (("user", "alice@example.org"),)


async def test_extra_fields_by_column_name(db: Path) -> None:
    entry = await store_for(db).lookup("bob@example.org")
    assert entry is not None
    assert entry.fields == (
        ("user", "bob@example.org"),
        ("allow_nets", "192.0.2.0/24"),
        ("nologin", "1"),
        ("reason", "closed"),
    )


async def test_null_password_and_unknown_and_inactive(db: Path) -> None:
    store = store_for(db)
    carol = await store.lookup("carol@example.org")
    assert carol is not None and carol.password is None
    assert await store.lookup("nobody@example.org") is None
    assert await store.lookup("dave@example.org") is None  # active = 0: not found


async def test_default_scheme_applies_to_bare_values(tmp_path: Path) -> None:
    path = make_sqlite(tmp_path / "u.sqlite", [("eve", "plainvalue")])
    entry = await store_for(path, default_scheme="PLAIN").lookup("eve")
    assert entry is not None and entry.password == StoredPassword("PLAIN", "plainvalue")


async def test_percent_in_a_value_is_taken_literally(tmp_path: Path) -> None:
    path = make_sqlite(tmp_path / "u.sqlite", [("eve", "{PLAIN}x", 1, None, None, "100%u")])
    query = "SELECT password, reason FROM mail_users WHERE username = %u"
    entry = await store_for(path, query).lookup("eve")
    assert entry is not None and entry.fields == (("reason", "100%%u"),)  # %% = literal %


@pytest.mark.parametrize("user", INJECTIONS)
async def test_injection_strings_are_bound_not_interpolated(db: Path, user: str) -> None:
    RecordingConnection.calls = []
    backend = SqliteBackend(str(db))
    backend._connect = lambda: sqlite3.connect(  # type: ignore[method-assign]
        db, factory=RecordingConnection, check_same_thread=False
    )
    store = SqlStore(backend, QUERY)
    entry = await store.lookup(user)
    if "\0" in user:
        assert entry is None
        assert RecordingConnection.calls == []  # never sent at all
        return
    # Exactly the row with that literal name, and its own password: nothing more.
    assert entry is not None
    # Field values are escaped for the authenticator's %-expansion: they read back literally.
    assert expand(entry.field("user") or "", variables("x", "smtp", "192.0.2.1", None)) == user
    assert entry.password is not None
    assert entry.password.data == f"secret-{INJECTIONS.index(user)}"
    [(sql, params)] = RecordingConnection.calls
    assert sql == store.query.sql and user not in sql and "?" in sql
    assert params == (user,)
    # The table survived the DROP attempt.
    assert await store.lookup("alice@example.org") is not None


async def test_quote_or_true_matches_nothing(tmp_path: Path) -> None:
    path = make_sqlite(tmp_path / "u.sqlite", [("alice", "{PLAIN}a"), ("bob", "{PLAIN}b")])
    store = store_for(path, "SELECT password FROM mail_users WHERE username = '%u'")
    assert await store.lookup("x' OR '1'='1") is None
    assert await store.lookup("x\\' OR 1=1 --") is None


async def test_two_rows_is_an_outage_not_a_login(tmp_path: Path) -> None:
    path = make_sqlite(tmp_path / "u.sqlite", [("alice", "{PLAIN}a"), ("bob", "{PLAIN}b")])
    store = store_for(path, "SELECT password FROM mail_users WHERE '%u' <> ''")
    with pytest.raises(StoreUnavailable, match="more than one row"):
        await store.lookup("alice")


async def test_missing_file_is_store_unavailable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    store = store_for(path)  # building the store must not need the file
    with pytest.raises(StoreUnavailable, match="unable to open"):
        await store.lookup("alice@example.org")
    make_sqlite(path, [("alice@example.org", "{PLAIN}a")])
    assert await store.lookup("alice@example.org") is not None


async def test_broken_query_is_store_unavailable(db: Path) -> None:
    store = store_for(db, "SELECT passwd FROM mail_users WHERE username = '%u'")
    with pytest.raises(StoreUnavailable, match="no such column"):
        await store.lookup("alice@example.org")


async def test_read_only(db: Path) -> None:
    store = store_for(db, "DELETE FROM mail_users WHERE username = '%u' RETURNING password")
    with pytest.raises(StoreUnavailable, match="readonly"):
        await store.lookup("alice@example.org")


SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) "
    "SELECT password FROM mail_users WHERE username = '%u' AND (SELECT max(x) FROM c) > 0"
)


async def test_slow_query_is_cut_at_the_timeout(db: Path) -> None:
    store = store_for(db, SLOW, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.lookup("alice@example.org")
    assert time.monotonic() - started < 1.5
    # The progress handler interrupted SQLite itself: the worker thread is free again.
    with trio.fail_after(2):
        assert await store_for(db).lookup("alice@example.org") is not None


async def test_observer_sees_results_and_errors(db: Path) -> None:
    seen: list[tuple[str, str, float]] = []
    store = store_for(db, observe=lambda *a: seen.append(a))
    await store.lookup("alice@example.org")
    await store.lookup("nobody")
    broken = store_for(db / "nope", observe=lambda *a: seen.append(a))
    with pytest.raises(StoreUnavailable):
        await broken.lookup("alice@example.org")
    assert [(s.split(":")[0], r) for s, r, _ in seen] == [
        ("sql", "found"),
        ("sql", "not_found"),
        ("sql", "error"),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


def test_config_file_relative_dsn_and_open(tmp_path: Path) -> None:
    text = (
        '[[store]]\ntype = "sql"\ndriver = "sqlite"\ndsn = "u.sqlite"\n'
        f'password_query = "{QUERY}"\n'
    )
    config = parse_config(text, str(tmp_path / "a.toml"), tmp_path)
    store = open_sql_store(config.stores[0])
    assert store.name == f"sql:sqlite:{tmp_path / 'u.sqlite'}"


@pytest.mark.parametrize("query", ["SELECT password FROM t WHERE u = '%n@x'", "SELECT %z"])
def test_unbindable_query_is_refused_at_open(query: str) -> None:
    config = StoreConfig("sql", driver="sqlite", dsn="/nonexistent", password_query=query)
    with pytest.raises(ConfigError) as caught:
        open_sql_store(config)
    # serve's start path catches StoreFormatError, its reload path ConfigError.
    assert isinstance(caught.value, StoreFormatError)
