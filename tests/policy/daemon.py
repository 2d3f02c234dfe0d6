"""Looking at a running authbridge from outside: its metrics, threads and limits."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_tcp_port
from tests.support.authbridge_proc import AuthbridgeServer


def metrics_args() -> tuple[list[str], str]:
    """``--metrics-listen`` arguments on a free port, and the /metrics URL."""
    address = f"127.0.0.1:{free_tcp_port()}"
    return ["--metrics-listen", address], f"http://{address}/metrics"


def wait_for_metrics(url: str, timeout: float = 10.0) -> None:
    """The UNIX socket accepts (kernel backlog) before /metrics is served: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape_text(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name plus labels, e.g. ``authbridge_cache_hits_total``."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape_text(url)):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pid_of(server: AuthbridgeServer) -> int:
    assert server.proc is not None
    return server.proc.pid


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError(f"no Threads: line for pid {pid}")


def open_files_soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open files limit for pid {pid}")
