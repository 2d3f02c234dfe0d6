"""The metrics HTTP thread: an exception in a scrape costs that scrape, nothing more.

A collector or a watched callback that raises, or the server loop itself failing,
must leave ``/metrics`` answering the next scrape and the daemon authenticating; each
such exception is logged once without its message and counted under
``where="metrics_http"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Gauge

from authbridge.observability.metrics import Metrics, MetricsHTTP
from tests.isolation.background import SECRET, FaultyDaemon, assert_contained_once
from tests.observability.helpers import http_get, parse_exposition
from tests.support import wait_for_value


@pytest.fixture
def scrape_fails_once(tmp_path: Path) -> Iterator[FaultyDaemon]:
    with FaultyDaemon(tmp_path / "d", ["scrape_once"]) as daemon:
        yield daemon


def test_a_collector_that_raises_fails_one_scrape_only(scrape_fails_once: FaultyDaemon) -> None:
    daemon = scrape_fails_once
    status, text = daemon.scrape()
    assert status == 500 and SECRET not in text
    assert_contained_once(daemon, "metrics request failed; answered 500", "metrics_http")
    assert daemon.login() == "OK"
    assert daemon.internal_errors("metrics_http") == 1  # this scrape answers 200
    assert http_get(daemon.metrics_port, "/healthz") == (200, "ready\n")


def test_a_watched_value_that_raises_is_skipped_and_the_rest_served(tmp_path: Path) -> None:
    with FaultyDaemon(tmp_path / "d", ["cache_len"]) as daemon:
        assert daemon.login() == "OK"
        # The login is counted just after its reply: wait for the scrape to show it.
        scrape = wait_for_value(
            lambda: parse_exposition(_ok_text(daemon)),
            lambda s: (
                s.value("authbridge_authentications_total", mechanism="PLAIN", result="ok") == 1
            ),
            what="the login in a scrape",
        )
        assert "authbridge_cache_entries" not in scrape.families  # the broken value
        # Each scrape meets the fault once: one line and one count per scrape (the
        # count shows from the next scrape on: the counter is rendered first).
        shown = daemon.wait_internal_errors("metrics_http", 1)
        lines = daemon.matching("cache metrics failed; skipped this scrape")
        scrapes = 1 + int(shown)
        assert len(lines) == scrapes, (shown, lines)
        assert all(line["error"] == "InjectedFault" for line in lines)
        assert SECRET not in daemon.stderr_text()
        assert daemon.login() == "OK"


def _ok_text(daemon: FaultyDaemon) -> str:
    status, text = daemon.scrape()
    assert status == 200, text
    return text


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_raising_gauge_callback_is_nan_and_counted() -> None:
    metrics = Metrics()
    gauge = Gauge("test_broken", "A gauge whose source raises.", registry=metrics.registry)

    def broken() -> float:
        raise RuntimeError(SECRET)

    metrics.watch(gauge, broken)
    value = _value(metrics, "test_broken")
    assert value is not None and math.isnan(value)
    assert _value(metrics, "authbridge_internal_errors_total", where="metrics_http") == 1


def test_the_http_thread_outlives_its_server_loop_raising(monkeypatch: Any) -> None:
    metrics = Metrics()
    http = MetricsHTTP(metrics, "127.0.0.1:0", lambda: True)
    original = http.server.serve_forever
    calls = []

    def fails_first(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(SECRET)
        original(*args, **kwargs)

    monkeypatch.setattr(http.server, "serve_forever", fails_first)
    http.start()
    try:
        port = http.address[1]
        status = wait_for_value(
            lambda: _status_or_none(port), lambda s: s == 200, what="a scrape after the restart"
        )
        assert status == 200 and len(calls) == 2
        assert _value(metrics, "authbridge_internal_errors_total", where="metrics_http") == 1
    finally:
        http.stop()


def _status_or_none(port: int) -> int | None:
    try:
        return http_get(port, "/metrics")[0]
    except OSError:
        return None
