"""Logging: structlog processors configured once, JSON off a TTY, console on one.

Standard-library loggers (``logging.getLogger``) are routed through the same
processors, so every line has one shape whichever API emitted it.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import structlog

from authbridge import userlog

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
    :mod:`authbridge.userlog`): as a fingerprint unless the operator asks for ``typed``.

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
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # One writer for the stream; the handler's lock also serialises its lines with the
    # standard-library ones (a worker thread may log while the event loop does).
    writers: dict[str, _LockedWriter] = {}

    def writer(name: str = "", *_args: Any) -> _LockedWriter:
        found = writers.get(name)
        if found is None:
            found = writers[name] = _LockedWriter(stream, handler, name)
        return found

    global _direct
    _direct = _DirectJson(writer) if fmt == "json" else None
    structlog.configure(
        processors=[structlog.stdlib.add_logger_name, *shared, *final],
        logger_factory=writer,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Not cached: a later configure() (tests, a new format) takes effect everywhere.
        cache_logger_on_first_use=False,
    )


class _LockedWriter:
    """structlog's output end: one rendered line, written under the handler's lock."""

    def __init__(self, stream: Any, handler: logging.Handler, name: str) -> None:
        self._stream = stream
        self._handler = handler
        self.name = name  # for add_logger_name

    def msg(self, message: str) -> None:
        self._handler.acquire()
        try:
            self._stream.write(message + "\n")
            self._stream.flush()
        finally:
            self._handler.release()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _DirectJson:
    """Renders an event exactly as the JSON processor chain does, without the chain.

    The per-authentication event is written for every request; through structlog's
    bound logger and processors it cost more CPU than the credential check on a quiet
    server (each processor is a call on a cold cache). This builds the same dict in the
    same key order (fields, event, logger, context variables, level, timestamp), applies
    the same redaction and serialises it with the same ``json.dumps``; a test compares
    both renderings line for line.
    """

    def __init__(self, writer: Callable[[str], _LockedWriter]) -> None:
        self._writer = writer

    def emit(self, logger_name: str, level: str, event: str, fields: dict[str, Any]) -> None:
        event_dict = fields
        event_dict["event"] = event
        event_dict["logger"] = logger_name
        for key, value in structlog.contextvars.get_contextvars().items():
            event_dict.setdefault(key, value)
        event_dict["level"] = level
        event_dict["timestamp"] = (
            datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")
        )
        _drop_secrets(None, level, event_dict)
        self._writer(logger_name).msg(_ENCODER.encode(event_dict))


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


def get_logger(name: str) -> Any:
    """A logger whose lines carry ``logger=name``."""
    return structlog.get_logger(name)
