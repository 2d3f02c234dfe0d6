"""Bearer token validation for OAUTHBEARER and XOAUTH2 (``[oauth]``).

Two ways, as Dovecot's oauth2 passdb: a JWT is checked locally against the provider's
signing keys (``jwks_url``: signature, ``iss``, ``aud``, ``exp``, ``nbf`` with
``clock_skew``), anything else (or every token, without ``jwks_url``) is asked of the
provider by RFC 7662 introspection. PyJWT (with ``cryptography``) does the JOSE work;
httpx (on trio) the HTTP, with one connection pool per process, and only processes
with ``[oauth]`` import either.

:meth:`TokenValidator.validate_now` answers without I/O when it can (a JWT whose key
is known, a cached introspection answer): most logins never leave the sync path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from authbridge import __version__
from authbridge.checks.oauth_introspect import Introspection
from authbridge.checks.oauth_keys import JwksUnavailable, KeySet
from authbridge.checks.oauth_result import OK, TokenResult, invalid, unavailable
from authbridge.config import OAuthSettings

#: httpx logs every request at INFO: our own lines say what matters, once per outage.
logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_CONNECTIONS = 20
KEEPALIVE_EXPIRY = 30.0


def looks_like_jwt(token: bytes) -> bool:
    return token.count(b".") == 2


class TokenValidator:
    """The validator for one ``[oauth]`` configuration (one per serving process)."""

    def __init__(self, settings: OAuthSettings, clock: Callable[[], float] = time.time) -> None:
        import httpx  # only processes with [oauth] pay for the imports
        import jwt

        self.settings = settings
        self._jwt = jwt
        self._scope = trio.CancelScope()
        self.clock = clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            headers={"User-Agent": f"authbridge/{__version__} (oauth)"},
            trust_env=False,
        )
        self.keys = (
            KeySet(
                settings.jwks_url,
                self._client,
                min_refresh=settings.jwks_min_refresh,
                refresh=settings.jwks_refresh,
            )
            if settings.jwks_url
            else None
        )
        self.introspection = (
            Introspection(settings, self._client, clock=clock)
            if settings.introspection_url
            else None
        )

    # ------------------------------------------------------------------ validation

    def validate_now(self, token: bytes) -> TokenResult | None:
        """The result when no I/O is needed; ``None``: use :meth:`validate`."""
        keys = self.keys
        if keys is not None and looks_like_jwt(token):
            header = self._header(token)
            if isinstance(header, TokenResult):
                return header
            key = keys.get(header.get("kid"))
            if key is None:
                if keys.may_refresh():
                    return None
                if not keys.loaded:
                    return unavailable("JWKS unavailable")
                return invalid("unknown signing key (kid)")
            return self._decode(token, key, header)
        if self.introspection is not None:
            return self.introspection.cached(token)
        return invalid("not a JWT and no introspection_url")

    async def validate(self, token: bytes) -> TokenResult:
        result = self.validate_now(token)
        if result is not None:
            return result
        keys = self.keys
        if keys is not None and looks_like_jwt(token):
            header = self._header(token)
            if isinstance(header, TokenResult):
                return header
            try:
                await keys.refresh()
            except JwksUnavailable:
                return unavailable("JWKS unavailable")
            key = keys.get(header.get("kid"))
            if key is None:
                return invalid("unknown signing key (kid)")
            return self._decode(token, key, header)
        assert self.introspection is not None
        return await self.introspection.check(token)

    def _header(self, token: bytes) -> dict[str, Any] | TokenResult:
        try:
            header = self._jwt.get_unverified_header(token)
        except self._jwt.PyJWTError:
            return invalid("malformed JWT header")
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            return invalid("JWT algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return invalid("malformed JWT header")
        return header

    def _decode(
        self, token: bytes, key: tuple[Any, str | None], header: dict[str, Any]
    ) -> TokenResult:
        s = self.settings
        jwt = self._jwt
        alg = header["alg"]
        public_key, declared = key
        if declared is not None and declared != alg:
            return invalid("JWT algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=public_key,
                algorithms=[alg],
                audience=list(s.audience) or None,
                issuer=s.issuer or None,
                leeway=s.clock_skew,
                options={"require": ["exp"], "verify_aud": bool(s.audience)},
            )
        except jwt.ExpiredSignatureError:
            return invalid("token expired")
        except jwt.ImmatureSignatureError:
            return invalid("token not yet valid")
        except jwt.InvalidAudienceError:
            return invalid("wrong audience")
        except jwt.InvalidIssuerError:
            return invalid("wrong issuer")
        except jwt.InvalidSignatureError:
            return invalid("bad signature")
        except jwt.MissingRequiredClaimError:
            return invalid("a required claim is missing")
        except (jwt.PyJWTError, ValueError, TypeError):
            return invalid("malformed JWT")
        user = claims.get(s.username_attribute)
        if not isinstance(user, str) or not user:
            return invalid(f"no {s.username_attribute} claim")
        exp = claims.get("exp")
        return TokenResult(OK, user=user, expires=float(exp) if exp is not None else None)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """The background JWKS fetch (nothing to do for introspection alone), until
        :meth:`aclose`."""
        with self._scope:
            if self.keys is not None:
                await self.keys.run()
            else:
                await trio.sleep_forever()

    async def aclose(self) -> None:
        """Stop :meth:`run` and close the connection pool (a reload replaced us)."""
        self._scope.cancel()
        await self._client.aclose()
