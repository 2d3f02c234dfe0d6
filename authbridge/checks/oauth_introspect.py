"""RFC 7662 token introspection, with a cache of the answers.

The token goes in the POST body (never in a URL, so never in an access log), with the
client's credentials (HTTP Basic). An answer is reused for ``cache_ttl`` seconds, never
past the token's ``exp``; an inactive one for ``negative_ttl``. The cache is keyed by a
keyed BLAKE2b digest of the token (random key per process): it holds no token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from authbridge.checks.oauth_result import INVALID, OK, TokenResult, invalid, unavailable
from authbridge.config import OAuthSettings
from authbridge.observability.logs import get_logger

log = get_logger("authbridge.oauth")


class Introspection:
    def __init__(
        self,
        settings: OAuthSettings,
        client: Any,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self._client, self.clock = settings, client, clock
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, TokenResult]] = {}
        self._failing = False
        self.requests = 0

    def _digest(self, token: bytes) -> bytes:
        return hashlib.blake2b(token, key=self._key, digest_size=16).digest()

    def cached(self, token: bytes) -> TokenResult | None:
        """The cached answer for ``token`` while it holds, else ``None``."""
        key = self._digest(token)
        hit = self._cache.get(key)
        if hit is None:
            return None
        until, result = hit
        if self.clock() >= until:
            del self._cache[key]
            return None
        return result

    async def check(self, token: bytes) -> TokenResult:
        """Ask the provider (one POST); remember a definite answer."""
        s = self.settings
        self.requests += 1
        try:
            response = await self._client.post(
                s.introspection_url,
                data={"token": token.decode("ascii"), "token_type_hint": "access_token"},
                auth=(s.client_id, s.client_secret),
                headers={"Accept": "application/json"},
            )
            if response.status_code != 200:
                raise _Unusable(f"HTTP {response.status_code}")
            answer = response.json()
            if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
                raise _Unusable("not an RFC 7662 answer")
        except Exception as exc:
            why = str(exc) if isinstance(exc, _Unusable) else type(exc).__name__
            if not self._failing:
                log.error("OAuth introspection unavailable", url=s.introspection_url, error=why)
            self._failing = True
            return unavailable(f"introspection failed: {why}")
        if self._failing:
            log.info("OAuth introspection reachable again", url=s.introspection_url)
            self._failing = False
        result = self.judge(answer)
        self._remember(token, result)
        return result

    def judge(self, answer: dict[str, Any]) -> TokenResult:
        """The verdict on an introspection answer (``active``, ``exp``, ``iss``,
        ``aud``, the user name)."""
        s = self.settings
        if not answer["active"]:
            return invalid("token inactive")
        now = self.clock()
        exp = answer.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            if exp + s.clock_skew <= now:
                return invalid("token expired")
        else:
            exp = None
        nbf = answer.get("nbf")
        if isinstance(nbf, int | float) and nbf - s.clock_skew > now:
            return invalid("token not yet valid")
        if s.issuer and "iss" in answer and answer["iss"] != s.issuer:
            return invalid("wrong issuer")
        if s.audience and "aud" in answer:
            aud = answer["aud"]
            auds = aud if isinstance(aud, list) else [aud]
            if not any(a in s.audience for a in auds):
                return invalid("wrong audience")
        user = answer.get(s.username_attribute)
        if not isinstance(user, str) or not user:
            return invalid(f"no {s.username_attribute} in the answer")
        return TokenResult(OK, user=user, expires=float(exp) if exp is not None else None)

    def _remember(self, token: bytes, result: TokenResult) -> None:
        s = self.settings
        now = self.clock()
        if result.outcome == OK:
            until = now + s.cache_ttl
            if result.expires is not None:
                until = min(until, result.expires)
        elif result.outcome == INVALID:
            until = now + s.negative_ttl
        else:
            return
        if until <= now:
            return
        cache = self._cache
        if len(cache) >= s.cache_max_entries:
            # Drop the oldest entry (dicts keep insertion order).
            del cache[next(iter(cache))]
        cache[self._digest(token)] = (until, result)


class _Unusable(Exception):
    pass
