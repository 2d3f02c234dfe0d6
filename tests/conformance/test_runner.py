"""Tests of the transcript runner itself.

The corpus is only worth something if the runner really rejects a server that behaves
differently, so besides the parser, wrong transcripts are replayed against real Dovecot
and must be reported as mismatches.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conformance.transcript import (
    ALL_MECHANISMS,
    CORPUS,
    DEFAULT_MECHANISMS,
    Directive,
    Literal,
    Replayer,
    TranscriptMismatch,
    TranscriptSyntaxError,
    _perfect_matching,
    cram_md5_response,
    load_corpus,
    parse_transcript,
    split_segments,
    unescape,
)
from tests.fuzz.differential import MECHANISMS as FUZZER_MECHANISMS
from tests.support.dovecot import DovecotAuth


def test_corpus_is_large_and_parses() -> None:
    transcripts = load_corpus(CORPUS)
    assert len(transcripts) >= 40
    assert all(t.title for t in transcripts)
    assert len({t.name for t in transcripts}) == len(transcripts)


def test_unescape() -> None:
    assert unescape(r"A\tB\r\0\\\x01t\{\}") == b"A\tB\r\x00\\\x01t{}"
    with pytest.raises(TranscriptSyntaxError):
        unescape(r"bad\q")
    with pytest.raises(TranscriptSyntaxError):
        unescape(r"bad\x1")


def test_split_segments() -> None:
    assert split_segments(r"CONT\t1\t{b64 \0u\0p}x\{", "t") == [
        Literal(r"CONT\t1\t"),
        Directive("b64", r"\0u\0p"),
        Literal(r"x\{"),
    ]
    with pytest.raises(TranscriptSyntaxError):
        split_segments("CONT {b64 x", "t")


def test_cram_md5_response_known_vector() -> None:
    # RFC 2195-style check with the HMAC-MD5 value computed in the research notes.
    challenge = b"<8327461095827361.1700000000@mail.example.org>"
    answer = base64.b64decode(cram_md5_response("userx", "secret", challenge))
    assert answer == b"userx 87b30d8a13d773de66009dc4f535751b"
    upper = base64.b64decode(cram_md5_response("userx", "secret", challenge, upper=True))
    assert upper == b"userx 87B30D8A13D773DE66009DC4F535751B"


def test_unordered_matching_needs_more_than_greedy() -> None:
    # Pattern 0 fits lines 0 and 1, pattern 1 fits only line 0: greedy would fail.
    assert _perfect_matching(2, [(0, 0), (0, 1), (1, 0)]) == [1, 0]
    assert _perfect_matching(2, [(0, 0), (1, 0)]) is None
    assert _perfect_matching(0, []) == []


def test_handshake_macro_and_groups_parse(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(
        "# title: x\nC: VERSION\\t1\\t0\nC: CPID\\t1\nS: <handshake>\n"
        "S*: OK\\t1\nS*: OK\\t2\nS: <quiet 200>\nS: <disconnect>\n"
    )
    steps = parse_transcript(path).steps
    kinds = [type(s).__name__ for s in steps]
    assert kinds == ["Send", *["Expect"] * 8, "ExpectUnordered", "Quiet", "Disconnect"]


def test_mechanisms_header_picks_the_server_pair_and_the_handshake(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    body = "C: VERSION\\t1\\t0\nS: <handshake>\n"
    path.write_text("# title: x\n" + body)
    assert parse_transcript(path).mechanisms == DEFAULT_MECHANISMS
    path.write_text("# title: x\n# mechanisms: " + " ".join(ALL_MECHANISMS) + "\n" + body)
    transcript = parse_transcript(path)
    assert transcript.mechanisms == ALL_MECHANISMS == FUZZER_MECHANISMS
    # Two more MECH lines: SCRAM-SHA-1 and SCRAM-SHA-256.
    assert len(transcript.steps) == 1 + 8 + 2
    path.write_text("# title: x\n# mechanisms: plain scram-sha-1\n" + body)
    with pytest.raises(TranscriptSyntaxError):
        parse_transcript(path)


def test_missing_title_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("C: VERSION\\t1\\t0\n")
    with pytest.raises(TranscriptSyntaxError):
        parse_transcript(path)


HEAD = "C: VERSION\\t1\\t0\nC: CPID\\t4242\nS: <handshake>\n"
PLAIN_OK = "C: AUTH\\t1\\tPLAIN\\tservice=smtp\\tresp={b64 \\0userx\\0secret}\n"
PLAIN_BAD = "C: AUTH\\t1\\tPLAIN\\tservice=smtp\\tresp={b64 \\0userx\\0wrong}\n"

# Each of these contradicts what Dovecot 2.3 really does.
WRONG_TRANSCRIPTS = {
    "wrong-user": HEAD + PLAIN_OK + "S: OK\\t1\\tuser=other\n",
    "missing-original-user": HEAD
    + "C: AUTH\\t1\\tPLAIN\\tservice=smtp\\tresp={b64 \\0UserX\\0secret}\n"
    + "S: OK\\t1\\tuser=userx\n",
    "expects-disconnect": HEAD + PLAIN_OK + "S: <disconnect>\n",
    "expects-reply-but-disconnected": HEAD + "C: AUTH\\t1\\tXYZ\\tservice=smtp\nS: FAIL\\t1\n",
    "forgets-delayed-fail": HEAD + PLAIN_BAD,
    "wrong-group": HEAD
    + PLAIN_BAD
    + "C: AUTH\\t2\\tPLAIN\\tservice=smtp\\tresp={b64 \\0userx\\0secret}\n"
    + "S*: OK\\t1\\tuser=userx\nS*: FAIL\\t2\\tuser=userx\n",
    "not-quiet": HEAD + PLAIN_BAD + "S: <quiet 900>\nS: FAIL\\t1\\tuser=userx\n",
    "wrong-handshake-order": "C: VERSION\\t1\\t0\nS: DONE\n",
    "cram-wrong-secret-expected-ok": HEAD
    + "C: AUTH\\t1\\tCRAM-MD5\\tservice=smtp\nS: CONT\\t1\\t{challenge}\n"
    + "C: CONT\\t1\\t{cram-md5 userx wrong}\nS: OK\\t1\\tuser=userx\n",
    "unexpected-disconnect-at-end": HEAD + "C: NOOP\n",
}


@pytest.mark.interop
@pytest.mark.parametrize("name", sorted(WRONG_TRANSCRIPTS))
def test_runner_rejects_wrong_transcripts(
    name: str, tmp_path: Path, conformance_dovecot: DovecotAuth
) -> None:
    path = tmp_path / f"{name}.txt"
    path.write_text(f"# title: deliberately wrong ({name})\n" + WRONG_TRANSCRIPTS[name])
    with pytest.raises(TranscriptMismatch):
        Replayer(str(conformance_dovecot.socket_path), timeout=2.0).run(parse_transcript(path))


@pytest.mark.interop
def test_runner_accepts_the_right_version_of_a_wrong_transcript(
    tmp_path: Path, conformance_dovecot: DovecotAuth
) -> None:
    """Control for the test above: the corrected transcript passes."""
    path = tmp_path / "right.txt"
    path.write_text("# title: right\n" + HEAD + PLAIN_BAD + "S: FAIL\\t1\\tuser=userx\n")
    Replayer(str(conformance_dovecot.socket_path)).run(parse_transcript(path))


SCRAM_HEAD = "# mechanisms: " + " ".join(ALL_MECHANISMS) + "\n" + HEAD
SCRAM_FIRST = (
    "C: AUTH\\t1\\tSCRAM-SHA-256\\tservice=smtp\\tresp={scram-first sha-256 userx n0nce}\n"
    "S: CONT\\t1\\t{scram-server-first}\n"
)
# Each of these contradicts what Dovecot 2.3 really does with SCRAM.
WRONG_SCRAM_TRANSCRIPTS = {
    "bad-proof-expected-ok": SCRAM_HEAD
    + SCRAM_FIRST
    + "C: CONT\\t1\\t{scram-final-badproof}\nS: CONT\\t1\\t{scram-server-final}\n",
    "wrong-password-expected-ok": SCRAM_HEAD
    + SCRAM_FIRST
    + "C: CONT\\t1\\t{scram-final wrong}\nS: CONT\\t1\\t{scram-server-final}\n",
    "server-first-for-another-nonce": SCRAM_HEAD
    + "C: AUTH\\t1\\tSCRAM-SHA-256\\tservice=smtp\\tresp={scram-first sha-256 userx abc}\n"
    + "C: AUTH\\t2\\tSCRAM-SHA-256\\tservice=smtp\\tresp={scram-first sha-256 userx xyz}\n"
    + "S: CONT\\t1\\t{scram-server-first}\nS: CONT\\t1\\t{scram-server-first}\n",
}


@pytest.mark.interop
def test_runner_checks_scram_answers(
    tmp_path: Path, conformance_all_mechs_dovecot: DovecotAuth
) -> None:
    """The SCRAM directives' wrong variants are caught; the right one passes (control)."""
    for name, text in sorted(WRONG_SCRAM_TRANSCRIPTS.items()):
        path = tmp_path / f"{name}.txt"
        path.write_text(f"# title: deliberately wrong ({name})\n" + text)
        with pytest.raises(TranscriptMismatch):
            Replayer(str(conformance_all_mechs_dovecot.socket_path), timeout=2.0).run(
                parse_transcript(path)
            )
    path = tmp_path / "right.txt"
    path.write_text(
        "# title: right\n"
        + SCRAM_HEAD
        + SCRAM_FIRST
        + "C: CONT\\t1\\t{scram-final secret}\nS: CONT\\t1\\t{scram-server-final}\n"
        + "C: CONT\\t1\\t\nS: OK\\t1\\tuser=userx\n"
    )
    Replayer(str(conformance_all_mechs_dovecot.socket_path)).run(parse_transcript(path))
