"""A small, real OAuth 2.0 provider for tests: JWKS and RFC 7662 introspection.

It listens on 127.0.0.1 (a free port) in a thread of the test process. Its signing
keys are generated here (RSA and EC, with ``cryptography``); :meth:`OAuthProvider.token`
signs JWT access tokens with them (PyJWT), :meth:`OAuthProvider.opaque` issues random
tokens that only introspection knows. ``/jwks`` serves the public keys of
:attr:`OAuthProvider.published`; ``/introspect`` follows RFC 7662 (POST form with
``token``, client authentication by HTTP Basic, ``{"active": ...}``). The test drives
it: rotate keys, go down (HTTP 503) or hang, count requests.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.dovecot import FixtureScope

ISSUER = "https://idp.example.org/realms/mail"
AUDIENCE = "smtp"
CLIENT_ID = "authbridge"
CLIENT_SECRET = "introspection-secret"


class SigningKey:
    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        if kind == "RSA":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        data = json.loads(algorithm.to_jwk(self.private.public_key()))
        data.update(kid=self.kid, use="sig", alg=self.alg)
        return dict(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class OAuthProvider:
    def __init__(self) -> None:
        self.keys = {"k1": SigningKey("k1"), "k2": SigningKey("k2", "EC")}
        #: kids served on /jwks.
        self.published = ["k1", "k2"]
        #: opaque token -> introspection answer.
        self.opaque_tokens: dict[str, dict[str, Any]] = {}
        self.jwks_requests = 0
        self.introspection_requests = 0
        #: 0 = answer; an HTTP status to answer with instead.
        self.failing = 0
        self.hang = threading.Event()
        self.released = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def jwks_url(self) -> str:
        return self.base + "/jwks"

    @property
    def introspection_url(self) -> str:
        return self.base + "/introspect"

    def start(self) -> OAuthProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ tokens

    def claims(self, user: str = "alice@example.org", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "f1c3-" + user.partition("@")[0],
            "email": user,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, user: str = "alice@example.org", kid: str = "k1", **overrides: Any) -> str:
        key = self.keys[kid]
        return jwt.encode(
            self.claims(user, **overrides), key.private, algorithm=key.alg, headers={"kid": kid}
        )

    def opaque(self, user: str = "alice@example.org", active: bool = True, **extra: Any) -> str:
        token = secrets.token_urlsafe(32)
        answer: dict[str, Any] = {"active": active}
        if active:
            answer.update(self.claims(user, **extra))
            answer.update(client_id="thunderbird", token_type="Bearer", username=user)
        self.opaque_tokens[token] = answer
        return token

    def rotate(self, kid: str, kind: str = "RSA") -> None:
        """A new key, published alongside the others (as providers do before use)."""
        self.keys[kid] = SigningKey(kid, kind)
        self.published.append(kid)

    @contextmanager
    def down(self, status: int = 503) -> Iterator[None]:
        self.failing = status
        try:
            yield
        finally:
            self.failing = 0

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body are two writes: without this, Nagle and the client's
                # delayed ACK add 40 ms to every keep-alive answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, body: dict[str, Any] | None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _gate(self) -> bool:
                if provider.hang.is_set():
                    provider.released.wait(30)
                if provider.failing:
                    self._send(provider.failing, {"error": "unavailable"})
                    return False
                return True

            def do_GET(self) -> None:
                if self.path != "/jwks":
                    self._send(404, None)
                    return
                provider.jwks_requests += 1
                if self._gate():
                    keys = [provider.keys[kid].jwk() for kid in provider.published]
                    self._send(200, {"keys": keys})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if self.path != "/introspect":
                    self._send(404, None)
                    return
                provider.introspection_requests += 1
                if not self._gate():
                    return
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self._send(401, {"error": "invalid_client"})
                    return
                form = parse_qs(body)
                token = (form.get("token") or [""])[0]
                answer = provider.opaque_tokens.get(token)
                if answer is None:
                    answer = provider._introspect_jwt(token)
                self._send(200, answer)

        return Handler

    def _introspect_jwt(self, token: str) -> dict[str, Any]:
        """A JWT of ours is active while its signature and times hold (as a real IdP)."""
        try:
            key = self.keys[str(jwt.get_unverified_header(token).get("kid"))]
            claims = jwt.decode(
                token, key.private.public_key(), algorithms=[key.alg], audience=AUDIENCE
            )
        except (jwt.PyJWTError, KeyError):
            return {"active": False}
        return {"active": True, **claims, "username": claims.get("email")}


def provider_fixture(scope: FixtureScope = "module") -> Callable[[], Iterator[OAuthProvider]]:
    """A pytest fixture named ``provider``: a running :class:`OAuthProvider`.

    provider = provider_fixture()
    """

    @pytest.fixture(scope=scope, name="provider")
    def _fixture() -> Iterator[OAuthProvider]:
        running = OAuthProvider().start()
        try:
            yield running
        finally:
            running.stop()

    return _fixture
