#!/usr/bin/env python3
"""The cost of validating one bearer token: local JWT vs introspection, cache or not.

    python benchmarks/oauth.py [--rounds N]

Runs the validator authbridge uses (``authbridge.checks.oauth.TokenValidator``) against
the test suite's provider (``tests.support.oauth_provider``: JWKS and RFC 7662
introspection over HTTP on 127.0.0.1, in a thread of this process) and prints the time
per validation, median and 95th percentile, for:

- local JWT validation, RS256 (2048-bit) and ES256 (P-256): keys cached, no I/O;
- introspection without a cache (``cache_ttl = 0``): one HTTP POST per login, on the
  validator's keep-alive connection pool (the provider's side, a Python http.server,
  is part of the figure: a real IdP answers from its own machine, with network
  latency on top);
- introspection with the cache: a hit, no I/O.

The rest of a login (the auth-client protocol, the MTA) is the same for all of them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from authbridge.checks.oauth import TokenValidator  # noqa: E402
from authbridge.config import OAuthSettings  # noqa: E402
from tests.support.oauth_provider import (  # noqa: E402
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    OAuthProvider,
)


def _row(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{name:<38} {statistics.median(ordered) * 1e6:9.1f} µs   p95 {p95 * 1e6:9.1f} µs"
        f"   ({len(ordered)} logins)"
    )


async def _timed(rounds: int, one: Callable[[], Awaitable[object]]) -> list[float]:
    await one()  # warm up: keys fetched, connection open
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        await one()
        out.append(time.perf_counter() - started)
    return out


async def main(rounds: int) -> None:
    provider = OAuthProvider().start()
    try:
        local = TokenValidator(
            OAuthSettings(jwks_url=provider.jwks_url, issuer=ISSUER, audience=(AUDIENCE,))
        )
        remote = dict(
            introspection_url=provider.introspection_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            audience=(AUDIENCE,),
        )
        uncached = TokenValidator(OAuthSettings(**remote, cache_ttl=0.0))  # type: ignore[arg-type]
        cached = TokenValidator(OAuthSettings(**remote, cache_ttl=300.0))  # type: ignore[arg-type]
        rows = []
        for kid, alg in (("k1", "RS256"), ("k2", "ES256")):
            token = provider.token(kid=kid).encode()

            async def jwt_once(token: bytes = token) -> object:
                result = await local.validate(token)
                assert result.ok, result
                return result

            rows.append(_row(f"local JWT {alg}", await _timed(rounds, jwt_once)))
        opaque = provider.opaque().encode()

        async def introspect_uncached() -> object:
            result = await uncached.validate(opaque)
            assert result.ok, result
            return result

        async def introspect_cached() -> object:
            result = await cached.validate(opaque)
            assert result.ok, result
            return result

        rows.append(
            _row(
                "introspection, no cache", await _timed(max(rounds // 10, 50), introspect_uncached)
            )
        )
        rows.append(_row("introspection, cache hit", await _timed(rounds, introspect_cached)))
        print(f"{'validation':<38} {'median':>12}   {'':>13}")
        for row in rows:
            print(row)
        print(
            f"provider requests: JWKS {provider.jwks_requests}, "
            f"introspection {provider.introspection_requests}"
        )
        for validator in (local, uncached, cached):
            await validator.aclose()
    finally:
        provider.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="logins per measurement")
    trio.run(main, parser.parse_args().rounds)
