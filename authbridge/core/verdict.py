"""The outcome of checking one credential, as plain data.

The authenticator produces a :class:`Verdict`; the session turns it into an ``OK`` or
``FAIL`` line, and logs and metrics read the very same object, so the three never
disagree about what happened.
"""

from __future__ import annotations

import dataclasses
import enum

from authbridge.core.records import record


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
    #: The auth-policy server (``[auth_policy]``, weakforced/Nauthilus) refused.
    POLICY_SERVER = "policy_server"
    #: PLAIN/LOGIN on a session the MTA did not mark ``secured`` (default mode).
    PLAINTEXT_INSECURE = "plaintext_insecure"
    STORE_ERROR = "store_error"
    BROKEN_HASH = "broken_hash"
    #: The right credential, but the store marks the user ``nologin`` (default mode).
    NOLOGIN = "nologin"
    #: An OAuth bearer token that is not good (expired, wrong audience, bad signature).
    INVALID_TOKEN = "invalid_token"


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
    #: The label of the app password that logged in (``None``: the main password).
    app_password: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def fail(user: str | None, reason: Reason, original_user: str | None = None) -> Verdict:
    return Verdict(Outcome.FAIL, user, reason, original_user=original_user)


def tempfail(user: str | None, reason: Reason = Reason.STORE_ERROR) -> Verdict:
    return Verdict(Outcome.TEMPFAIL, user, reason)


def refuse_nologin(verdict: Verdict) -> Verdict:
    """An OK whose fields carry ``nologin`` as the FAIL a login must see.

    Dovecot 2.3 answers such an OK on the auth-client socket and leaves refusing to the
    client (its own login processes do); Exim and Postfix ignore the field and would let
    a disabled user send mail. The FAIL keeps the user's ``reason=`` text (Postfix shows
    it in its 535 reply) and no other field, like any FAIL. Anything that is
    not such an OK (a wrong password above all) is returned unchanged, so nothing here
    tells an account's state to someone who does not know its password.
    """
    fields = verdict.fields
    if not fields or verdict.outcome is not Outcome.OK:
        return verdict
    if not any(key == "nologin" for key, _ in fields):
        return verdict
    kept = tuple((key, value) for key, value in fields if key == "reason" and value)[:1]
    return dataclasses.replace(
        verdict,
        outcome=Outcome.FAIL,
        reason=Reason.NOLOGIN,
        fields=kept,
        had_store_fields=bool(kept),
        # The entry's own nodelay: Dovecot's meaning for a FAIL (sent at once, flagged).
        nodelay=any(key == "nodelay" for key, _ in fields),
    )
