"""The provider's signing keys (its JWKS), fetched in the background and cached.

Logins never wait for a fetch, except the first token signed with a ``kid`` we do not
know yet (a key rotation): that fetch is single-flight (concurrent logins wait for the
same one) and rate limited (``jwks_min_refresh``), so a client sending random ``kid``
values cannot make us hammer the provider: between two fetches it gets a plain FAIL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import trio

from authbridge.observability.logs import get_logger

log = get_logger("authbridge.oauth")


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or parsed (the message names no secret)."""


class KeySet:
    """The keys of one JWKS URL, by ``kid``."""

    def __init__(
        self,
        url: str,
        client: Any,
        *,
        min_refresh: float,
        refresh: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import jwt  # only processes with [oauth] pay for the import

        self._jwt = jwt
        self.url, self._client, self.clock = url, client, clock
        self.min_refresh, self.refresh_every = min_refresh, refresh
        #: kid ("" for a key without kid) -> the public key and the ``alg`` it declares.
        self.keys: dict[str, tuple[Any, str | None]] = {}
        self.loaded = False
        #: When the last fetch for an unknown kid was started (monotonic); the
        #: background fetches do not count: they are not anyone's doing.
        self.last_forced = float("-inf")
        #: When the last fetch failed (monotonic): before any key is known, logins
        #: fetch again only this long after it.
        self.last_failure = float("-inf")
        self.fetches = 0
        self._inflight: trio.Event | None = None
        self._failing = False
        #: Why the last fetch failed (no secret in it), for ``authbridge check``.
        self.last_error = ""

    def get(self, kid: str | None) -> tuple[Any, str | None] | None:
        return self.keys.get(kid or "")

    def may_refresh(self) -> bool:
        """Whether an unknown ``kid`` may fetch now (a fetch is running: join it)."""
        if self._inflight is not None:
            return True
        since = self.last_forced if self.loaded else self.last_failure
        return self.clock() - since >= self.min_refresh

    async def refresh(self) -> None:
        """Fetch now, or wait for the fetch already running. JwksUnavailable if the
        provider cannot be reached and no keys are known."""
        if self._inflight is not None:
            await self._inflight.wait()
        else:
            done = self._inflight = trio.Event()
            if self.loaded:
                self.last_forced = self.clock()
            try:
                await self._fetch()
            finally:
                self._inflight = None
                done.set()
        if not self.loaded or self._failing:
            raise JwksUnavailable("JWKS unavailable")

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            response = await self._client.get(self.url)
            if response.status_code != 200:
                raise JwksUnavailable(f"JWKS answered HTTP {response.status_code}")
            keys = self.parse(response.content)
        except Exception as exc:
            # httpx's errors name the URL and the kind of failure, never a token.
            why = str(exc) if isinstance(exc, JwksUnavailable) else type(exc).__name__
            if not self._failing:
                log.error("OAuth JWKS unavailable", url=self.url, error=why)
            self._failing = True
            self.last_error = why
            self.last_failure = self.clock()
            return
        if self._failing:
            log.info("OAuth JWKS reachable again", url=self.url)
        self._failing = False
        self.keys, self.loaded = keys, True

    async def probe(self) -> str | None:
        """Fetch once (``authbridge check``): ``None`` when the keys loaded, else why not."""
        await self._fetch()
        return None if self.loaded and not self._failing else self.last_error

    def parse(self, body: bytes) -> dict[str, tuple[Any, str | None]]:
        """The signing keys of a JWKS document; keys we cannot use are skipped."""
        try:
            document = json.loads(body)
            entries = document["keys"]
            if not isinstance(entries, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise JwksUnavailable("JWKS is not a JSON key set") from None
        keys: dict[str, tuple[Any, str | None]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = self._jwt.PyJWK(entry)
            except (self._jwt.PyJWKError, self._jwt.InvalidKeyError, ValueError, TypeError):
                continue
            kid, alg = entry.get("kid"), entry.get("alg")
            keys[kid if isinstance(kid, str) else ""] = (
                key.key,
                alg if isinstance(alg, str) else None,
            )
        return keys

    async def run(self) -> None:
        """Fetch at start, then every ``jwks_refresh`` seconds (sooner while failing)."""
        while True:
            await self._fetch()
            await trio.sleep(self.min_refresh if self._failing else self.refresh_every)
