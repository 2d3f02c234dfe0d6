"""Events of ``logs.get_stdlib_logger``: the structlog API, delivered as stdlib records.

The store loaders and the checks' rarer failures log through it so that ``authbridge
check``, ``doctor`` and ``capabilities`` can still collect or silence their lines by
logger name. Their lines must look like every other event once ``logs.configure`` ran,
and read as ``FILE:LINE: reason`` to a plain ``logging.Handler``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from authbridge.commands import check
from authbridge.observability import logs
from authbridge.passdb.passwd_file import index_passwd_file
from authbridge.passdb.validation import LOGGER as ENTRY_PROBLEMS_LOGGER
from authbridge.passdb.validation import EntryProblem, log_problems
from tests.support import root_logging_restored


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    try:
        with root_logging_restored():
            logs.configure("json", "info", stream)
            yield stream
    finally:
        structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_stdlib_delivered_event_is_the_same_line_as_any_other(
    json_stream: io.StringIO,
) -> None:
    structlog.contextvars.bind_contextvars(worker=2)
    fields = {"where": "users:3", "reason": "r", "user": "u", "password": "hunter2"}
    logs.get_logger("authbridge.same").warning("duplicate user", **fields)
    logs.get_stdlib_logger("authbridge.same").warning("duplicate user", **fields)
    chain, stdlib = _lines(json_stream)
    assert list(stdlib) == list(chain)  # the same keys, in the same order
    assert {k: v for k, v in stdlib.items() if k != "timestamp"} == {
        k: v for k, v in chain.items() if k != "timestamp"
    }
    assert stdlib["password"] == "<redacted>"
    assert stdlib["worker"] == 2 and stdlib["logger"] == "authbridge.same"


def test_levels_and_a_disabled_logger_apply(json_stream: io.StringIO) -> None:
    log = logs.get_stdlib_logger("authbridge.levels")
    log.debug("below the configured level")
    stdlib_logger = logging.getLogger("authbridge.levels")
    stdlib_logger.disabled = True
    try:
        log.warning("switched off by name")
    finally:
        stdlib_logger.disabled = False
    log.info("written")
    assert [line["event"] for line in _lines(json_stream)] == ["written"]


def test_a_plain_handler_reads_file_line_reason_or_event_and_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logs.get_stdlib_logger("authbridge.text")
    with caplog.at_level(logging.INFO, logger="authbridge.text"):
        log.warning("duplicate user", where="users:3", user="u", reason="user 'u' twice")
        log.info("store has invalid entries", store="users", invalid_entries=2)
    first, second = (record.getMessage() for record in caplog.records)
    assert first == "users:3: user 'u' twice"
    assert second == "store has invalid entries store=users invalid_entries=2"
    assert [record.levelname for record in caplog.records] == ["WARNING", "INFO"]


def test_check_collects_duplicates_as_file_line_reason_and_skips_entry_problems() -> None:
    """The collector of ``authbridge check`` and ``doctor`` (``check._Collect``)."""
    collector = check._Collect()
    root = logging.getLogger("authbridge")
    saved = (root.propagate, root.level)
    root.addHandler(collector)
    root.propagate = False
    root.setLevel(logging.WARNING)
    try:
        index_passwd_file(b"u:{PLAIN}a\nu:{PLAIN}b\n", "users")
        log_problems("users", [EntryProblem("users", 2, "listed from the store instead")])
    finally:
        root.removeHandler(collector)
        root.propagate, level = saved
        root.setLevel(level)
    assert collector.messages == ["users:2: user 'u' exists more than once; the first entry wins"]
    assert ENTRY_PROBLEMS_LOGGER.startswith("authbridge.")
