"""The stores a check reads, and how: user name rules, cache, hasher, dummy hash, modes.

The rules themselves (normalise, look up, apply fields, verify) are written once, in
:mod:`authbridge.checks.pipeline`; :meth:`Authenticator.check` and
:meth:`Authenticator.check_now` run that pipeline without its gates (policy, penalty),
for commands and tests that check a credential outside the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from authbridge.checks.cache import AuthCache
from authbridge.checks.chain import Link
from authbridge.checks.fields import HIDDEN_FIELDS
from authbridge.checks.hashing import Hasher
from authbridge.checks.pipeline import (
    ILLEGAL_PASSWORD_BYTES,
    CheckPipeline,
    Pending,
    password_has_illegal_bytes,
)
from authbridge.core.session import Credential, CredentialsFound, RequestInfo
from authbridge.core.usernames import UsernamePolicy
from authbridge.core.verdict import Verdict
from authbridge.passdb.base import Passdb
from authbridge.schemes import StoredPassword

__all__ = ["HIDDEN_FIELDS", "ILLEGAL_PASSWORD_BYTES", "Authenticator", "password_has_illegal_bytes"]


class Authenticator:
    """Checks credentials against an ordered list of stores."""

    def __init__(
        self,
        stores: Sequence[Passdb],
        hasher: Hasher,
        usernames: UsernamePolicy | None = None,
        cache: AuthCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stores = list(stores)
        self.hasher = hasher
        self.usernames = usernames or UsernamePolicy()
        self.cache = cache if cache is not None else AuthCache()
        self.clock = clock
        #: A real stored hash verified (and ignored) for unknown users, so that an
        #: unknown user costs the same time as a wrong password.
        self.dummy_password: StoredPassword | None = None
        #: A stored hash that cannot be used is our problem, not a wrong password:
        #: an internal failure. Dovecot 2.3 answers a plain FAIL; compat mode does too.
        self.broken_hash_is_tempfail = True
        #: An OK whose fields carry ``nologin`` is answered as a FAIL (see
        #: :func:`authbridge.core.verdict.refuse_nologin`); Dovecot 2.3, and compat mode, say OK.
        self.nologin_refuses = True
        #: Called with (store name, "found" | "not_found" | "error", seconds) per lookup.
        self.on_lookup: Callable[[str, str, float], None] | None = None
        #: ``--dovecot-config``: the passdbs with their rules, asked by Dovecot's chain
        #: semantics (``None``: the first store that knows the user decides).
        self.chain: list[Link] | None = None
        self._ungated = CheckPipeline(self)

    @property
    def client_dependent(self) -> bool:
        """Whether a store's query depends on the client (%s, %r, %l): no caching then."""
        return any(getattr(s, "uses_request", False) for s in self.stores)

    async def check(self, info: RequestInfo, credential: Credential) -> Verdict | CredentialsFound:
        """The verdict for ``credential``, waiting for what must wait."""
        result = self._ungated.run(info, credential, 0.0)
        if isinstance(result, Pending):
            return await result.wait()
        return result

    def check_now(
        self, info: RequestInfo, credential: Credential
    ) -> Verdict | CredentialsFound | None:
        """The verdict when nothing has to wait (in-memory stores, a cheap scheme);
        ``None`` when something would (then use :meth:`check`)."""
        result = self._ungated.run(info, credential, 0.0)
        if isinstance(result, Pending):
            result.close()
            return None
        return result
