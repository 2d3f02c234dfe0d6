"""Coverage-guided fuzz target for the sans-I/O core: wire framing, Session, mechanisms.

Any bytes in: they are cut into chunks for ``Session.receive``, and every credential
check the session asks for is answered from the same bytes (OK, FAIL, temporary
failure, or SCRAM keys), so ``complete`` and the mechanisms' later steps are reached.
Invariants: no exception escapes; every write is whole, well-formed server lines;
nothing is written after a close.

    python tests/fuzz/atheris_session.py -max_total_time=60
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from authbridge.core import wire
    from authbridge.core.mechanisms import REGISTRY
    from authbridge.core.mechanisms.base import Credentials, NeedCredentials, ScramKeys
    from authbridge.core.session import (
        Check,
        Close,
        CredentialsFound,
        Send,
        SendDelayed,
        Session,
        SessionSettings,
    )
    from authbridge.core.verdict import Outcome, Reason, Verdict

SERVER_COMMANDS = {
    b"VERSION",
    b"MECH",
    b"SPID",
    b"CUID",
    b"COOKIE",
    b"DONE",
    b"OK",
    b"FAIL",
    b"CONT",
    b"CANCELLED",  # a client at minor 4+ (Dovecot 2.4.4) gets it for each CANCEL
}


def _check_write(data: bytes) -> None:
    assert data.endswith(b"\n"), data
    for line in data[:-1].split(b"\n"):
        assert b"\r" not in line and b"\x00" not in line, line
        assert line.split(b"\t", 1)[0] in SERVER_COMMANDS, line


def _answer(check: Check, fdp: atheris.FuzzedDataProvider) -> Verdict | CredentialsFound:
    choice = fdp.ConsumeIntInRange(0, 3)
    user = fdp.ConsumeUnicodeNoSurrogates(8) or None
    credential = check.credential
    if isinstance(credential, NeedCredentials) and choice == 3:
        if credential.scheme == "CRAM-MD5":
            found = Credentials(credential.scheme, None, fdp.ConsumeBytes(8))
        else:
            size = 32 if credential.scheme == "SCRAM-SHA-256" else 20
            keys = ScramKeys(
                fdp.ConsumeIntInRange(1, 10000), fdp.ConsumeBytes(16), b"k" * size, b"s" * size
            )
            found = Credentials(credential.scheme, keys)
        return CredentialsFound(found, Verdict(Outcome.OK, user or "u"))
    outcome = (Outcome.OK, Outcome.FAIL, Outcome.TEMPFAIL, Outcome.FAIL)[choice]
    fields = (("quota", "1G"), ("nodelay", None)) if fdp.ConsumeBool() else ()
    return Verdict(outcome, user, Reason.NONE, fields=fields, had_store_fields=bool(fields))


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    settings = SessionSettings(
        mechanisms=tuple(REGISTRY.values()),
        spid=1,
        tempfail_disconnects=fdp.ConsumeBool(),
        max_requests=fdp.ConsumeIntInRange(1, 50),
    )
    session = Session(settings, cuid=1, cookie="0" * 32)
    _check_write(session.handshake())
    closed = False
    pending: list[Check] = []
    now = 0.0
    while fdp.remaining_bytes():
        if pending and fdp.ConsumeBool():
            check = pending.pop(fdp.ConsumeIntInRange(0, len(pending) - 1))
            actions = session.complete(check.ticket, check.info.id, _answer(check, fdp), now)
        else:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300))
            actions = session.receive(chunk, now)
        now += fdp.ConsumeIntInRange(0, 200)
        for action in actions:
            if isinstance(action, Send | SendDelayed):
                assert not closed, "a write after the close"
                _check_write(action.data)
            elif isinstance(action, Check):
                pending.append(action)
            elif isinstance(action, Close):
                closed = True
        session.expire(now)
    wire.LineBuffer().feed(data[:100])


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
