"""Prometheus metrics, fed by the same verdicts the session replies from.

All metrics live in one :class:`Metrics` object with its own registry, so tests can make
as many as they like. Labels come from closed sets only (mechanism names, results,
store names from the config): never a user or an IP. Names follow the Prometheus
conventions: counters are exposed with ``_total``, durations in ``_seconds``, Unix
times in ``_timestamp_seconds``, and the version in ``authbridge_build_info``.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from authbridge import __version__
from authbridge.contained import Streak, report
from authbridge.session import RequestInfo
from authbridge.verdict import Outcome, Reason, Verdict

# ``*_created`` series double every counter and no dashboard or alert reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: The closed set of ``result`` label values of ``authbridge_authentications_total``.
RESULTS = ("ok", "fail", "tempfail", "aborted", "protocol_error", "rejected_policy")

#: The closed set of ``where`` label values of ``authbridge_internal_errors_total``.
INTERNAL_ERROR_PLACES = (
    "connection",
    "check",
    "bookkeeping",
    "metrics_http",
    "reload",
    "store",
    "worker",
)

INTERNAL_ERRORS_HELP = (
    "Unexpected exceptions contained where they happened (one connection, one "
    "scrape, one reload, ...), by where: the daemon kept serving."
)

#: The closed set of ``result`` label values of the store lookup histogram.
LOOKUP_RESULTS = ("found", "not_found", "error")

#: Buckets reach past the worst case the server produces on purpose: penalty (capped at
#: 6 s by default) plus a slow hash, below Postfix's 10 s timeout; the check timeout is 8 s.
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

#: A passwd-file lookup is a dict access; a database store would be milliseconds.
LOOKUP_BUCKETS = (
    0.00001,
    0.00005,
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)


def result_label(verdict: Verdict) -> str:
    """The ``result`` label (and log field) of a finished request."""
    if verdict.outcome is Outcome.OK:
        return "ok"
    if verdict.outcome is Outcome.TEMPFAIL:
        return "tempfail"
    if verdict.reason in (Reason.POLICY, Reason.NETWORK_DENIED):
        return "rejected_policy"
    if verdict.reason is Reason.MALFORMED:
        return "protocol_error"
    return "fail"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process is one of several workers.

    prometheus-client picks file-backed values at import time when
    ``PROMETHEUS_MULTIPROC_DIR`` is set; the supervisor sets it for its workers only.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def guarded(
    source: Callable[[], Any], fallback: Any, count: Callable[[str], None] | None
) -> Callable[[], Any]:
    """``source`` made safe to call from a scrape: ``fallback`` when it raises.

    A watched value is read inside the HTTP thread's scrape (or the worker's sampling
    loop); a callback that raises skips that one value (``fallback``, NaN for a gauge)
    instead of failing the scrape, and is logged and counted (``where=metrics_http``).
    """

    def read() -> Any:
        try:
            return source()
        except Exception as exc:
            report("metrics_http", exc, "metric callback failed; value skipped", count)
            return fallback

    return read


class Metrics:
    """Every metric of one serving process.

    As a worker of a supervisor (``multiprocess``), values live in files the supervisor
    sums at scrape time, so a few things change: gauges say how workers combine
    (``livesum``: a dead worker's connections are gone), values read from callbacks are
    copied into the files by :meth:`sample` once a second, and ``authbridge_ready`` and
    ``authbridge_build_info`` are the supervisor's to export.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess: bool | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None if multiprocess is None else multiprocess
        self._auth_children = {}
        self._duration_children = {}
        self._lookup_children: dict[tuple[str, str], Any] = {}
        r = self.registry
        self.authentications = Counter(
            "authbridge_authentications",
            "Finished authentication requests by mechanism and result.",
            ["mechanism", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "authbridge_authentication_duration_seconds",
            "Time from complete credentials to the verdict: penalty included, failure delay not.",
            ["mechanism"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lookup_duration = Histogram(
            "authbridge_store_lookup_duration_seconds",
            "User store lookups by store and result.",
            ["store", "result"],
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.connections_active = Gauge(
            "authbridge_connections_active",
            "Client connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "authbridge_connections", "Client connections accepted.", registry=r
        )
        self.protocol_errors = Counter(
            "authbridge_protocol_errors",
            "Connections closed for a protocol violation.",
            registry=r,
        )
        self.internal_errors = Counter(
            "authbridge_internal_errors",
            INTERNAL_ERRORS_HELP,
            ["where"],
            registry=r,
        )
        self._internal_children = {
            where: self.internal_errors.labels(where=where) for where in INTERNAL_ERROR_PLACES
        }
        self.penalties = Counter(
            "authbridge_penalties", "Requests held back by the per-IP penalty.", registry=r
        )
        self.delayed_failures = Gauge(
            "authbridge_delayed_failures",
            "FAIL replies waiting for the failure delay.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter(
            "authbridge_store_reloads", "Store (re)loads by result.", ["result"], registry=r
        )
        self.last_reload = Gauge(
            "authbridge_store_last_reload_success_timestamp_seconds",
            "Unix time of the last successful store load.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.hash_queue = Gauge(
            "authbridge_hash_queue_depth",
            "Password verifications waiting for or running in the worker pool.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready: Gauge | None = None
        if not self.multiprocess:
            self.ready = ready_gauge(r)
            build_info(r)
        for result in ("success", "failure"):
            self.reloads.labels(result=result)
        self._cache_source: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self._gauge_sources: list[tuple[Gauge, Callable[[], float]]] = []
        if self.multiprocess:
            self._cache_hits = Counter("authbridge_cache_hits", "Auth cache hits.", registry=r)
            self._cache_misses = Counter(
                "authbridge_cache_misses", "Auth cache misses.", registry=r
            )
            self._cache_entries = Gauge(
                "authbridge_cache_entries",
                "Entries in the auth cache now.",
                registry=r,
                multiprocess_mode="livesum",
            )
            self._cache_seen = (0, 0)
        else:
            r.register(_CacheCollector(lambda: self._cache_source(), self.internal_error))

    def internal_error(self, where: str) -> None:
        """Count one unexpected exception contained at ``where`` (see contained.report)."""
        child = self._internal_children.get(where)
        if child is None:
            raise ValueError(f"where {where!r} is not one of {INTERNAL_ERROR_PLACES}")
        child.inc()

    def watch(self, gauge: Gauge, source: Callable[[], float]) -> None:
        """Report ``source()`` as ``gauge``: read at every scrape, or by :meth:`sample`.

        A source that raises gives NaN for that scrape (or keeps the last sampled
        value in a worker), and is counted.
        """
        if self.multiprocess:
            self._gauge_sources.append((gauge, source))
        else:
            gauge.set_function(guarded(source, math.nan, self.internal_error))

    def sample(self) -> None:
        """Copy callback values into the shared files (workers only; a no-op otherwise).

        Raises what a callback raises; :meth:`sample_forever` contains it.
        """
        if not self.multiprocess:
            return
        for gauge, source in self._gauge_sources:
            gauge.set(source())
        hits, misses, entries = self._cache_source()
        seen_hits, seen_misses = self._cache_seen  # the cache's counters only grow
        self._cache_hits.inc(hits - seen_hits)
        self._cache_misses.inc(misses - seen_misses)
        self._cache_seen = (hits, misses)
        self._cache_entries.set(entries)

    async def sample_forever(self, interval: float = 1.0) -> None:
        """Sample once every ``interval``; a sample that raises is skipped, not fatal."""
        streak = Streak(
            "metrics_http", "metrics sampling failed; the last values stay", self.internal_error
        )
        while True:
            try:
                self.sample()
            except Exception as exc:
                streak.failed(exc)
            else:
                streak.ok()
            await trio.sleep(interval)

    def watch_cache(self, source: Callable[[], tuple[int, int, int]]) -> None:
        """Report (hits, misses, entries) from ``source`` at every scrape."""
        self._cache_source = source

    def watch_ready(self, source: Callable[[], bool]) -> None:
        """Report ``source()`` as ``authbridge_ready`` at every scrape."""
        if self.ready is not None:
            self.ready.set_function(
                guarded(lambda: 1.0 if source() else 0.0, 0.0, self.internal_error)
            )

    # Labelled children are looked up once per (mechanism, result) and kept: labels()
    # costs a lock and a dict walk on every authentication otherwise.
    _auth_children: dict[tuple[str, str], Any]
    _duration_children: dict[str, Any]

    def prime(self, mechanisms: Iterable[str]) -> None:
        """Create every (mechanism, result) series at 0 so rates work from the start."""
        for mech in mechanisms:
            for result in RESULTS:
                self.authentications.labels(mechanism=mech, result=result)
            self.duration.labels(mechanism=mech)

    def prime_stores(self, stores: Iterable[str]) -> None:
        """Create every (store, result) lookup series, as :meth:`prime` does."""
        for store in stores:
            for result in LOOKUP_RESULTS:
                self.lookup_duration.labels(store=store, result=result)

    def finished(self, info: RequestInfo, verdict: Verdict, duration: float) -> None:
        key = (info.mechanism, result_label(verdict))
        counter = self._auth_children.get(key)
        if counter is None:
            counter = self._auth_children[key] = self.authentications.labels(*key)
        counter.inc()
        histogram = self._duration_children.get(info.mechanism)
        if histogram is None:
            histogram = self._duration_children[info.mechanism] = self.duration.labels(
                info.mechanism
            )
        histogram.observe(duration)

    def aborted(self, info: RequestInfo) -> None:
        self.authentications.labels(mechanism=info.mechanism, result="aborted").inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())

    def observe_lookup(self, store: str, result: str, seconds: float) -> None:
        """One store lookup; ``result`` is one of :data:`LOOKUP_RESULTS`.

        The authenticator calls this (as its ``on_lookup`` hook) around every
        ``store.lookup()``.
        """
        child = self._lookup_children.get((store, result))
        if child is None:
            if result not in LOOKUP_RESULTS:
                raise ValueError(f"lookup result {result!r} is not one of {LOOKUP_RESULTS}")
            child = self.lookup_duration.labels(store=store, result=result)
            self._lookup_children[(store, result)] = child
        child.observe(seconds)


def ready_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "authbridge_ready",
        "1 while listeners are bound and stores loaded (what /healthz answers).",
        registry=registry,
    )


def build_info(registry: CollectorRegistry) -> None:
    info = Info("authbridge_build", "authbridge version.", registry=registry)
    info.info({"version": __version__, "python": platform.python_version()})


class _CacheCollector(Collector):
    """Cache counters read from the cache itself at scrape time (no double bookkeeping)."""

    def __init__(
        self,
        source: Callable[[], tuple[int, int, int]],
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._source = source
        self._count = count

    def describe(self) -> Iterable[Any]:
        return self._families(0, 0, 0)

    def collect(self) -> Iterable[Any]:
        try:
            values = self._source()
        except Exception as exc:  # skip the cache series for this scrape, serve the rest
            report("metrics_http", exc, "cache metrics failed; skipped this scrape", self._count)
            return []
        return self._families(*values)

    @staticmethod
    def _families(hits: int, misses: int, entries: int) -> list[Any]:
        return [
            CounterMetricFamily("authbridge_cache_hits", "Auth cache hits.", value=hits),
            CounterMetricFamily("authbridge_cache_misses", "Auth cache misses.", value=misses),
            GaugeMetricFamily(
                "authbridge_cache_entries", "Entries in the auth cache now.", value=entries
            ),
        ]


class SupervisorMetrics:
    """What a supervisor exports: its workers' metrics summed from their files, plus its own.

    prometheus-client's multiprocess collector does the summing (counters and histograms
    add up, gauges combine as each one's ``multiprocess_mode`` says); the supervisor adds
    readiness, the build and how many workers it keeps.
    """

    def __init__(self, path: str) -> None:
        self.registry = CollectorRegistry()
        #: The supervisor's own contained exceptions, added to the workers' at scrape time
        #: (one ``authbridge_internal_errors_total`` family, whoever counted).
        self.own_internal_errors = dict.fromkeys(INTERNAL_ERROR_PLACES, 0)
        self._lock = threading.Lock()
        self.registry.register(_WorkersPlusOwn(path, self._own_internal_counts))
        self.ready = ready_gauge(self.registry)
        build_info(self.registry)
        self.workers = Gauge(
            "authbridge_workers",
            "Serving processes by state (starting, ready).",
            ["state"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "authbridge_worker_restarts",
            "Workers that exited unexpectedly or stopped answering, and were replaced.",
            registry=self.registry,
        )

    def watch_ready(self, source: Callable[[], bool]) -> None:
        self.ready.set_function(guarded(lambda: 1.0 if source() else 0.0, 0.0, self.internal_error))

    def watch_workers(self, state: str, source: Callable[[], float]) -> None:
        """Report ``source()`` as ``authbridge_workers{state}``; NaN if it raises."""
        self.workers.labels(state=state).set_function(
            guarded(source, math.nan, self.internal_error)
        )

    def internal_error(self, where: str) -> None:
        if where not in self.own_internal_errors:
            raise ValueError(f"where {where!r} is not one of {INTERNAL_ERROR_PLACES}")
        with self._lock:
            self.own_internal_errors[where] += 1

    def _own_internal_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.own_internal_errors)


#: Reads of the workers' metrics files before a scrape gives up (see _read_files).
_READ_ATTEMPTS = 5


class _WorkersPlusOwn(Collector):
    """The workers' files summed, with the supervisor's own internal errors added in."""

    def __init__(self, path: str, own: Callable[[], dict[str, int]]) -> None:
        self._files = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        self._own = own

    def _read_files(self) -> list[Any]:
        """The workers' files summed; retried when a new worker's file is caught mid-creation.

        A worker (re)starting creates its file and then sizes it; a scrape between the two
        reads an empty file (``struct.error``). That is not worth a failed scrape: the
        file is complete a moment later.
        """
        for attempt in range(_READ_ATTEMPTS):
            try:
                return list(self._files.collect())  # type: ignore[no-untyped-call]
            except (struct.error, RuntimeError, OSError):
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        return []

    def collect(self) -> Iterable[Any]:
        own = self._own()
        merged = False
        for family in self._read_files():
            if family.name == "authbridge_internal_errors":
                family.samples = _add_counts(family.samples, own)
                merged = True
            yield family
        if not merged:
            family = CounterMetricFamily(
                "authbridge_internal_errors",
                INTERNAL_ERRORS_HELP,
                labels=["where"],
            )
            for where, value in own.items():
                family.add_metric([where], value)
            yield family


def _add_counts(samples: list[Any], own: dict[str, int]) -> list[Any]:
    """``own`` added to the ``_total`` samples of a counter family, by ``where``."""
    left = dict(own)
    out = []
    for sample in samples:
        where = sample.labels.get("where")
        if sample.name.endswith("_total") and where in left:
            sample = sample._replace(value=sample.value + left.pop(where))
        out.append(sample)
    for where, value in left.items():
        out.append(Sample("authbridge_internal_errors_total", {"where": where}, value))
    return out


class Exported(Protocol):
    """What :class:`MetricsHTTP` serves: a registry, a readiness hook, an error count."""

    registry: CollectorRegistry

    def watch_ready(self, source: Callable[[], bool]) -> None: ...

    def internal_error(self, where: str) -> None: ...


class MetricsListenError(Exception):
    """The metrics address is malformed or cannot be bound; the message says which."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT``; no host means loopback."""
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise MetricsListenError(
            f"metrics listen address {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9723"
        )
    return host.strip("[]") or "127.0.0.1", int(port_text)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _ContainedServer(ThreadingWSGIServer):
    """A request that fails outside the app (a broken request, say) ends that request.

    socketserver would print the traceback (message included) to stderr; this logs the
    type and location and counts it, and the server thread goes on.
    """

    count: Callable[[str], None] | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, ConnectionError | TimeoutError):
            return  # the scraper went away: nothing of ours broke
        report("metrics_http", exc, "metrics request failed", self.count)


def _server_class(host: str) -> type[_ContainedServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class _Server(_ContainedServer):
        address_family = family

    return _Server


class MetricsHTTP:
    """``/metrics`` and ``/healthz`` on a background thread.

    prometheus-client's WSGI app renders ``/metrics`` (content negotiation, gzip) and its
    threading WSGI server serves it; only the routing and ``/healthz`` are ours.
    ``/healthz`` answers 200 while ``ready()`` is true, 503 otherwise; the same value is
    exported as ``authbridge_ready`` so an alert can see it too.
    """

    def __init__(self, metrics: Exported, listen: str, ready: Callable[[], bool]) -> None:
        host, port = parse_listen(listen)
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._ready = ready
        self._count = metrics.internal_error
        self._stopping = threading.Event()
        metrics.watch_ready(ready)
        server_class = _server_class(host)
        server_class.count = metrics.internal_error
        try:
            self.server: WSGIServer = make_server(
                host,
                port,
                self._app,
                server_class=server_class,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise MetricsListenError(
                f"cannot serve metrics on {listen}: {exc.strerror or exc}"
            ) from None
        self.address: tuple[str, int] = self.server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="metrics-http")

    def _serve(self) -> None:
        """serve_forever, started again if it ever raises: the thread outlives any error."""
        while not self._stopping.is_set():
            try:
                self.server.serve_forever()
                return  # shutdown() asked for it
            except Exception as exc:
                report(
                    "metrics_http", exc, "metrics server loop failed; restarting it", self._count
                )
                self._stopping.wait(1.0)  # no busy loop if the failure repeats

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Route a request; anything that raises gives this request a 500, nothing more."""
        try:
            return list(self._route(environ, start_response))
        except Exception as exc:
            report("metrics_http", exc, "metrics request failed; answered 500", self._count)
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8")],
                sys.exc_info(),
            )
            return [b"authbridge: internal error, see the log\n"]

    def _route(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/healthz":
            ok = self._ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"ready\n" if ok else b"not ready\n"]
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"authbridge: try /metrics or /healthz\n"]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
