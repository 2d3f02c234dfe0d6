"""Replay every transcript in protocol/transcripts/ against real Dovecot 2.3 and authbridge.

Dovecot is the reference: a transcript it does not satisfy is a wrong transcript. Each
server is started once per session (conftest.py) and every transcript uses its own
connection. A transcript whose "# mechanisms:" header asks for all five mechanisms runs
against the second pair of servers, which offer them. A transcript marked
"# targets: authbridge" (Dovecot 2.4's protocol level, which the 2.3 reference does not
speak) is replayed against authbridge only.
"""

from __future__ import annotations

import pytest

from tests.conformance.transcript import (
    ALL_MECHANISMS,
    CORPUS,
    TARGETS,
    Replayer,
    Transcript,
    load_corpus,
)
from tests.support.authbridge_proc import AuthbridgeServer
from tests.support.dovecot import DovecotAuth

TRANSCRIPTS = load_corpus(CORPUS)
CASES = [
    pytest.param(transcript, target, id=f"{transcript.name}-{target}")
    for transcript in TRANSCRIPTS
    for target in TARGETS
    if target in transcript.targets
]


@pytest.mark.interop
@pytest.mark.parametrize(("transcript", "target"), CASES)
def test_transcript(transcript: Transcript, target: str, request: pytest.FixtureRequest) -> None:
    pair = "conformance_all_mechs" if transcript.mechanisms == ALL_MECHANISMS else "conformance"
    if transcript.targets == ("authbridge",):  # Dovecot 2.4's level, kept off by compat
        pair, target = "conformance", "authbridge24"
    server: DovecotAuth | AuthbridgeServer = request.getfixturevalue(f"{pair}_{target}")
    Replayer(str(server.socket_path)).run(transcript)
