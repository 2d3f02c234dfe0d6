"""Dovecot's default username normalisation: allowed characters, then lower-case."""

from __future__ import annotations

from dataclasses import dataclass

from authbridge.errors import ProtocolError

#: Dovecot's default ``auth_username_chars``.
DEFAULT_USERNAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@"


class InvalidUsername(ProtocolError, ValueError):
    """The login name cannot be used; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class UsernamePolicy:
    allowed_chars: frozenset[str] = frozenset(DEFAULT_USERNAME_CHARS)
    lowercase: bool = True
    default_domain: str = ""

    def normalise(self, name: str) -> str:
        """Return the name the stores are searched with, or raise InvalidUsername."""
        if self.default_domain and "@" not in name:
            name = f"{name}@{self.default_domain}"
        if self.allowed_chars:
            for ch in name:
                if ch not in self.allowed_chars:
                    raise InvalidUsername(f"username character disallowed: 0x{ord(ch) & 0xFF:02x}")
        if self.lowercase:
            name = name.lower()
        if not name:
            raise InvalidUsername("empty username")
        return name
