"""Connection and request states as named states with transition tables (issue #16 item 6)."""

from __future__ import annotations

import pytest

from authbridge.core import states
from authbridge.core.mechanisms.login import Login
from authbridge.core.mechanisms.plain import Plain
from authbridge.core.session import Check, Session, SessionSettings
from authbridge.core.states import (
    CONN_STATES,
    CONNECTION,
    REQ_STATES,
    REQUEST,
    Conn,
    ConnEvent,
    Req,
    ReqEvent,
)
from authbridge.core.verdict import Outcome, Reason, Verdict


def _reachable(table: object, start: object) -> set[object]:
    seen, todo = {start}, [start]
    while todo:
        for target in table[todo.pop()].values():  # type: ignore[index]
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_tables_cover_every_state_and_reach_them() -> None:
    assert set(CONNECTION) == set(CONN_STATES) and set(REQUEST) == set(REQ_STATES)
    assert _reachable(CONNECTION, Conn.AWAIT_VERSION) == set(CONN_STATES)
    assert _reachable(REQUEST, Req.STEPPING) == set(REQ_STATES)
    # Every state can close.
    assert all(ConnEvent.CLOSE in moves for moves in CONNECTION.values())


def test_a_move_the_tables_do_not_list_is_a_bug() -> None:
    with pytest.raises(states.IllegalTransition, match="cpid in state await-version"):
        states.advance(CONNECTION, Conn.AWAIT_VERSION, ConnEvent.CPID)
    assert not states.accepts(REQUEST, Req.CHECKING, ReqEvent.CONT)
    assert states.accepts(REQUEST, Req.AWAITING_FINAL_CONT, ReqEvent.CONT)


def _session() -> Session:
    return Session(SessionSettings(mechanisms=[Plain, Login], spid=1), cuid=1, cookie="c" * 32)


def test_a_connection_walks_through_its_states() -> None:
    session = _session()
    assert session.state is Conn.AWAIT_VERSION and not session.closed
    session.receive(b"VERSION\t1\t2\n", 0.0)
    assert session.state is Conn.AWAIT_CPID
    session.receive(b"CPID\t9\n", 0.0)
    assert session.state is Conn.READY
    session.receive(b"BOGUS\n", 0.0)
    assert session.state is Conn.CLOSED and session.closed


def test_a_violation_while_checking_drains_then_closes() -> None:
    session = _session()
    actions = session.receive(
        b"VERSION\t1\t2\nCPID\t9\nAUTH\t1\tPLAIN\tservice=smtp\tresp=AGEAYg==\n", 0.0
    )
    check = next(a for a in actions if isinstance(a, Check))
    session.receive(b"BOGUS\n", 0.0)
    assert session.state is Conn.DRAINING and not session.closed
    verdict = Verdict(Outcome.FAIL, "a", Reason.PASSWORD_MISMATCH)
    session.complete(check.ticket, 1, verdict, 0.0)
    assert session.state is Conn.CLOSED


def test_a_login_request_walks_through_its_states() -> None:
    session = _session()
    session.receive(b"VERSION\t1\t2\nCPID\t9\nAUTH\t1\tLOGIN\tservice=smtp\n", 0.0)
    request = session._requests[1]
    assert request.state is Req.AWAITING_CONT
    session.receive(b"CONT\t1\tYQ==\n", 0.0)  # the user name: the password prompt follows
    assert request.state is Req.AWAITING_CONT
    actions = session.receive(b"CONT\t1\tYg==\n", 0.0)
    assert request.state is Req.CHECKING and any(isinstance(a, Check) for a in actions)
