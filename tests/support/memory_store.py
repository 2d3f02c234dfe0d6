"""A passwd-file store held in memory, for tests that run a server in-process."""

from __future__ import annotations

from typing import Any

from authbridge.passdb.passwd_file import parse_passwd_file


class MemoryStore:
    """Users parsed from passwd-file text; only the async ``lookup``, so every check
    takes the task path (no ``get``, hence no inline check)."""

    name = "memory"

    def __init__(self, passwd_text: str) -> None:
        self.entries = parse_passwd_file(passwd_text, "memory")

    async def lookup(self, user: str, info: object = None) -> Any:
        return self.entries.get(user)
