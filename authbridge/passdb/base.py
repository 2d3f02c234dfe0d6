"""What every user store gives the authenticator: an entry per user, or an outage."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from authbridge.core.session import RequestInfo

from authbridge.core.records import record
from authbridge.errors import StoreError
from authbridge.schemes import StoredPassword, is_expensive


@record
class PassdbEntry:
    """One user as the store knows it.

    ``password`` is ``None`` when the store has no password field at all for the user
    (Dovecot then compares against an empty CRYPT value, which never matches).
    ``fields`` are the extra fields in store order; a ``None`` value is a bare key.
    """

    user: str
    password: StoredPassword | None = field(repr=False)
    fields: tuple[tuple[str, str | None], ...] = ()

    def field(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return "" if value is None else value
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.fields)


#: What tells one version of a store file from the next: (mtime_ns, size, inode).
FileSignature = tuple[int, int, int]


def file_signature(path: Path) -> FileSignature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be opened for reading now (``None``: it can).

    An open, not a stat: a file whose mode or owner changed under the daemon keeps its
    signature but can no longer be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    return None


def read_store_file(path: Path) -> tuple[str, FileSignature | None]:
    """The text of a store file and the signature of the version read.

    The signature is taken before reading, so a change racing the read still shows up
    as a change at the next check. An unreadable file is StoreUnavailable.
    """
    data, signature = read_store_bytes(path)
    return data.decode("utf-8", "surrogateescape"), signature


def read_store_bytes(path: Path) -> tuple[bytes, FileSignature | None]:
    """:func:`read_store_file` without decoding: the file as one bytes object."""
    signature = file_signature(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreUnavailable(f"cannot read {path}: {exc.strerror}") from None
    return data, signature


def pick_dummy_password(entries: Iterable[PassdbEntry]) -> StoredPassword | None:
    """A stored hash to verify (and ignore) for unknown users, so that they cost the same
    time as a wrong password: an expensive one when the store has any."""
    fallback = None
    for entry in entries:
        if entry.password is None:
            continue
        if is_expensive(entry.password):
            return entry.password
        fallback = fallback or entry.password
    return fallback


class StoreUnavailable(StoreError):
    """The store cannot answer right now (unreadable file, database down)."""


class StoreFormatError(StoreError, ValueError):
    """A store file does not parse; the message names the file and line."""


class Passdb(Protocol):
    """A source of :class:`PassdbEntry` by normalised username."""

    @property
    def name(self) -> str: ...

    async def lookup(self, user: str, info: RequestInfo | None = None) -> PassdbEntry | None:
        """The entry for ``user``, ``None`` if unknown; raises StoreUnavailable.

        ``info`` is the request (service, addresses) for stores whose query uses them.
        """
        ...


@runtime_checkable
class CountsInternalErrors(Protocol):
    """A store that contains its own unexpected exceptions (as outages) and counts them.

    The daemon sets ``on_internal_error`` to ``Metrics.internal_error``; the store calls
    it with ``"store"`` for each exception it turned into :class:`StoreUnavailable`.
    """

    on_internal_error: Callable[[str], None] | None
