"""Errors a user of ``emit-exim-config`` / ``emit-postfix-config`` can meet."""

from __future__ import annotations


class MtaConfigError(Exception):
    """The inputs cannot produce a safe MTA configuration; the message says what to fix."""


class SenderMapError(MtaConfigError):
    """A sender map (file or ``--allow-sender`` value) is malformed."""


class FileConflictError(MtaConfigError):
    """A file we would write already exists with different content (use --force or --diff)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        listing = "\n  ".join(paths)
        super().__init__(
            "these files exist with different content and were left alone:\n  "
            f"{listing}\nrun again with --diff to see the changes, or --force to replace them"
        )
