"""Logging: structlog processors configured once, JSON off a TTY, console on one.

Standard-library loggers (``logging.getLogger``) are routed through the same
processors, so every line has one shape whichever API emitted it.

Every line ends in one :class:`_Sink`. While a scheduler batch runs (see
:mod:`authbridge.observability.after_batch`), the lines of the event-loop thread are collected and
handed on together when the batch ends: one string, one ``write``. A stream that is a
real file descriptor (stdout, stderr, a pipe, journald's socket) is written by a thread
of its own, so a full or slow log stream never stops the event loop: what waits for it
is bounded (:data:`MAX_QUEUED`), and lines beyond the bound are dropped and counted
(``authbridge_log_lines_dropped_total``). Any other line logged in a trio event loop
(a supervisor's) takes the same queue; outside one (start-up, command-line tools, tests)
a line is written when it is logged, as before.
"""

from __future__ import annotations

import atexit
import contextvars
import datetime
import json
import logging
import math
import re
import sys
import threading
from json.encoder import encode_basestring_ascii
from typing import Any

import structlog
import trio

from authbridge.observability import userlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


#: Event keys whose value is never logged, whoever passes them: a last line of defence.
SECRET_KEYS = frozenset({"password", "pass", "passwd", "secret", "resp", "credential"})


#: Protocol fragments that carry credentials, wherever they turn up in a message (a
#: malformed client line quoted in an error, say). Tabs may already be "?" there.
_SECRET_TEXT = re.compile(
    r"(?P<keep>\bresp=|\bCONT[\s?]+\d+[\s?]+)(?P<secret>[^\s?\"']+)", re.IGNORECASE
)


def _scrub(text: str) -> str:
    low = text.lower()
    if "resp=" not in low and "cont" not in low:
        return text
    return _SECRET_TEXT.sub(lambda m: m.group("keep") + "<redacted>", text)


def _drop_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: secret keys and credential-shaped text never get out.

    Runs for every line, so the common case (no credential-shaped text anywhere) is
    one look at all the text values together, not one per value.
    """
    texts: list[str] = []
    for key, value in event_dict.items():
        if key in SECRET_KEYS:
            event_dict[key] = "<redacted>"
        elif isinstance(value, str):
            texts.append(value)
    if texts:
        low = "\0".join(texts).lower()
        if "resp=" in low or "cont" in low:
            for key, value in event_dict.items():
                if isinstance(value, str):
                    event_dict[key] = _scrub(value)
    return event_dict


def configure(
    fmt: str = "auto",
    level: str = "info",
    stream: Any = None,
    unknown_users: str = userlog.FINGERPRINT,
) -> None:
    """Set up logging for the whole process; safe to call again.

    ``unknown_users`` says how login names no store recognised appear (see
    :mod:`authbridge.observability.userlog`): as a fingerprint unless the operator asks
    for ``typed``.

    ``auto`` means JSON unless ``stream`` is a terminal: under systemd or in a pipe,
    journald and log shippers get one JSON object a line; a person gets columns.

    Our own events (``get_logger``) go straight from structlog's processors to the
    stream: no ``LogRecord``, handler or formatter per event, which matters on the
    per-authentication path. Standard-library loggers (``logging.getLogger``) pass
    through the same processors in a formatter, so every line has one shape.
    """
    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if fmt == "auto":
        fmt = "console" if tty else "json"
    if fmt not in ("json", "console"):
        raise ValueError(f"log format {fmt!r}: expected auto, json or console")
    userlog.set_unknown_users(unknown_users)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    final: list[Any]
    if fmt == "json":
        final = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Plain tracebacks: fancy formatters print local variables, which may be secrets.
        final = [
            structlog.dev.ConsoleRenderer(
                colors=tty, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    # Nothing rendered shows where a call was made, or from which thread or process:
    # do not collect it for every record (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _sink, _direct
    previous, sink = _sink, _Sink(stream)
    _sink = sink
    if previous is not None:
        previous.close()
    if _batch_depth:
        sink.start_thread()
    handler = _SinkHandler(sink)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # One output end per logger name (structlog's add_logger_name reads it), all
    # writing into the one sink, which keeps the lines of every thread whole.
    writers: dict[str, _SinkWriter] = {}

    def writer(name: str = "", *_args: Any) -> _SinkWriter:
        found = writers.get(name)
        if found is None:
            found = writers[name] = _SinkWriter(sink, name)
        return found

    _direct = _DirectJson(sink) if fmt == "json" else None
    structlog.configure(
        processors=[structlog.stdlib.add_logger_name, *shared, *final],
        logger_factory=writer,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Not cached: a later configure() (tests, a new format) takes effect everywhere.
        cache_logger_on_first_use=False,
    )


#: Characters of log lines waiting for a blocked log stream; beyond it new lines are
#: dropped (and counted) instead of stalling the server or growing without end.
MAX_QUEUED = 1 << 20

#: How long the process waits at exit for queued lines to reach a slow stream.
EXIT_WAIT = 2.0

#: The thread whose lines wait for the end of its scheduler batch, and how many
#: batch instruments are installed in it (see :func:`begin_batching`).
_batch_thread: int | None = None
_batch_depth = 0


def _in_event_loop() -> bool:
    """Whether this thread runs a trio event loop (which a blocking write would stall)."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _real_fd(stream: Any) -> bool:
    """Whether ``stream`` writes to a file descriptor (which can block)."""
    try:
        return isinstance(stream.fileno(), int)
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends
        return False


class _Sink:
    """Where every rendered line goes: batched, queued, written, or dropped and counted.

    The event-loop thread, while it batches, only appends to :attr:`batch`; the batch
    is handed on in one piece by :meth:`flush_batch`. A stream with a file descriptor
    gets a writer thread once batching starts, and from then on every line reaches it
    through a bounded queue: whoever logs never waits for the stream. A stream without
    one (a test's ``StringIO``) is written at once; it cannot block.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.threaded = _real_fd(stream)
        #: Lines of the current scheduler batch (batching thread only).
        self.batch: list[str] = []
        #: The timestamp every directly rendered line of the current batch carries.
        self.stamp: str | None = None
        #: Lines lost: beyond the bound, or refused by the stream.
        self.dropped = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._queue: list[tuple[str, int]] = []
        self._queued = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the logging side

    def write(self, text: str) -> None:
        """One or more whole lines, each ending in a newline."""
        if _batch_thread is not None and threading.get_ident() == _batch_thread:
            self.batch.append(text)
        elif self._thread is not None:
            self._enqueue(text, text.count("\n"))
        elif self.threaded and _in_event_loop():
            # An event loop that does not batch (a supervisor's) must not wait either.
            self.start_thread()
            self._enqueue(text, text.count("\n"))
        else:
            self._write_now(text)

    def timestamp(self) -> str:
        """Now, ISO 8601 UTC; within a batch of the batching thread, once per batch."""
        if _batch_thread is not None and threading.get_ident() == _batch_thread:
            stamp = self.stamp
            if stamp is None:
                stamp = self.stamp = _now()
            return stamp
        return _now()

    def flush_batch(self) -> None:
        """Hand the lines of the batch that just ended on, as one string."""
        lines, self.batch, self.stamp = self.batch, [], None
        if not lines:
            return
        text = "".join(lines)
        if self._thread is not None:
            self._enqueue(text, len(lines))
        elif self.threaded and _batch_depth:
            self.start_thread()
            self._enqueue(text, len(lines))
        else:
            self._write_now(text)

    def _enqueue(self, text: str, lines: int) -> None:
        with self._lock:
            if self._queued and self._queued + len(text) > MAX_QUEUED:
                self.dropped += lines
                return
            self._queue.append((text, lines))
            self._queued += len(text)
            self._ready.notify()

    def _write_now(self, text: str) -> None:
        with self._write_lock:
            self.stream.write(text)
            self.stream.flush()

    # ------------------------------------------------------------ the writer thread

    def start_thread(self) -> None:
        if self._thread is None and self.threaded and not self._closing:
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return
                queue, self._queue, self._queued = self._queue, [], 0
            try:
                self._write_now("".join(text for text, _ in queue))
            except Exception:  # a closed or broken stream: the lines are lost, counted
                with self._lock:
                    self.dropped += sum(lines for _, lines in queue)

    def close(self, wait: float = 0.0) -> None:
        """Hand on what is batched; the writer thread ends once its queue is written."""
        if self.batch:
            self.flush_batch()
        with self._lock:
            self._closing = True
            self._ready.notify()
        if wait and self._thread is not None:
            self._thread.join(wait)


class _SinkWriter:
    """structlog's output end: one rendered line into the sink."""

    def __init__(self, sink: _Sink, name: str) -> None:
        self._sink = sink
        self.name = name  # for add_logger_name

    def msg(self, message: str) -> None:
        self._sink.write(message + "\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _SinkHandler(logging.Handler):
    """Standard-library records, formatted by the same processors, into the sink."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_sink: _Sink | None = None


def begin_batching() -> None:
    """From now on, lines of this thread wait for :func:`end_batch` (an instrument's)."""
    global _batch_thread, _batch_depth
    _batch_thread = threading.get_ident()
    _batch_depth += 1
    if _sink is not None:
        _sink.start_thread()


def end_batch() -> None:
    """A scheduler batch ended: write its lines in one go (or queue them for the writer)."""
    sink = _sink
    if sink is not None and sink.batch:
        sink.flush_batch()


def stop_batching() -> None:
    """The last batch instrument is gone: its lines are handed on, later ones go at once."""
    global _batch_thread, _batch_depth
    _batch_depth = max(0, _batch_depth - 1)
    if not _batch_depth:
        _batch_thread = None
    end_batch()


def dropped_lines() -> int:
    """Log lines this process dropped because the log stream did not keep up."""
    sink = _sink
    return sink.dropped if sink is not None else 0


@atexit.register
def _drain_at_exit() -> None:
    """Queued lines get :data:`EXIT_WAIT` seconds to reach a slow stream, then are lost."""
    global _batch_thread
    _batch_thread = None
    sink = _sink
    if sink is not None:
        sink.close(EXIT_WAIT)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")


_CONTEXT_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX


def _context() -> dict[str, Any]:
    """structlog's context variables, as ``get_contextvars()`` gives them, but cheaply.

    The usual case (none bound, or one: a worker's number) needs no copy of the whole
    context; with more than one, structlog's own function keeps its key order.
    """
    known: dict[str, contextvars.ContextVar[Any]] | None = getattr(
        structlog.contextvars, "_CONTEXT_VARS", None
    )
    if known is None:  # structlog keeps them elsewhere now: ask it
        return structlog.contextvars.get_contextvars()
    found: dict[str, Any] = {}
    for name, var in list(known.items()):
        value = var.get(Ellipsis)
        if value is not Ellipsis:
            found[name[len(_CONTEXT_PREFIX) :]] = value
    if len(found) > 1:
        return structlog.contextvars.get_contextvars()
    return found


#: The fields of the ``authentication`` event, in the order of every line.
AUTH_FIELDS = (
    "cuid",
    "request",
    "mechanism",
    "service",
    "rip",
    "lip",
    "user",
    "result",
    "reason",
    "duration",
)
#: Keys a context variable may not take for the fixed renderer (else the chain's
#: ``setdefault`` and level/timestamp overwrites decide, and the general path runs).
_RESERVED = frozenset(AUTH_FIELDS) | {"event", "logger", "level", "timestamp"} | SECRET_KEYS


class _Fallback(Exception):
    """A value the fixed renderer does not write exactly as the chain would."""


def _number(value: Any) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    raise _Fallback


class _DirectJson:
    """Renders an event exactly as the JSON processor chain does, without the chain.

    The per-authentication event is written for every request; through structlog's
    bound logger and processors it cost more CPU than the credential check on a quiet
    server (each processor is a call on a cold cache). :meth:`emit` builds the same dict
    in the same key order (fields, event, logger, context variables, level, timestamp),
    applies the same redaction and serialises it with the same encoder;
    :meth:`authentication` writes the one fixed shape of the ``authentication`` event
    straight into a string. Tests compare both with the chain line for line.
    """

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def emit(self, logger_name: str, level: str, event: str, fields: dict[str, Any]) -> None:
        event_dict = fields
        event_dict["event"] = event
        event_dict["logger"] = logger_name
        for key, value in _context().items():
            event_dict.setdefault(key, value)
        event_dict["level"] = level
        event_dict["timestamp"] = self._sink.timestamp()
        _drop_secrets(None, level, event_dict)
        self._sink.write(_ENCODER.encode(event_dict) + "\n")

    def authentication(self, logger_name: str, values: tuple[Any, ...]) -> bool:
        """The ``authentication`` event of :data:`AUTH_FIELDS` ``values``, at info level.

        False (nothing written) when the line needs the general path to come out as the
        chain's would: a value that is not a plain int, float or str, text that looks
        like a credential (the scrubber decides), a context variable with a reserved key.
        """
        cuid, request, mechanism, service, rip, lip, user, result, reason, duration = values
        try:
            if type(cuid) is not int or type(request) is not int:
                raise _Fallback
            enc = encode_basestring_ascii  # TypeError for what is not a str
            head = (
                f'{{"cuid": {int.__repr__(cuid)}, "request": {int.__repr__(request)}, '
                f'"mechanism": {enc(mechanism)}, '
                f'"service": {"null" if service is None else enc(service)}, '
                f'"rip": {"null" if rip is None else enc(rip)}, '
                f'"lip": {"null" if lip is None else enc(lip)}, '
                f'"user": {"null" if user is None else enc(user)}, '
                f'"result": {enc(result)}, "reason": {enc(reason)}, '
                f'"duration": {_number(duration)}, "event": "authentication", '
                f'"logger": {enc(logger_name)}'
            )
            # The strings are all str now (_text checked): the scrubber's look of
            # _drop_secrets, over the same values.
            texts = [t for t in (mechanism, service, rip, lip, user, result, reason) if t]
            texts.append(logger_name)
            context = _context()
            for key, value in context.items():
                if key in _RESERVED:
                    raise _Fallback
                if isinstance(value, str):
                    texts.append(value)
                head += f", {encode_basestring_ascii(key)}: {_ENCODER.encode(value)}"
        except (_Fallback, TypeError):
            return False
        low = "\0".join(texts).lower()
        if "resp=" in low or "cont" in low:
            return False
        line = f'{head}, "level": "info", "timestamp": "{self._sink.timestamp()}"}}\n'
        self._sink.write(line)
        return True


def _json_fallback(value: Any) -> Any:
    """What structlog's JSONRenderer does with a value JSON cannot hold."""
    structlog_repr = getattr(value, "__structlog__", None)
    return structlog_repr() if structlog_repr is not None else repr(value)


#: What ``json.dumps(..., default=_json_fallback)`` builds on every call, built once.
_ENCODER = json.JSONEncoder(default=_json_fallback)

#: Set by :func:`configure` when lines are JSON; the console format keeps the chain.
_direct: _DirectJson | None = None


def request_event(logger: Any, logger_name: str, level: str, event: str, **fields: Any) -> None:
    """An event of ``logger`` (named ``logger_name``) on the per-request path.

    The caller checks that ``level`` is enabled. JSON lines skip the processor chain
    (see :class:`_DirectJson`); the console format goes through ``logger`` as usual.
    """
    if _direct is not None:
        _direct.emit(logger_name, level, event, fields)
    else:
        getattr(logger, level)(event, **fields)


def authentication_event(logger: Any, logger_name: str, *values: Any) -> None:
    """The ``authentication`` event (info level, enabled: the caller checks).

    ``values`` are those of :data:`AUTH_FIELDS`, in that order. JSON lines come from
    the fixed renderer (:meth:`_DirectJson.authentication`) when it can write them
    exactly; otherwise, and for the console format, from the same path as any event.
    """
    direct = _direct
    if direct is not None and direct.authentication(logger_name, values):
        return
    request_event(
        logger, logger_name, "info", "authentication", **dict(zip(AUTH_FIELDS, values, strict=True))
    )


def get_logger(name: str) -> Any:
    """A logger whose lines carry ``logger=name``."""
    return structlog.get_logger(name)


#: Keys every event gets from the processors; not part of what it says (see :class:`_Event`).
_META_KEYS = frozenset({"logger", "level", "timestamp"})


class _Event(dict[str, Any]):
    """An event handed to a standard-library logger as its message.

    :class:`structlog.stdlib.ProcessorFormatter` (our handler's formatter) renders the
    dict like any other event. Any other handler reads ``record.getMessage()``, which is
    ``str()`` of this: ``authbridge check``'s collector, pytest's ``caplog``, Python's
    last-resort handler before :func:`configure`. An event about a place in a file
    (``where="users:3"``, with its text in ``reason``) reads ``users:3: <reason>``, the
    ``FILE:LINE: reason`` form those tools list; any other reads
    ``<event> key=value ...``.
    """

    __slots__ = ()

    def __str__(self) -> str:
        where, reason = self.get("where"), self.get("reason")
        if where is not None and reason is not None:
            return f"{where}: {reason}"
        rest = " ".join(
            f"{key}={value}"
            for key, value in self.items()
            if key != "event" and key not in _META_KEYS
        )
        event = str(self.get("event", ""))
        return f"{event} {rest}" if rest else event


def _to_record(
    logger: logging.Logger, method: str, event_dict: dict[str, Any]
) -> tuple[tuple[_Event], dict[str, Any]]:
    """The arguments of the standard-library call: what ``wrap_for_formatter`` does,
    with the event readable as text too (:class:`_Event`)."""
    return (_Event(event_dict),), {"extra": {"_logger": logger, "_name": method}}


#: The processors of :func:`get_stdlib_logger`: those :func:`configure` gives every
#: other event, in the same order, so its lines have the same keys in the same order.
_STDLIB_CHAIN: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_logger_name,
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_secrets,
    _to_record,
]


def get_stdlib_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The same API as :func:`get_logger` (event + key=values), delivered as a record of
    the standard-library logger ``name``.

    For code outside the per-request path whose lines someone collects or silences by
    logger name: the store loaders (``authbridge check`` and ``doctor`` gather their
    warnings with a ``logging.Handler``; ``capabilities`` switches a logger off) and the
    checks' rarer failures. Levels, ``disabled`` and handlers of the standard-library
    logger apply; once :func:`configure` ran, the line is rendered like every other.
    """
    return structlog.stdlib.BoundLogger(logging.getLogger(name), _STDLIB_CHAIN, {})
