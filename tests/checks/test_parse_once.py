"""Parse once (issue #16 item 3): the client address once per request, the stored hash
of a passwd-file entry once per entry version."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from authbridge import schemes
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.checks.penalty import PenaltySettings, PenaltyTracker
from authbridge.checks.pipeline import CheckPipeline
from authbridge.checks.policy import PolicyGate
from authbridge.config import PolicyConfig
from authbridge.core import addresses
from authbridge.core.mechanisms.base import VerifyPlain
from authbridge.core.mechanisms.plain import Plain
from authbridge.core.session import RequestInfo, Send, Session, SessionSettings
from authbridge.core.verdict import Verdict
from authbridge.passdb.passwd_file import PasswdFileStore


def _session() -> Session:
    session = Session(SessionSettings(mechanisms=[Plain], spid=1), cuid=1, cookie="c" * 32)
    session.receive(b"VERSION\t1\t2\nCPID\t7\n", 0.0)
    return session


def _info_of(session: Session, line: bytes) -> RequestInfo:
    actions = session.receive(line, 0.0)
    checks = [a for a in actions if not isinstance(a, Send)]
    return checks[0].info  # type: ignore[union-attr]


def test_the_session_parses_rip_once_into_text_and_address(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = ipaddress.ip_address

    def counting(text: str) -> object:
        calls.append(text)
        return real(text)

    addresses.parse.cache_clear()
    monkeypatch.setattr(ipaddress, "ip_address", counting)
    session = _session()
    info = _info_of(session, b"AUTH\t1\tPLAIN\tservice=smtp\trip=2001:DB8::0001\tresp=AGEAYg==\n")
    assert info.rip == "2001:db8::1"
    assert info.address == ipaddress.IPv6Address("2001:db8::1")
    # The penalty bucket and the policy gate use the parsed address: no parse again.
    penalty = PenaltyTracker(PenaltySettings(ipv6_prefix=64))
    assert penalty.key(info.rip, info.address) == "2001:db8::/64"
    gate = PolicyGate(PolicyConfig(allowed_networks=("2001:db8::/32",)))
    assert gate.refusal(info, False) is None
    assert calls == ["2001:DB8::0001"]


def test_an_info_made_without_the_address_parses_it_lazily_once() -> None:
    info = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")
    assert info.address == ipaddress.IPv4Address("192.0.2.1")
    assert info.address is info.address
    assert RequestInfo(1, "PLAIN", "smtp").address is None
    # The address is a cache: equal infos stay equal, hashes too.
    assert info == RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")
    assert hash(info) == hash(RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1"))


def test_a_stored_hash_is_decoded_once_per_entry_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users"
    path.write_text(f"joe:{schemes.generate('SSHA512', b'pw', 'joe')}\n")
    store = PasswdFileStore(path)
    store.load()
    decodes: list[str] = []
    real = schemes._decode

    def counting(entry: object, stored: schemes.StoredPassword) -> bytes:
        decodes.append(stored.scheme)
        return real(entry, stored)  # type: ignore[arg-type]

    monkeypatch.setattr(schemes, "_decode", counting)
    checks = CheckPipeline(Authenticator([store], Hasher()), clock=lambda: 0.0)
    info = RequestInfo(1, "PLAIN", "smtp", rip="192.0.2.1")
    for password, ok in ((b"pw", True), (b"no", False), (b"pw", True)):
        verdict = checks.run(info, VerifyPlain("joe", "", password), 0.0)
        assert isinstance(verdict, Verdict) and verdict.ok is ok
    assert decodes == ["SSHA512"]
    entry = store.get("joe")
    assert entry is not None and entry.password is not None
    assert entry.password.raw is not None
    # A new version of the file is a new entry, decoded afresh.
    path.write_text(f"joe:{schemes.generate('SSHA512', b'new', 'joe')}\n")
    store.load()
    verdict = checks.run(info, VerifyPlain("joe", "", b"new"), 0.0)
    assert isinstance(verdict, Verdict) and verdict.ok
    assert decodes == ["SSHA512", "SSHA512"]


def test_the_decoded_hash_is_not_part_of_the_value() -> None:
    a = schemes.parse_stored("{PLAIN}pw")
    b = schemes.parse_stored("{PLAIN}pw")
    assert schemes.verify_password(a, b"pw", "u")
    assert a.raw == b"pw" and b.raw is None
    assert a == b and hash(a) == hash(b) and "pw" not in repr(a)
