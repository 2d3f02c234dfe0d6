"""password_query translation: variables become placeholders, never text."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from authbridge.passdb.sql_query import QueryError, prepare


@dataclass
class Info:
    service: str = "smtp"
    rip: str | None = "192.0.2.7"
    lip: str | None = "198.51.100.1"


def test_dovecot_quoted_variables_become_bare_placeholders() -> None:
    q = prepare("SELECT password FROM users WHERE userid = '%n' AND domain = '%d'", "qmark")
    assert q.sql == "SELECT password FROM users WHERE userid = ? AND domain = ?"
    assert q.parameters("alice@example.org") == ("alice", "example.org")


def test_unquoted_and_long_names_with_format_style() -> None:
    q = prepare("SELECT 1 WHERE u = %{user} AND s = %s AND r = %{rip} AND l = %l", "format")
    assert q.sql == "SELECT 1 WHERE u = %s AND s = %s AND r = %s AND l = %s"
    assert q.parameters("bob", Info()) == ("bob", "smtp", "192.0.2.7", "198.51.100.1")
    assert q.uses_request


def test_request_values_missing_are_empty() -> None:
    q = prepare("SELECT 1 WHERE r = '%r' AND s = '%s'", "qmark")
    assert q.parameters("bob") == ("", "")
    assert q.parameters("bob", Info(rip=None)) == ("", "smtp")


def test_case_modifiers() -> None:
    q = prepare("SELECT 1 WHERE a = '%Lu' AND b = %Ud", "qmark")
    assert q.parameters("MiXed@Example.ORG") == ("mixed@example.org", "EXAMPLE.ORG")
    assert not q.uses_request


def test_literal_percent() -> None:
    assert prepare("SELECT 1 WHERE a LIKE 'x%%' AND b = %u", "qmark").sql == (
        "SELECT 1 WHERE a LIKE 'x%' AND b = ?"
    )
    # psycopg reads %% as one literal % once parameters are passed.
    assert prepare("SELECT 1 WHERE a LIKE 'x%%' AND b = %u", "format").sql == (
        "SELECT 1 WHERE a LIKE 'x%%' AND b = %s"
    )


def test_doubled_quotes_inside_strings_are_kept() -> None:
    q = prepare("SELECT 'it''s' AS reason, password FROM t WHERE u = '%u'", "qmark")
    assert q.sql == "SELECT 'it''s' AS reason, password FROM t WHERE u = ?"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT 1 WHERE u = '%n@example.org'", "inside a longer quoted string"),
        ("SELECT 1 WHERE u = '%x'", "unknown variable"),
        ("SELECT 1 WHERE u = %{home}", "unknown variable"),
        ("SELECT 1 WHERE u = %", "lone %"),
        ("SELECT 1 WHERE u = %{user", "unterminated"),
        ("SELECT 1 WHERE u = 'abc", "unterminated string"),
        ("SELECT 1 WHERE u = ?", "bare ?"),
    ],
)
def test_queries_that_cannot_be_bound_are_refused(query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        prepare(query, "qmark")


@pytest.mark.parametrize(
    "user",
    ["o'brien", 'say"hi', "back\\slash", "100%u", "x'; DROP TABLE t;--", "a\x00b", "%{rip}"],
)
def test_values_never_reach_the_sql_text(user: str) -> None:
    q = prepare("SELECT password FROM t WHERE u = '%u' AND n = '%n'", "format")
    assert q.sql == "SELECT password FROM t WHERE u = %s AND n = %s"
    assert q.parameters(user)[0] == user
