"""Prometheus metrics, fed by the same verdicts the session replies from.

All metrics live in one :class:`Metrics` object with its own registry, so tests can make
as many as they like. Labels come from closed sets only (mechanism names, results,
store names from the config): never a user or an IP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from authbridge import __version__
from authbridge.session import RequestInfo
from authbridge.verdict import Outcome, Reason, Verdict

#: The closed set of ``result`` label values.
RESULTS = ("ok", "fail", "tempfail", "aborted", "protocol_error", "rejected_policy")

#: Buckets reach past the failure delay (2 s) plus the penalty cap (< 10 s).
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
)


def result_label(verdict: Verdict) -> str:
    if verdict.outcome is Outcome.OK:
        return "ok"
    if verdict.outcome is Outcome.TEMPFAIL:
        return "tempfail"
    if verdict.reason is Reason.POLICY:
        return "rejected_policy"
    if verdict.reason is Reason.MALFORMED:
        return "protocol_error"
    return "fail"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.authentications = Counter(
            "authbridge_authentications",
            "Finished authentication requests.",
            ["mechanism", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "authbridge_authentication_duration_seconds",
            "Time from AUTH to the verdict, failure delay not included.",
            ["mechanism"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lookup_duration = Histogram(
            "authbridge_store_lookup_duration_seconds",
            "User store lookups.",
            ["store", "result"],
            registry=r,
        )
        self.cache_hits = Counter("authbridge_cache_hits", "Auth cache hits.", registry=r)
        self.cache_misses = Counter("authbridge_cache_misses", "Auth cache misses.", registry=r)
        self.cache_entries = Gauge(
            "authbridge_cache_entries", "Entries in the auth cache.", registry=r
        )
        self.connections_active = Gauge(
            "authbridge_connections_active", "Client connections open now.", registry=r
        )
        self.connections = Counter(
            "authbridge_connections", "Client connections accepted.", registry=r
        )
        self.protocol_errors = Counter(
            "authbridge_protocol_errors",
            "Connections closed for a protocol violation.",
            registry=r,
        )
        self.penalties = Counter(
            "authbridge_penalties", "Requests held back by the per-IP penalty.", registry=r
        )
        self.delayed_failures = Gauge(
            "authbridge_delayed_failures",
            "FAIL replies waiting for the failure delay.",
            registry=r,
        )
        self.reloads = Counter(
            "authbridge_store_reloads", "Store (re)loads.", ["result"], registry=r
        )
        self.last_reload = Gauge(
            "authbridge_store_last_reload_success_timestamp_seconds",
            "Unix time of the last successful store load.",
            registry=r,
        )
        self.hash_queue = Gauge(
            "authbridge_hash_queue_depth",
            "Password verifications waiting for or running in the worker pool.",
            registry=r,
        )
        self.build_info = Info("authbridge_build", "authbridge version.", registry=r)
        self.build_info.info({"version": __version__})
        for result in ("success", "failure"):
            self.reloads.labels(result=result)

    def watch_cache(self, source: Callable[[], tuple[int, int, int]]) -> None:
        """Report (hits, misses, entries) from ``source`` at every scrape."""
        self._cache_source = source

    def prime(self, mechanisms: Iterable[str]) -> None:
        """Create every (mechanism, result) series at 0 so rates work from the start."""
        for mech in mechanisms:
            for result in RESULTS:
                self.authentications.labels(mechanism=mech, result=result)
            self.duration.labels(mechanism=mech)

    def finished(self, info: RequestInfo, verdict: Verdict, duration: float) -> None:
        self.authentications.labels(mechanism=info.mechanism, result=result_label(verdict)).inc()
        self.duration.labels(mechanism=info.mechanism).observe(duration)

    def aborted(self, info: RequestInfo) -> None:
        self.authentications.labels(mechanism=info.mechanism, result="aborted").inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())


class _CacheCollector:
    """Cache counters read from the cache itself at scrape time (no double bookkeeping)."""

    def __init__(self, source: Callable[[], tuple[int, int, int]]) -> None:
        self._source = source

    def describe(self) -> list[Any]:
        return list(self.collect())

    def collect(self) -> Iterable[Any]:
        hits, misses, entries = self._source()
        yield CounterMetricFamily("authbridge_cache_hits", "Auth cache hits.", value=hits)
        yield CounterMetricFamily("authbridge_cache_misses", "Auth cache misses.", value=misses)
        yield GaugeMetricFamily(
            "authbridge_cache_entries", "Entries in the auth cache.", value=entries
        )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsHTTP:
    """``/metrics`` and ``/healthz`` on a background thread (prometheus-client's WSGI app)."""

    def __init__(self, metrics: Metrics, listen: str, ready: Callable[[], bool]) -> None:
        host, _, port = listen.rpartition(":")
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._ready = ready
        self.server: WSGIServer = make_server(
            host.strip("[]") or "127.0.0.1",
            int(port),
            self._app,
            server_class=ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.address = self.server.server_address
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="metrics-http"
        )

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = self._ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"ready\n" if ok else b"not ready\n"]
        result: Iterable[bytes] = self._metrics_app(environ, start_response)
        return result

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
