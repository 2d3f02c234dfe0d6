"""The supervisor and its workers: an exception ends neither the supervisor nor serving.

A worker that fails at the top (an exception out of its event loop) logs it once
without its message, counts it under ``where="worker"`` in the shared metrics files,
exits non-zero and is replaced, while the sockets keep serving. An exception in one of
the supervisor's own loops (here the worker health check) is contained there, counted,
and the workers never notice.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.isolation.background import FaultyDaemon, assert_contained_once
from tests.observability.helpers import parse_exposition
from tests.support import wait_for_value


def _value(daemon: FaultyDaemon, name: str, **labels: str) -> float:
    status, text = daemon.scrape()
    assert status == 200, text
    return parse_exposition(text).value(name, **labels)


def _wait_ready_workers(daemon: FaultyDaemon, count: int) -> None:
    wait_for_value(
        lambda: _value(daemon, "authbridge_workers", state="ready"),
        lambda ready: ready == count,
        what=f"{count} ready workers",
        timeout=20,
    )


def test_a_worker_failing_at_the_top_is_counted_and_replaced(tmp_path: Path) -> None:
    with FaultyDaemon(tmp_path / "d", ["worker_usr2"], extra_args=("--workers", "2")) as daemon:
        daemon.wait_event("all workers serving")
        assert daemon.login() == "OK"
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGUSR2)  # forwarded; each worker's handler raises
        failed = daemon.wait_event("serving process failed; exiting for a restart", count=2)
        assert sorted(line["worker"] for line in failed) == [0, 1]  # once per worker
        assert all(line["where"] == "worker" for line in failed)
        assert all(line["error"] == "InjectedFault" for line in failed)
        wait_for_value(
            lambda: _value(daemon, "authbridge_worker_restarts_total"),
            lambda restarts: restarts == 2,
            what="both workers replaced",
            timeout=20,
        )
        _wait_ready_workers(daemon, 2)
        assert daemon.internal_errors("worker") == 2
        assert daemon.login() == "OK"
        assert "hunter2" not in daemon.stderr_text()


def test_a_supervisor_loop_that_raises_goes_on_and_workers_keep_serving(tmp_path: Path) -> None:
    faults = ["supervisor_check_once"]
    with FaultyDaemon(tmp_path / "d", faults, extra_args=("--workers", "2")) as daemon:
        daemon.wait_event("all workers serving")
        assert_contained_once(daemon, "checking on the workers failed; checking again", "worker")
        daemon.wait_internal_errors("worker", 1)
        assert daemon.login() == "OK"
        assert _value(daemon, "authbridge_worker_restarts_total") == 0
        _wait_ready_workers(daemon, 2)
        daemon.wait_event("working again")  # the next check ran and succeeded
