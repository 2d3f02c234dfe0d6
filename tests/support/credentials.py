"""Mechanisms that compare credentials themselves (CRAM-MD5), driven without a session."""

from __future__ import annotations

import hashlib
import hmac

from authbridge.mechanisms.base import Accepted, Failure, Mechanism, NeedCredentials
from authbridge.mechanisms.cram_md5 import CramMd5
from authbridge.session import CredentialsFound, failed_after_lookup
from authbridge.verdict import Reason, Verdict


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
