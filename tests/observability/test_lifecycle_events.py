"""The daemon's life in its JSON log: start, stores, listener, reload, shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.observability.conftest import _start
from tests.observability.helpers import http_get, json_events, wait_for
from tests.support import runtime_dir


def test_lifecycle_events_in_order(obs_dir: Path, users_text: str) -> None:
    base = runtime_dir(obs_dir, "lifecycle")
    observed = _start(base, users_text, ["--dovecot-compat", "--log-format", "json"])
    try:
        proc = observed.server.proc
        assert proc is not None
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: '"event": "reloaded"' in observed.log())
        assert http_get(observed.metrics_port, "/healthz")[0] == 200
    finally:
        observed.server.stop()
    events = json_events(observed.log())
    names = [e["event"] for e in events]
    wanted = [
        "starting",
        "store loaded",
        "metrics listening",
        "listener bound",
        "signal received",
        "reloaded",
        "signal received",
        "shutting down",
        "stopped",
    ]
    position = -1
    for name in wanted:  # each one, in this order (ValueError names a missing one)
        position = names.index(name, position + 1)
    assert all({"timestamp", "level", "logger", "event"} <= set(e) for e in events)
    start = events[names.index("starting")]
    assert start["version"] and start["pid"] == proc.pid
    bound = events[names.index("listener bound")]
    assert bound["listener"] == f"unix:{observed.socket_path}"
    signals = [e["signal"] for e in events if e["event"] == "signal received"]
    assert signals == ["SIGHUP", "SIGTERM"]
