"""Types shared by every scheme module: the error, the parsed stored value, the registry entry.

Kept apart from ``__init__`` so scheme modules can import them without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from authbridge.errors import SchemeError as SchemeError  # re-exported

Encoding = Literal["none", "b64", "hex"]

# Which non-plaintext mechanism (besides PLAIN/LOGIN) a scheme's stored data can serve.
Kind = Literal["plain", "cram-md5", "scram-sha-1", "scram-sha-256", "digest-md5", "other"]


@dataclass(frozen=True, slots=True)
class StoredPassword:
    """A stored password split into scheme, encoding suffix and the (undecoded) data."""

    scheme: str
    data: str = field(repr=False)
    encoding: Literal["b64", "hex"] | None = None
    #: ``data`` decoded, kept from its first use (see ``schemes._decoded``): a store
    #: that keeps its parsed entries (a passwd-file, per file version) decodes each
    #: stored hash once, not on every login.
    raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __str__(self) -> str:
        return self.__repr__()


# verify(raw, password, user) -> bool; raw is the decoded stored data.
VerifyFn = Callable[[bytes, bytes, str], bool]
# generate(password, user, rounds) -> raw bytes, encoded afterwards with the scheme's encoding.
GenerateFn = Callable[[bytes, str, "int | None"], bytes]


@dataclass(frozen=True, slots=True)
class Scheme:
    """One registry entry.

    ``raw_len`` and ``encoding`` follow Dovecot: a fixed raw length together with a default
    encoding other than "none" turns on hex/base64 auto-detection.
    """

    name: str
    verify: VerifyFn
    generate: GenerateFn
    encoding: Encoding = "none"
    raw_len: int = 0
    expensive: bool = False
    kind: Kind = "other"
    # For plaintext kinds whose stored form wraps the password (PLAIN-TRUNC's "<len>-").
    extract: Callable[[bytes], bytes] | None = None
