"""What a SASL mechanism is to the session: a small sans-I/O step machine.

A mechanism never looks up users itself. As in Dovecot, it asks the check pipeline
either to verify a plaintext password (:class:`VerifyPlain`: PLAIN, LOGIN) or for the
user's credentials in one scheme (:class:`NeedCredentials`: CRAM-MD5 asks for CRAM-MD5
credentials, SCRAM for SCRAM-SHA-1/256 ones), which it then checks the client's answer
against itself (:meth:`Mechanism.resume`). A new mechanism is one module plus one line
in the registry (``mechanisms/__init__.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import ClassVar

from authbridge.core.records import record


@record
class Challenge:
    """Send ``CONT`` with this data and wait for exactly one client answer.

    ``username`` is set when the client's last message named the login (LOGIN's first
    answer), so the session can check the name before going on.
    """

    data: bytes
    username: str | None = None


@record
class Failure:
    """The exchange failed inside the mechanism.

    ``password_mismatch`` tells a wrong proof (SCRAM) from malformed client data.
    ``username`` is the login name when the client's message named it before the
    failure was found: Dovecot has taken the name by then, so the FAIL carries it.
    """

    reason: str
    password_mismatch: bool = False
    username: str | None = None


@record
class Success:
    """The client proved itself; send this final server data, then reply OK."""

    data: bytes


@record
class Accepted:
    """The client's answer matched the credentials: reply with the lookup's OK."""


@record
class NeedCredentials:
    """Look up ``username``'s credentials in ``scheme``, then call the mechanism's ``resume``.

    ``early_username``: the session validates the name before asking (SCRAM's
    client-first message); otherwise the pipeline does, like any login name.
    """

    username: str
    scheme: str
    early_username: bool = False


@record
class Credentials:
    """A user's credentials in the scheme a mechanism asked for.

    ``data`` is the scheme's value (CRAM-MD5: the 32-byte HMAC context, ``None`` when
    ``plaintext`` is known; SCRAM: :class:`ScramKeys`); ``plaintext`` is the password
    itself when the store keeps it in a plaintext scheme.
    """

    scheme: str
    data: object = field(repr=False)
    plaintext: bytes | None = field(default=None, repr=False)


@record
class ScramKeys:
    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


@record
class VerifyPlain:
    """Check a plaintext password for ``authcid``; ``authzid`` is empty when not asked for."""

    authcid: str
    authzid: str
    password: bytes = field(repr=False)


@record
class VerifyToken:
    """Validate an OAuth 2.0 bearer token (OAUTHBEARER, XOAUTH2); ``authzid`` is the
    user the client named ('' when it named none)."""

    authzid: str
    token: bytes = field(repr=False)


Step = Challenge | Failure | Success | Accepted | VerifyPlain | NeedCredentials | VerifyToken


class Mechanism(ABC):
    """One authentication exchange. A new instance is made for every AUTH request."""

    name: ClassVar[str]
    #: Dovecot's MECH flags, in Dovecot's fixed order.
    flags: ClassVar[tuple[str, ...]] = ()
    #: Whether NUL bytes are legal in client data (PLAIN needs them; LOGIN does not).
    allows_nuls: ClassVar[bool] = False
    #: Whether the mechanism carries the password in clear (TLS-only policy applies).
    plaintext: ClassVar[bool] = False
    #: Server data sent (as a ``CONT``) before a FAIL, whose answer then releases the
    #: FAIL: RFC 7628's error status. ``None``: a FAIL goes out at once.
    failure_status: ClassVar[bytes | None] = None

    def initial(self, data: bytes | None) -> Step:
        """Start the exchange; ``None`` means the client gave no initial response."""
        if data is None:
            return Challenge(b"")
        return self.step(data)

    def step(self, data: bytes) -> Step:
        refused = self.screen(data)
        return refused if refused is not None else self._step(data)

    def screen(self, data: bytes) -> Failure | None:
        """Dovecot's check of every client message, initial response included: a NUL
        fails the request unless the mechanism carries NULs (PLAIN)."""
        if not self.allows_nuls and b"\x00" in data:
            return Failure("Unexpected NUL in auth data")
        return None

    @abstractmethod
    def _step(self, data: bytes) -> Step:
        """Handle one client message (NULs already screened)."""

    def resume(self, credentials: Credentials) -> Step:
        """Continue with the credentials a :class:`NeedCredentials` step asked for."""
        raise NotImplementedError(f"{self.name} does not look up credentials")


def decode_text(data: bytes) -> str:
    """Client text as ``str``; invalid UTF-8 is kept byte-exact via surrogateescape."""
    return data.decode("utf-8", "surrogateescape")
