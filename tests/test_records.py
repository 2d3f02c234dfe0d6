"""``@record``: frozen for the type checker, a cheap plain dataclass at run time."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Outcome, Reason, Verdict


def test_records_compare_and_hash_like_frozen_dataclasses() -> None:
    a = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")
    b = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")
    assert a == b and hash(a) == hash(b)
    assert a != RequestInfo(2, "PLAIN", "smtp", rip="192.0.2.1")
    assert {Verdict(Outcome.OK, "u"), Verdict(Outcome.OK, "u")} == {Verdict(Outcome.OK, "u")}
    assert not hasattr(a, "__dict__")  # slotted


def test_mypy_refuses_an_assignment_to_a_record_field(tmp_path: Path) -> None:
    source = tmp_path / "mutate.py"
    source.write_text(
        textwrap.dedent(
            """
            from authbridge.core.verdict import Outcome, Reason, Verdict

            verdict = Verdict(Outcome.FAIL, "u", Reason.PASSWORD_MISMATCH)
            verdict.user = "admin"
            """
        )
    )
    out, _err, status = api.run([str(source), "--no-incremental", "--strict"])
    assert status == 1, out
    assert 'Property "user" defined in "Verdict" is read-only' in out
    assert Reason.PASSWORD_MISMATCH  # the module under test imports cleanly at run time
