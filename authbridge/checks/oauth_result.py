"""What validating one bearer token found, as plain data (never the token itself)."""

from __future__ import annotations

from dataclasses import dataclass

#: Outcomes of a validation.
OK = "ok"
#: The token is not good: expired, wrong audience or issuer, bad signature, inactive.
INVALID = "invalid"
#: The provider could not be asked (JWKS or introspection endpoint down): try later.
UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class TokenResult:
    outcome: str
    #: The login name (the ``username_attribute`` claim) of a good token.
    user: str | None = None
    #: For the log line: what was wrong, in our words (no claim values, no token).
    why: str = ""
    #: Seconds since the epoch after which the answer no longer holds (``exp``).
    expires: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def invalid(why: str) -> TokenResult:
    return TokenResult(INVALID, why=why)


def unavailable(why: str) -> TokenResult:
    return TokenResult(UNAVAILABLE, why=why)
