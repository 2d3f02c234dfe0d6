"""Replay every transcript in protocol/transcripts/ against real Dovecot 2.3 and authbridge.

Dovecot is the reference: a transcript it does not satisfy is a wrong transcript. Each
server is started once per session (same users file, failure delay 0, no penalty) and
every transcript uses its own connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.transcript import Replayer, Transcript, load_corpus
from tests.support.authbridge_proc import AuthbridgeServer, authbridge_fixture
from tests.support.dovecot import DovecotAuth, dovecot_fixture

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "protocol" / "transcripts"
USERS = REPO / "protocol" / "users.passwd"
TRANSCRIPTS = load_corpus(CORPUS)
TARGETS = ("dovecot", "authbridge")

conformance_dovecot = dovecot_fixture(USERS, name="conformance_dovecot")
conformance_authbridge = authbridge_fixture(
    USERS,
    name="conformance_authbridge",
    extra_args=("--dovecot-compat", "--failure-delay", "0"),
)


@pytest.mark.interop
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=[t.name for t in TRANSCRIPTS])
def test_transcript(transcript: Transcript, target: str, request: pytest.FixtureRequest) -> None:
    server: DovecotAuth | AuthbridgeServer = request.getfixturevalue(f"conformance_{target}")
    Replayer(str(server.socket_path)).run(transcript)
