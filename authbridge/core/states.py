"""The auth-client protocol's states, named, with their transition tables.

Everything that moves a connection or a request from one state to another is written
here, as data: :data:`CONNECTION` and :data:`REQUEST` map each state to the events it
accepts and the state each leads to. :class:`authbridge.core.session.Session` asks
:func:`advance` for every move, so a move the tables do not list is a bug that shows at
once (:class:`IllegalTransition`), and :func:`accepts` tells whether a client line
applies in a state (a ``CONT`` for a request that is not waiting for one, say).
Which *reply* a move produces is the session's business, and how it looks on the wire
``replies``'.
"""

from __future__ import annotations

from collections.abc import Mapping

from authbridge.errors import AuthbridgeError


class Named:
    """A named state or event: compared and hashed by identity (cheap on the hot path,
    where an ``enum.Enum``'s Python-level ``__hash__`` cost thousands of instructions
    per request)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class ConnState(Named):
    __slots__ = ()


class ConnEventKind(Named):
    __slots__ = ()


class ReqState(Named):
    __slots__ = ()


class ReqEventKind(Named):
    __slots__ = ()


class Conn:
    """Where a connection is."""

    #: Accepted, handshake sent; the client's ``VERSION`` comes first.
    AWAIT_VERSION = ConnState("await-version")
    #: ``VERSION`` seen; ``CPID`` comes next.
    AWAIT_CPID = ConnState("await-cpid")
    #: Handshake done: ``AUTH``, ``CONT``, ``CANCEL``.
    READY = ConnState("ready")
    #: The client broke a rule while checks were running: nothing more is read, the
    #: close waits for their answers (Dovecot answers them before it closes).
    DRAINING = ConnState("draining")
    CLOSED = ConnState("closed")


class ConnEvent:
    VERSION = ConnEventKind("version")
    CPID = ConnEventKind("cpid")
    #: A violation while a check runs.
    VIOLATION_WHILE_CHECKING = ConnEventKind("violation-while-checking")
    CLOSE = ConnEventKind("close")


class Req:
    """Where one AUTH request is (it leaves the table when it gets its OK or FAIL)."""

    #: The mechanism is handling client data (AUTH's initial response, a CONT).
    STEPPING = ReqState("stepping")
    #: A ``CONT`` challenge went out; the client's answer comes next.
    AWAITING_CONT = ReqState("awaiting-cont")
    #: The check pipeline has the credential; lines about this request wait.
    CHECKING = ReqState("checking")
    #: The mechanism's final server data went out (SCRAM); the client's ``CONT``
    #: releases the OK.
    AWAITING_FINAL_CONT = ReqState("awaiting-final-cont")


class ReqEvent:
    CHALLENGE = ReqEventKind("challenge")
    CHECK = ReqEventKind("check")
    CHECKED = ReqEventKind("checked")
    FINAL_DATA = ReqEventKind("final-data")
    CONT = ReqEventKind("cont")


CONN_STATES = (Conn.AWAIT_VERSION, Conn.AWAIT_CPID, Conn.READY, Conn.DRAINING, Conn.CLOSED)
REQ_STATES = (Req.STEPPING, Req.AWAITING_CONT, Req.CHECKING, Req.AWAITING_FINAL_CONT)


CONNECTION: Mapping[ConnState, Mapping[ConnEventKind, ConnState]] = {
    Conn.AWAIT_VERSION: {ConnEvent.VERSION: Conn.AWAIT_CPID, ConnEvent.CLOSE: Conn.CLOSED},
    Conn.AWAIT_CPID: {ConnEvent.CPID: Conn.READY, ConnEvent.CLOSE: Conn.CLOSED},
    Conn.READY: {
        ConnEvent.VIOLATION_WHILE_CHECKING: Conn.DRAINING,
        ConnEvent.CLOSE: Conn.CLOSED,
    },
    # A further violation (an overlong line after the first) only renames the reason.
    Conn.DRAINING: {
        ConnEvent.VIOLATION_WHILE_CHECKING: Conn.DRAINING,
        ConnEvent.CLOSE: Conn.CLOSED,
    },
    # Closing twice is harmless (the shell's abandon after the session's own close).
    Conn.CLOSED: {ConnEvent.CLOSE: Conn.CLOSED},
}

REQUEST: Mapping[ReqState, Mapping[ReqEventKind, ReqState]] = {
    Req.STEPPING: {
        ReqEvent.CHALLENGE: Req.AWAITING_CONT,
        ReqEvent.CHECK: Req.CHECKING,
        ReqEvent.FINAL_DATA: Req.AWAITING_FINAL_CONT,
    },
    Req.AWAITING_CONT: {ReqEvent.CONT: Req.STEPPING},
    Req.AWAITING_FINAL_CONT: {ReqEvent.CONT: Req.STEPPING},
    # The credentials a mechanism asked for: it goes on with them.
    Req.CHECKING: {ReqEvent.CHECKED: Req.STEPPING},
}


class IllegalTransition(AuthbridgeError):
    """A move the tables do not list: a bug in the session, never the client's doing."""


def advance(table: Mapping[Named, Mapping[Named, Named]], state: Named, event: Named) -> Named:
    """The state ``event`` leads to from ``state``; IllegalTransition if none."""
    try:
        return table[state][event]
    except KeyError:
        raise IllegalTransition(f"{event.value} in state {state.value}") from None


def accepts(table: Mapping[Named, Mapping[Named, Named]], state: Named, event: Named) -> bool:
    return event in table[state]
