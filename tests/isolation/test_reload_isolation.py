"""The reload path: any exception keeps the last good configuration and stores serving.

SIGHUP, the once-a-second store file check and SIGUSR2 each get an exception that is
not one of the parse errors they already refuse. The daemon must log it once without
its message, count it under ``where="reload"``, keep authenticating with what it had,
and take the next reload as usual.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.isolation.background import USERS, FaultyDaemon, assert_contained_once
from tests.observability.helpers import parse_exposition


def _reloads(daemon: FaultyDaemon, result: str) -> float:
    status, text = daemon.scrape()
    assert status == 200, text
    return parse_exposition(text).value("authbridge_store_reloads_total", result=result)


def _signal(daemon: FaultyDaemon, signum: int) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signum)


def test_a_sighup_that_raises_keeps_the_old_config_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    with FaultyDaemon(tmp_path / "d", ["apply_once"]) as daemon:
        failures = _reloads(daemon, "failure")
        _signal(daemon, signal.SIGHUP)
        assert_contained_once(
            daemon, "reload failed; the previous configuration keeps serving", "reload"
        )
        assert daemon.internal_errors("reload") == 1
        assert _reloads(daemon, "failure") == failures + 1
        assert daemon.login() == "OK"
        daemon.users_path.write_text(USERS + "carol@example.org:{PLAIN}singer\n")
        _signal(daemon, signal.SIGHUP)
        daemon.wait_event("reloaded")
        assert daemon.login("carol@example.org", "singer") == "OK"
        assert daemon.login() == "OK"
        assert daemon.internal_errors("reload") == 1


def test_a_store_file_check_that_raises_keeps_the_last_good_copy(tmp_path: Path) -> None:
    with FaultyDaemon(tmp_path / "d", ["load_marker"]) as daemon:
        carol = "carol@example.org:{PLAIN}singer\n"
        daemon.users_path.write_text(USERS + "#inject-fault\n" + carol)
        line = assert_contained_once(
            daemon, "store reload failed; the last good copy keeps serving", "reload"
        )
        assert line["store"].startswith("passwd-file")
        assert daemon.internal_errors("reload") == 1
        assert daemon.login() == "OK"
        assert daemon.login("carol@example.org", "singer") == "FAIL"  # still the old copy
        daemon.users_path.write_text(USERS + carol)
        daemon.wait_event("store reloaded")
        assert daemon.login("carol@example.org", "singer") == "OK"
        assert daemon.internal_errors("reload") == 1


def test_a_cache_flush_that_raises_is_contained_and_the_next_one_works(tmp_path: Path) -> None:
    with FaultyDaemon(tmp_path / "d", ["flush_once"]) as daemon:
        _signal(daemon, signal.SIGUSR2)
        assert_contained_once(daemon, "cache flush failed; the cache stays", "reload")
        assert daemon.login() == "OK"
        _signal(daemon, signal.SIGUSR2)
        daemon.wait_event("auth cache flushed")
        assert daemon.internal_errors("reload") == 1
        assert daemon.login() == "OK"
