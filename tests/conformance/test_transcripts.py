"""Replay every transcript in protocol/transcripts/ against real Dovecot 2.3 and authbridge.

Dovecot is the reference: a transcript it does not satisfy is a wrong transcript. Each
server is started once per session (conftest.py) and every transcript uses its own
connection. A transcript whose "# mechanisms:" header asks for all five mechanisms runs
against the second pair of servers, which offer them.
"""

from __future__ import annotations

import pytest

from tests.conformance.transcript import (
    ALL_MECHANISMS,
    CORPUS,
    Replayer,
    Transcript,
    load_corpus,
)
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

TRANSCRIPTS = load_corpus(CORPUS)
TARGETS = ("dovecot", "authbridge")


@pytest.mark.interop
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=[t.name for t in TRANSCRIPTS])
def test_transcript(transcript: Transcript, target: str, request: pytest.FixtureRequest) -> None:
    pair = "conformance_all_mechs" if transcript.mechanisms == ALL_MECHANISMS else "conformance"
    server: DovecotAuth | AuthbridgeServer = request.getfixturevalue(f"{pair}_{target}")
    Replayer(str(server.socket_path)).run(transcript)
