"""Mechanisms that compare credentials themselves (CRAM-MD5), driven without a session."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from authbridge.checks.authenticator import Authenticator
from authbridge.checks.hashing import Hasher
from authbridge.core.mechanisms.base import Accepted, Failure, Mechanism, NeedCredentials
from authbridge.core.mechanisms.cram_md5 import CramMd5
from authbridge.core.session import Credential, CredentialsFound, RequestInfo, failed_after_lookup
from authbridge.core.verdict import Reason, Verdict
from authbridge.passdb.passwd_file import PasswdFileStore
from tests.support.memory_store import MemoryStore


class CramAnswer:
    """A client's CRAM-MD5 answer to ``challenge``: the mechanism and what it asks for."""

    def __init__(self, user: str, password: bytes, challenge: bytes) -> None:
        self.mechanism = CramMd5(challenge)
        self.mechanism.initial(None)
        digest = hmac.new(password, challenge, hashlib.md5).hexdigest()
        step = self.mechanism.step(user.encode() + b" " + digest.encode())
        assert isinstance(step, NeedCredentials)
        self.credential = step


def settle(mechanism: Mechanism, result: Verdict | CredentialsFound) -> Verdict:
    """The verdict once the mechanism compared the client's answer, as the session
    makes it: the lookup's verdict when it matched, a FAIL after the lookup if not."""
    if isinstance(result, Verdict):
        return result
    step = mechanism.resume(result.credentials)
    if isinstance(step, Accepted):
        return result.verdict
    assert isinstance(step, Failure) and step.password_mismatch
    return failed_after_lookup(result.verdict, Reason.PASSWORD_MISMATCH)


def authenticator_on(path_kind: str, users: str, tmp_path: Path) -> Authenticator:
    """``users`` (passwd-file text) behind the task path (an in-memory store without
    ``get``: async lookup) or the inline path (a loaded passwd-file: ``check_now``)."""
    if path_kind == "task":
        return Authenticator([MemoryStore(users)], Hasher())
    path = tmp_path / "users"
    path.write_text(users)
    store = PasswdFileStore(path)
    store.load()
    return Authenticator([store], Hasher())


async def verdict_on(
    auth: Authenticator, info: RequestInfo, credential: Credential | CramAnswer
) -> Verdict:
    """Whichever path the authenticator's store allows, as the server calls it."""
    if isinstance(credential, CramAnswer):
        found = auth.check_now(info, credential.credential)
        if found is None:
            found = await auth.check(info, credential.credential)
        return settle(credential.mechanism, found)
    now = auth.check_now(info, credential)
    if now is not None:
        assert isinstance(now, Verdict)
        return now
    result = await auth.check(info, credential)
    assert isinstance(result, Verdict)
    return result
