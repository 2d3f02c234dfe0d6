"""SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802), without channel binding, as Dovecot 2.3.

The client proves knowledge of the password without sending it; the server needs only
the stored SCRAM keys (``{SCRAM-SHA-*}`` data, or derived from a plaintext password).
After the proof checks out, the server signature goes back in a CONT, and the client's
(empty) answer to it completes the exchange with OK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import ClassVar

from authbridge.core import wire
from authbridge.core.mechanisms.base import (
    Challenge,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    ScramKeys,
    Step,
    Success,
    decode_text,
)

#: Length of the server's part of the nonce.
SERVER_NONCE_LENGTH = 64


def _unescape_saslname(value: str) -> str | None:
    """``=2C`` → ``,`` and ``=3D`` → ``=``; any other ``=`` makes the name invalid."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "=":
            code = value[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _encode(text: str) -> bytes:
    """Client text back to its bytes: whatever the client sent, UTF-8 or not."""
    return text.encode("utf-8", "surrogateescape")


def _server_nonce() -> str:
    """Printable characters ``!``..``}`` with ``,`` replaced, like Dovecot's."""
    chars = []
    for byte in secrets.token_bytes(SERVER_NONCE_LENGTH):
        ch = chr(byte % (ord("~") - ord("!")) + ord("!"))
        chars.append("~" if ch == "," else ch)
    return "".join(chars)


class _Scram(Mechanism):
    flags: ClassVar[tuple[str, ...]] = ("mutual-auth",)
    algorithm: ClassVar[str]
    digest: ClassVar[str]

    def __init__(self) -> None:
        self._gs2_header: str | None = None
        self._client_first_bare = ""
        self._cnonce = ""
        self._snonce = ""
        self._server_first = ""
        self._keys: ScramKeys | None = None

    def _step(self, data: bytes) -> Step:
        if self._gs2_header is None:
            return self._client_first(decode_text(data))
        if self._keys is None:
            return Failure("unexpected data before the key lookup finished")
        return self._client_final(decode_text(data))

    def _client_first(self, text: str) -> Step:
        first = text.find(",")
        if first < 0:
            return Failure("missing first ',' in GS2 header")
        second = text.find(",", first + 1)
        if second < 0:
            return Failure("missing second ',' in GS2 header")
        cbind_flag, authzid = text[:first], text[first + 1 : second]
        bare = text[second + 1 :]
        fields = bare.split(",")
        if len(fields) < 2:
            return Failure("missing nonce field")
        username_field, nonce_field = fields[0], fields[1]
        if cbind_flag.startswith("p"):
            return Failure("channel binding not supported")
        if cbind_flag[:1] not in ("y", "n"):
            return Failure("invalid GS2 header")
        login = None
        if authzid:
            if not authzid.startswith("a="):
                return Failure("invalid authzid field")
            login = _unescape_saslname(authzid[2:])
            if login is None:
                return Failure("authzid escaping is invalid")
        if username_field.startswith("m"):
            return Failure("mandatory extensions not supported")
        if not username_field.startswith("n="):
            return Failure("invalid username field")
        username = _unescape_saslname(username_field[2:])
        if username is None:
            return Failure("username escaping is invalid")
        if login is not None and login != username:
            # A different authorization identity is a master-user login: no master
            # stores here, so it is refused (Dovecot does the same without them).
            return Failure("master user login attempted without master stores", username=username)
        if not nonce_field.startswith("r="):
            # Dovecot has taken the username by now: the FAIL names it.
            return Failure("invalid client nonce", username=username)
        self._gs2_header = text[: second + 1]
        self._client_first_bare = bare
        self._cnonce = nonce_field[2:]
        return NeedCredentials(username, self.name, early_username=True)

    def resume(self, credentials: Credentials) -> Step:
        keys = credentials.data
        assert isinstance(keys, ScramKeys)
        self._keys = keys
        self._snonce = _server_nonce()
        salt = base64.b64encode(keys.salt).decode()
        self._server_first = f"r={self._cnonce}{self._snonce},s={salt},i={keys.iterations}"
        return Challenge(_encode(self._server_first))

    def _client_final(self, text: str) -> Step:
        assert self._keys is not None and self._gs2_header is not None
        fields = text.split(",")
        if len(fields) < 3:
            return Failure("invalid final client message")
        expected_cbind = "c=" + base64.b64encode(_encode(self._gs2_header)).decode()
        if fields[0] != expected_cbind:
            return Failure("invalid channel binding data")
        if fields[1] != f"r={self._cnonce}{self._snonce}":
            return Failure("wrong nonce")
        proof_field = fields[-1]
        if not proof_field.startswith("p"):
            return Failure("invalid ClientProof")
        try:
            # Dovecot's base64 rules, whitespace skipped, as for the protocol's payloads.
            proof = wire.b64decode_strict(proof_field[2:])
        except wire.InvalidBase64:
            return Failure("invalid base64 in ClientProof")
        size = hashlib.new(self.digest).digest_size
        if len(proof) != size:
            return Failure("invalid ClientProof length")
        without_proof = ",".join(fields[:-1])
        auth_message = _encode(
            ",".join((self._client_first_bare, self._server_first, without_proof))
        )
        client_signature = hmac.new(self._keys.stored_key, auth_message, self.digest).digest()
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(
            hashlib.new(self.digest, client_key).digest(), self._keys.stored_key
        ):
            return Failure("password mismatch", password_mismatch=True)
        server_signature = hmac.new(self._keys.server_key, auth_message, self.digest).digest()
        return Success(b"v=" + base64.b64encode(server_signature))


class ScramSha1(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-1"
    algorithm: ClassVar[str] = "SHA-1"
    digest: ClassVar[str] = "sha1"


class ScramSha256(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-256"
    algorithm: ClassVar[str] = "SHA-256"
    digest: ClassVar[str] = "sha256"
