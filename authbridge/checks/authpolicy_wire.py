"""Dovecot's auth-policy protocol, sans I/O: the request body, the hashed password, the
answer.

Dovecot 2.3 (``auth_policy_server_url``) POSTs JSON to ``<url>?command=allow`` before
and after authentication and to ``?command=report`` afterwards; weakforced and Nauthilus
implement the server side. What is built here was checked field by field against the
requests a real Dovecot 2.3.19 sends (tests/interop/test_authpolicy_dovecot.py):

- the body: the ``request_attributes`` pairs sorted by key (``a/b`` keys nest), every
  value a string, then ``success`` and ``policy_reject`` (reports only), then ``tls``;
- ``pwhash``: hex of ``H(nonce || user || NUL || password)`` keeping its first
  ``hash_truncate`` bits, right-aligned in whole bytes; ``user`` is the normalised name,
  and a mechanism without a plaintext password hashes no password at all;
- the answer: ``{"status": N, "msg": "..."}``; N < 0 refuses, N > 0 delays N seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authbridge.checks.expand import expand
from authbridge.config import POLICY_VARIABLES
from authbridge.schemes.digests import DIGESTS


class AttributesError(ValueError):
    """``request_attributes`` does not parse (odd number of words, unknown variable)."""


@dataclass(frozen=True, slots=True)
class Template:
    """``request_attributes`` parsed once: ``(key path, value template)``, sorted."""

    pairs: tuple[tuple[tuple[str, ...], str], ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """``key=value key2=value2``: words split on blanks and ``=``, as Dovecot does."""
        words = text.replace("=", " ").split()
        if len(words) % 2:
            raise AttributesError(f"{words[-1]!r} has no value")
        pairs = sorted(zip(words[::2], words[1::2], strict=True))
        dummy = dict.fromkeys(POLICY_VARIABLES, "x")
        for key, value in pairs:
            if not all(key.split("/")):
                raise AttributesError(f"{key!r} is not a key")
            try:
                expand(value, dummy)
            except ValueError:
                raise AttributesError(f"{key}={value}: unknown variable") from None
        return cls(tuple((tuple(key.split("/")), value) for key, value in pairs))

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The attributes as a JSON object (nested for ``a/b`` keys), in key order."""
        out: dict[str, Any] = {}
        for path, value in self.pairs:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = expand(value, values)
        return out


def hashed_password(
    mech: str, nonce: bytes, user: str, password: bytes | None, truncate_bits: int
) -> str:
    """Dovecot's ``%{hashed_password}``: lower-case hex, ``truncate_bits`` (0: all)."""
    raw = DIGESTS[mech](nonce + user.encode() + b"\x00" + (password or b""))
    bits = len(raw) * 8
    if truncate_bits <= 0 or truncate_bits >= bits:
        return raw.hex()
    size = (truncate_bits + 7) // 8
    value = int.from_bytes(raw, "big") >> (bits - truncate_bits)
    return value.to_bytes(size, "big").hex()


def body(
    attributes: Mapping[str, Any],
    tls: bool,
    success: bool | None = None,
    policy_reject: bool = False,
) -> bytes:
    """The JSON sent: ``success`` given means a ``report``."""
    document = dict(attributes)
    if success is not None:
        document["success"] = success
        document["policy_reject"] = policy_reject
    document["tls"] = tls
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def command_url(base: str, command: str) -> str:
    """``base?command=X``, or ``base&command=X`` when ``base`` already ends with ``&``."""
    return f"{base}command={command}" if base.endswith("&") else f"{base}?command={command}"


class MalformedAnswer(ValueError):
    """The policy server's body is not the JSON object Dovecot expects."""


@dataclass(frozen=True, slots=True)
class Answer:
    #: ``None``: the object had no ``status`` (Dovecot then keeps its fail default).
    status: int | None
    msg: str | None


def parse_answer(data: bytes) -> Answer:
    """``{"status": N, "msg": "..."}``; an empty ``msg`` counts as none."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedAnswer("not JSON") from None
    if not isinstance(document, dict):
        raise MalformedAnswer("not a JSON object")
    status = document.get("status")
    if status is not None and (type(status) is not int):
        raise MalformedAnswer("status is not an integer")
    msg = document.get("msg")
    if msg is not None and not isinstance(msg, str):
        raise MalformedAnswer("msg is not a string")
    return Answer(status, msg or None)
