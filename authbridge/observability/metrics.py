"""Prometheus metrics, fed by the same verdicts the session replies from.

All metrics live in one :class:`Metrics` object with its own registry, so tests can make
as many as they like. Labels come from closed sets only (mechanism names, results,
store names from the config): never a user or an IP. Names follow the Prometheus
conventions: counters are exposed with ``_total``, durations in ``_seconds``, Unix
times in ``_timestamp_seconds``, and the version in ``authbridge_build_info``.

The metrics every request moves (authentications, their duration, store lookups,
connections, penalties, protocol errors) are plain Python numbers, updated without a
lock or a file write and turned into Prometheus families only when scraped
(:class:`_PlainCounter`, :class:`_PlainHistogram`). A worker of a supervisor copies
what changed into prometheus-client's multiprocess files at the end of each scheduler
batch and once a second (:meth:`Metrics.flush`), so the supervisor's sums see the same
series, names and buckets as a single process serves.
"""

from __future__ import annotations

import bisect
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from authbridge import __version__
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict
from authbridge.observability import after_batch, logs
from authbridge.observability.contained import Streak, report

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

#: The closed set of ``result`` label values of ``authbridge_rehashes_total``.
REHASH_RESULTS = (
    "written",
    "skipped_changed",
    "skipped_mechanism",
    "skipped_unwritable",
    "dropped",
    "failed",
    "deferred",
)
#: Why a call to the penalty's shared state (Redis) failed; "queue_full": a write dropped.
SHARED_STATE_ERRORS = ("timeout", "connection", "refused", "internal", "queue_full")
#: A request's read of the shared state: Redis answered, or local state alone was used.
SHARED_STATE_READS = ("hit", "fallback")
#: When a sprayed account's guess waited: before its check, or its FAIL after it.
SPRAYING_WHEN = ("before", "after")
#: The closed set of ``result`` label values of ``authbridge_app_password_logins_total``
#: (the same as ``authbridge.checks.app_passwords.RESULTS``).
APP_PASSWORD_RESULTS = ("ok", "failed", "main_password_refused")

#: ``[auth_policy]``: the answers of the policy server (``verdict`` label), what failed
#: (``kind`` label: timeout, connect, http, malformed, queue_full) and the bucket bounds
#: of its request latency (Dovecot gives up after 2 s by default).
POLICY_VERDICTS = ("allow", "reject", "delay", "error")
POLICY_ERROR_KINDS = ("timeout", "connect", "http", "malformed", "queue_full")
POLICY_COMMANDS = ("allow", "report")
POLICY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

INTERNAL_ERRORS_HELP = (
    "Unexpected exceptions contained where they happened (one connection, one "
    "scrape, one reload, ...), by where: the daemon kept serving."
)

AUTHENTICATIONS_HELP = "Finished authentication requests by mechanism and result."
DURATION_HELP = (
    "Time from complete credentials to the verdict: penalty included, failure delay not."
)
LOOKUP_HELP = "User store lookups by store and result."
LOG_DROPPED = "authbridge_log_lines_dropped"
LOG_DROPPED_HELP = (
    "Log lines dropped because the log stream did not take them in time (a full pipe, "
    "a slow journald): serving went on."
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


class _PlainCounter(Collector):
    """A counter that is a plain number: :meth:`inc` costs an addition, a scrape reads it.

    Labelled ones keep one number per label tuple (:meth:`add`), in the order the
    series were first seen, as prometheus-client's children are.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.value = 0.0
        self.values: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def add(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def describe(self) -> Iterable[Any]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Any]:
        if not self.labelnames:
            return [CounterMetricFamily(self.name, self.documentation, value=self.value)]
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        return [family]


class _Buckets:
    """One histogram series: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the bucket "le" that takes it.
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


class _PlainHistogram(Collector):
    """A histogram of plain numbers, exported as prometheus-client's Histogram is."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in (*self.bounds, math.inf)]  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], _Buckets] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *labels: str) -> _Buckets:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Buckets(self.bounds)
        return series

    def describe(self) -> Iterable[Any]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Any]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self.series.items()):
            counts, total = list(series.counts), series.sum
            cumulative, acc = [], 0.0
            for le, count in zip(self._le, counts, strict=True):
                acc += count
                cumulative.append((le, acc))
            family.add_metric(labels, cumulative, sum_value=total)
        return [family]


_POLICY_REASONS = (
    Reason.POLICY,
    Reason.NETWORK_DENIED,
    Reason.PLAINTEXT_INSECURE,
    Reason.POLICY_SERVER,
)


def result_label(verdict: Verdict) -> str:
    """The ``result`` label (and log field) of a finished request."""
    if verdict.outcome is Outcome.OK:
        return "ok"
    if verdict.outcome is Outcome.TEMPFAIL:
        return "tempfail"
    if verdict.reason in _POLICY_REASONS:
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
        self._dirty = False
        r = self.registry
        # The per-request metrics: plain numbers (see the module's docstring). A single
        # process exports them from its registry; a worker's go to its mirrors below.
        plain = None if self.multiprocess else r
        self.authentications = _PlainCounter(
            "authbridge_authentications",
            AUTHENTICATIONS_HELP,
            ("mechanism", "result"),
            registry=plain,
        )
        self.duration = _PlainHistogram(
            "authbridge_authentication_duration_seconds",
            DURATION_HELP,
            ("mechanism",),
            DURATION_BUCKETS,
            registry=plain,
        )
        self.lookup_duration = _PlainHistogram(
            "authbridge_store_lookup_duration_seconds",
            LOOKUP_HELP,
            ("store", "result"),
            LOOKUP_BUCKETS,
            registry=plain,
        )
        self.connections_active = Gauge(
            "authbridge_connections_active",
            "Client connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = _PlainCounter(
            "authbridge_connections", "Client connections accepted.", registry=plain
        )
        self.protocol_errors = _PlainCounter(
            "authbridge_protocol_errors",
            "Connections closed for a protocol violation.",
            registry=plain,
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
        self.penalties = _PlainCounter(
            "authbridge_penalties", "Requests held back by the per-IP penalty.", registry=plain
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
        self.rehashes = Counter(
            "authbridge_rehashes",
            "Weak stored passwords met by a successful login ([rehash]), by what became "
            "of the new hash.",
            ["result"],
            registry=r,
        )
        self._rehash_children = {
            result: self.rehashes.labels(result=result) for result in REHASH_RESULTS
        }
        self._fleet_metrics(r)
        self._policy_metrics(r)
        self.app_password_logins = Counter(
            "authbridge_app_password_logins",
            "PLAIN/LOGIN requests that met app passwords, by result: ok (an app password "
            "logged in), failed (none of the user's usable ones matched), "
            "main_password_refused (require_app_password_for).",
            ["result"],
            registry=r,
        )
        self._app_password_children = {
            result: self.app_password_logins.labels(result=result)
            for result in APP_PASSWORD_RESULTS
        }
        self.last_reload = Gauge(
            "authbridge_store_last_reload_success_timestamp_seconds",
            "Unix time of the last successful store load.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stores_unavailable = Gauge(
            "authbridge_store_unavailable",
            "1 while a store's file is missing or unreadable (the last good copy serves).",
            ["store"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.invalid_entries = Gauge(
            "authbridge_store_invalid_entries",
            "Entries the last load of a store file found unusable (file:line in the log).",
            ["store"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.hash_queue = Gauge(
            "authbridge_hash_queue_depth",
            "Password verifications waiting for or running in the worker pool.",
            registry=r,
            multiprocess_mode="livesum",
        )
        if plain is not None:
            r.register(_DroppedLinesCollector())
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
            self._mirrors = _Mirrors(self, r)
            after_batch.at_batch_end(self.flush)
        else:
            r.register(_CacheCollector(lambda: self._cache_source(), self.internal_error))

    def _fleet_metrics(self, r: CollectorRegistry) -> None:
        """The penalty's shared state and the spraying defence (issue 18)."""
        self.shared_state_errors = Counter(
            "authbridge_shared_state_errors",
            "Failed calls to the penalty's shared state (Redis), by kind; requests "
            "went on with this process's state.",
            ["kind"],
            registry=r,
        )
        self.shared_state_reads = Counter(
            "authbridge_shared_state_reads",
            "Requests' reads of the shared state: hit (Redis answered) or fallback "
            "(local state only: Redis away or failing).",
            ["result"],
            registry=r,
        )
        self.shared_state_outage = Gauge(
            "authbridge_shared_state_outage",
            "1 while the penalty's shared state (Redis) is away and this instance serves "
            "on local state; 0 otherwise (also with the local backend).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.spraying_delays = Counter(
            "authbridge_spraying_delays",
            "Guesses at a sprayed account that waited, by when (before the check, or "
            "the FAIL after it).",
            ["when"],
            registry=r,
        )
        self.spraying_delay_seconds = Counter(
            "authbridge_spraying_delay_seconds",
            "Seconds of spraying delay imposed.",
            registry=r,
        )
        for kind in SHARED_STATE_ERRORS:
            self.shared_state_errors.labels(kind=kind)
        for result in SHARED_STATE_READS:
            self.shared_state_reads.labels(result=result)
        for when in SPRAYING_WHEN:
            self.spraying_delays.labels(when=when)

    def shared_error(self, kind: str) -> None:
        self.shared_state_errors.labels(kind=kind).inc()

    def shared_read(self, result: str) -> None:
        self.shared_state_reads.labels(result=result).inc()

    def shared_up(self, up: bool) -> None:
        self.shared_state_outage.set(0 if up else 1)

    def sprayed(self, when: str, seconds: float) -> None:
        self.spraying_delays.labels(when=when).inc()
        self.spraying_delay_seconds.inc(seconds)

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
        self._dirty = True
        self.flush()
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

    def flush(self) -> None:
        """A worker: what changed since the last flush into the shared files (else a no-op).

        Runs at the end of every scheduler batch (registered with after_batch) and from
        :meth:`sample`; costs a comparison when nothing was counted.
        """
        if self.multiprocess:
            self._mirrors.flush()

    def prime(self, mechanisms: Iterable[str]) -> None:
        """Create every (mechanism, result) series at 0 so rates work from the start."""
        for mech in mechanisms:
            for result in RESULTS:
                self.authentications.add((mech, result), 0.0)
            self.duration.labels(mech)
        self._dirty = True

    def prime_stores(self, stores: Iterable[str]) -> None:
        """Create every (store, result) lookup series, as :meth:`prime` does."""
        for store in stores:
            self.stores_unavailable.labels(store)
            for result in LOOKUP_RESULTS:
                self.lookup_duration.labels(store, result)
        self._dirty = True

    def finished(self, info: RequestInfo, verdict: Verdict, duration: float) -> None:
        mechanism = info.mechanism
        self.authentications.add((mechanism, result_label(verdict)))
        series = self.duration.series.get((mechanism,))
        if series is None:
            series = self.duration.labels(mechanism)
        series.observe(duration)
        self._dirty = True

    def aborted(self, info: RequestInfo) -> None:
        self.authentications.add((info.mechanism, "aborted"))
        self._dirty = True

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())

    def rehashed(self, result: str) -> None:
        """Count one rehash attempt by ``result`` (one of :data:`REHASH_RESULTS`)."""
        self._rehash_children[result].inc()
        self._dirty = True

    def _policy_metrics(self, r: CollectorRegistry) -> None:
        """``[auth_policy]``'s metrics, every label value primed at 0."""
        self.policy_verdicts = Counter(
            "authbridge_policy_server_verdicts",
            "Answers of the auth-policy server to allow checks, by verdict (error: no "
            "usable answer; reject_on_fail decides).",
            ["verdict"],
            registry=r,
        )
        self.policy_duration = Histogram(
            "authbridge_policy_server_request_duration_seconds",
            "Time of auth-policy server requests, by command (allow, report).",
            ["command"],
            buckets=POLICY_BUCKETS,
            registry=r,
        )
        self.policy_errors = Counter(
            "authbridge_policy_server_errors",
            "Auth-policy server requests that failed, by command and kind.",
            ["command", "kind"],
            registry=r,
        )
        for verdict in POLICY_VERDICTS:
            self.policy_verdicts.labels(verdict=verdict)
        for command in POLICY_COMMANDS:
            self.policy_duration.labels(command=command)
            for kind in POLICY_ERROR_KINDS:
                self.policy_errors.labels(command=command, kind=kind)

    def policy_verdict(self, verdict: str) -> None:
        """Count one allow answer (one of :data:`POLICY_VERDICTS`)."""
        self.policy_verdicts.labels(verdict=verdict).inc()

    def policy_request(self, command: str, seconds: float) -> None:
        self.policy_duration.labels(command=command).observe(seconds)

    def policy_error(self, command: str, kind: str) -> None:
        self.policy_errors.labels(command=command, kind=kind).inc()

    def app_password_login(self, result: str) -> None:
        """Count one app password outcome (one of :data:`APP_PASSWORD_RESULTS`)."""
        self._app_password_children[result].inc()
        self._dirty = True

    def store_unavailable(self, store: str, unavailable: bool) -> None:
        """Flag (or clear) a store whose file is gone or unreadable."""
        self.stores_unavailable.labels(store).set(1 if unavailable else 0)

    def store_invalid_entries(self, store: str, count: int) -> None:
        """How many entries the last successful load of ``store`` found unusable."""
        self.invalid_entries.labels(store).set(count)

    def observe_lookup(self, store: str, result: str, seconds: float) -> None:
        """One store lookup; ``result`` is one of :data:`LOOKUP_RESULTS`.

        The authenticator calls this (as its ``on_lookup`` hook) around every
        ``store.lookup()``.
        """
        series = self.lookup_duration.series.get((store, result))
        if series is None:
            if result not in LOOKUP_RESULTS:
                raise ValueError(f"lookup result {result!r} is not one of {LOOKUP_RESULTS}")
            series = self.lookup_duration.labels(store, result)
        series.observe(seconds)
        self._dirty = True


class _DroppedLinesCollector(Collector):
    """``authbridge_log_lines_dropped_total``: read from the log sink at scrape time."""

    def describe(self) -> Iterable[Any]:
        return self.collect()

    def collect(self) -> Iterable[Any]:
        return [CounterMetricFamily(LOG_DROPPED, LOG_DROPPED_HELP, value=logs.dropped_lines())]


class _Mirrors:
    """A worker's per-request metrics as prometheus-client objects backed by its files.

    The plain numbers stay the hot path; :meth:`flush` adds what each series gained
    since the last flush to its mirror (counters by ``inc``, histogram buckets and sum
    to the values ``observe`` would have moved: prometheus-client keeps the buckets of
    a histogram uncumulated and cumulates them when the supervisor reads the files).
    """

    def __init__(self, metrics: Metrics, registry: CollectorRegistry) -> None:
        self._metrics = metrics
        r = registry
        self.authentications = Counter(
            "authbridge_authentications",
            AUTHENTICATIONS_HELP,
            ["mechanism", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "authbridge_authentication_duration_seconds",
            DURATION_HELP,
            ["mechanism"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lookup_duration = Histogram(
            "authbridge_store_lookup_duration_seconds",
            LOOKUP_HELP,
            ["store", "result"],
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        m = metrics
        self._counters = [
            (m.connections, Counter(m.connections.name, m.connections.documentation, registry=r)),
            (
                m.protocol_errors,
                Counter(m.protocol_errors.name, m.protocol_errors.documentation, registry=r),
            ),
            (m.penalties, Counter(m.penalties.name, m.penalties.documentation, registry=r)),
        ]
        self._counted = [0.0] * len(self._counters)
        self.dropped = Counter(LOG_DROPPED, LOG_DROPPED_HELP, registry=r)
        self._dropped_seen = 0
        self._auth_seen: dict[tuple[str, ...], float] = {}
        self._histograms_seen: dict[tuple[str, tuple[str, ...]], tuple[list[int], float]] = {}

    def flush(self) -> None:
        m = self._metrics
        for i, (plain, mirror) in enumerate(self._counters):
            if plain.value != self._counted[i]:
                mirror.inc(plain.value - self._counted[i])
                self._counted[i] = plain.value
        dropped = logs.dropped_lines()
        if dropped > self._dropped_seen:
            self.dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        if not m._dirty:
            return
        m._dirty = False
        seen = self._auth_seen
        for labels, value in list(m.authentications.values.items()):
            before = seen.get(labels)
            if before is None or value != before:
                self.authentications.labels(*labels).inc(value - (before or 0.0))
                seen[labels] = value
        self._histogram(m.duration, self.duration)
        self._histogram(m.lookup_duration, self.lookup_duration)

    def _histogram(self, plain: _PlainHistogram, mirror: Histogram) -> None:
        for labels, series in list(plain.series.items()):
            key = (plain.name, labels)
            before = self._histograms_seen.get(key)
            if before is not None and before[1] == series.sum and before[0] == series.counts:
                continue
            counts = list(series.counts)
            old_counts, old_sum = before if before is not None else ([0] * len(counts), 0.0)
            child = mirror.labels(*labels)
            for i, (now, then) in enumerate(zip(counts, old_counts, strict=True)):
                if now != then:
                    child._buckets[i].inc(now - then)
            if series.sum != old_sum:
                child._sum.inc(series.sum - old_sum)
            self._histograms_seen[key] = (counts, series.sum)


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
        dropped = logs.dropped_lines()  # the supervisor's own log lines
        dropped_merged = False
        for family in self._read_files():
            if family.name == "authbridge_internal_errors":
                family.samples = _add_counts(family.samples, own)
                merged = True
            elif family.name == LOG_DROPPED:
                family.samples = [
                    s._replace(value=s.value + dropped) if s.name.endswith("_total") else s
                    for s in family.samples
                ]
                dropped_merged = True
            yield family
        if not dropped_merged:
            yield CounterMetricFamily(LOG_DROPPED, LOG_DROPPED_HELP, value=dropped)
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


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 host in brackets (what ``--metrics-listen`` takes back)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        #: ``HOST:PORT`` as bound (``[V6]:PORT``; the kernel's port when 0 was asked for),
        #: for the log line: ``:9723`` in the config says nothing of which interface.
        self.bound = host_port(*self.address)
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
