"""The outcome of checking one credential, as plain data.

The authenticator produces a :class:`Verdict`; the session turns it into an ``OK`` or
``FAIL`` line, and logs and metrics read the very same object, so the three never
disagree about what happened.
"""

from __future__ import annotations

import enum

from authbridge.records import record


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    #: Internal failure (store unreadable, backend down): not the user's fault.
    TEMPFAIL = "tempfail"


#: Why a request failed, from a closed set (metrics label values, log field).
class Reason(enum.Enum):
    NONE = "none"
    PASSWORD_MISMATCH = "password_mismatch"
    USER_UNKNOWN = "user_unknown"
    SCHEME_NOT_AVAILABLE = "scheme_not_available"
    INVALID_USERNAME = "invalid_username"
    AUTHZ_REFUSED = "authz_refused"
    MALFORMED = "malformed"
    FORCED_FAIL = "forced_fail"
    NETWORK_DENIED = "network_denied"
    POLICY = "policy"
    STORE_ERROR = "store_error"
    BROKEN_HASH = "broken_hash"


@record
class Verdict:
    outcome: Outcome
    #: The normalised user name; ``None`` when none could be established (then the
    #: reply's ``user=`` falls back to :attr:`original_user`, as in Dovecot).
    user: str | None
    reason: Reason = Reason.NONE
    #: Extra fields returned to the client, already in wire order; ``None`` value = bare key.
    fields: tuple[tuple[str, str | None], ...] = ()
    #: Whether any field (visible or hidden) came from the store: Dovecot 2.3 then
    #: emits a separating TAB even if every field was hidden.
    had_store_fields: bool = False
    #: The login name as the client typed it, for ``original_user=``.
    original_user: str | None = None
    #: Skip the failure delay (the ``nodelay`` extra field).
    nodelay: bool = False
    #: The verdict depended on the client address (``allow_nets``): never cache it.
    client_specific: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def fail(user: str | None, reason: Reason, original_user: str | None = None) -> Verdict:
    return Verdict(Outcome.FAIL, user, reason, original_user=original_user)


def tempfail(user: str | None, reason: Reason = Reason.STORE_ERROR) -> Verdict:
    return Verdict(Outcome.TEMPFAIL, user, reason)
