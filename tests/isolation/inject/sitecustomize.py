"""Faults for the isolation tests, installed in a real ``authbridge serve`` process.

Python imports ``sitecustomize`` at start-up from the path; the tests put this
directory first on ``PYTHONPATH`` of the daemon they start (its workers inherit it) and
name the faults in ``AUTHBRIDGE_FAULTS``. Each fault raises an exception whose message
holds :data:`SECRET`, so a test can prove the message never reaches the log. Nothing
here is loaded unless a test asks for it.
"""

from __future__ import annotations

import os
from typing import Any

SECRET = "hunter2-never-logged"
FAULTS = frozenset(f for f in os.environ.get("AUTHBRIDGE_FAULTS", "").split(",") if f)
IN_WORKER = "AUTHBRIDGE_WORKER" in os.environ


class InjectedFault(RuntimeError):
    """The exception every fault raises (its message carries the secret)."""


def _boom() -> InjectedFault:
    return InjectedFault(f"injected fault; password={SECRET}")


def _once(original: Any) -> Any:
    """``original`` wrapped to raise the first time it is called, then behave."""
    state = {"raised": False}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not state["raised"]:
            state["raised"] = True
            raise _boom()
        return original(*args, **kwargs)

    return wrapper


def _install() -> None:
    if not FAULTS:
        return
    if "scrape_once" in FAULTS:
        from prometheus_client.registry import Collector

        from authbridge.observability import metrics

        class FailsOnce(Collector):
            def __init__(self) -> None:
                self.calls = 0

            def collect(self) -> Any:
                self.calls += 1
                if self.calls == 1:
                    raise _boom()
                return []

        original_init = metrics.Metrics.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.registry.register(FailsOnce())

        metrics.Metrics.__init__ = init  # type: ignore[method-assign]
    if "cache_len" in FAULTS:
        from authbridge.checks.cache import AuthCache

        def broken_len(self: Any) -> int:
            raise _boom()

        AuthCache.__len__ = broken_len  # type: ignore[method-assign]
    if "apply_once" in FAULTS:
        from authbridge.daemon.server import AuthServer

        AuthServer.apply_config = _once(AuthServer.apply_config)  # type: ignore[method-assign]
    if "flush_once" in FAULTS:
        from authbridge.checks.cache import AuthCache

        AuthCache.flush = _once(AuthCache.flush)  # type: ignore[method-assign]
    if "load_marker" in FAULTS:
        from authbridge.passdb.passwd_file import PasswdFileStore

        original_load = PasswdFileStore.load

        def load(self: Any) -> int:
            if b"#inject-fault" in self.path.read_bytes():
                raise _boom()
            return original_load(self)

        PasswdFileStore.load = load  # type: ignore[method-assign]
    if "sql_param" in FAULTS:
        from authbridge.passdb.sql_sqlite import SqliteBackend

        original_query = SqliteBackend.query

        def query(self: Any, sql: str, params: tuple[str, ...], deadline: float) -> Any:
            if any("inject-fault" in p for p in params):
                raise _boom()
            return original_query(self, sql, params, deadline)

        SqliteBackend.query = query  # type: ignore[method-assign]
    if "worker_usr2" in FAULTS and IN_WORKER:
        from authbridge.commands.serve import Daemon

        def crash(self: Any) -> None:
            raise _boom()

        Daemon._flush_cache = crash  # type: ignore[method-assign]
    if "supervisor_check_once" in FAULTS and not IN_WORKER:
        from authbridge.daemon.supervisor import Supervisor

        Supervisor._check_workers = _once(Supervisor._check_workers)  # type: ignore[method-assign]


_install()
