"""LOGIN: the de-facto "Username:" / "Password:" exchange (draft-murchison-sasl-login)."""

from __future__ import annotations

from typing import ClassVar

from authbridge.core.mechanisms.base import Challenge, Mechanism, Step, VerifyPlain, decode_text

USERNAME_PROMPT = b"Username:"
PASSWORD_PROMPT = b"Password:"


class Login(Mechanism):
    name: ClassVar[str] = "LOGIN"
    flags: ClassVar[tuple[str, ...]] = ("plaintext",)
    plaintext: ClassVar[bool] = True

    def __init__(self) -> None:
        self._username: str | None = None

    def initial(self, data: bytes | None) -> Step:
        # An absent or empty initial response both mean "ask for the username";
        # a non-empty one is the username itself (as Outlook and Exim's tests send).
        if not data:
            return Challenge(USERNAME_PROMPT)
        return self.step(data)

    def _step(self, data: bytes) -> Step:
        if self._username is None:
            self._username = decode_text(data)
            return Challenge(PASSWORD_PROMPT, username=self._username)
        return VerifyPlain(self._username, "", data)
