"""Logging: structlog processors configured once, JSON off a TTY, console on one.

Standard-library loggers (``logging.getLogger``) are routed through the same
processors, so every line has one shape whichever API emitted it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

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
    if "resp=" not in text.lower() and "cont" not in text.lower():
        return text
    return _SECRET_TEXT.sub(lambda m: m.group("keep") + "<redacted>", text)


def _drop_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: secret keys and credential-shaped text never get out."""
    for key, value in event_dict.items():
        if key in SECRET_KEYS:
            event_dict[key] = "<redacted>"
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up logging for the whole process; safe to call again on reload.

    ``auto`` means JSON unless ``stream`` is a terminal: under systemd or in a pipe,
    journald and log shippers get one JSON object a line; a person gets columns.
    """
    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if fmt == "auto":
        fmt = "console" if tty else "json"
    if fmt not in ("json", "console"):
        raise ValueError(f"log format {fmt!r}: expected auto, json or console")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
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
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    # No renderer here shows where a call was made, or from which thread or process:
    # do not collect it for every record (the logging HOWTO's "Optimization" section);
    # finding the caller alone walks the stack once per event.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # The processors do not depend on the format or level (the handler and the
        # stdlib level do), so caching each logger's chain on first use is safe across
        # reconfiguration, and saves a bind per event on the per-authentication path.
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
