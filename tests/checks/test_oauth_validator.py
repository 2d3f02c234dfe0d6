"""The bearer token validator against a real HTTP provider (tests.support.oauth_provider):
local JWT validation with the provider's JWKS, RFC 7662 introspection, their caches,
the rate limit on unknown ``kid`` values, and the provider going down."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import jwt
import pytest
import trio

from authbridge.checks.oauth import TokenValidator
from authbridge.config import OAuthSettings
from tests.support.oauth_provider import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    OAuthProvider,
    provider_fixture,
)

provider = provider_fixture("function")


def jwt_settings(provider: OAuthProvider, **changes: object) -> OAuthSettings:
    settings = OAuthSettings(
        jwks_url=provider.jwks_url, issuer=ISSUER, audience=(AUDIENCE,), timeout=2.0
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


def introspection_settings(provider: OAuthProvider, **changes: object) -> OAuthSettings:
    settings = OAuthSettings(
        introspection_url=provider.introspection_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        audience=(AUDIENCE,),
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def validator(provider: OAuthProvider) -> AsyncIterator[TokenValidator]:
    v = TokenValidator(jwt_settings(provider))
    yield v
    await v.aclose()


async def test_good_tokens_of_either_key_give_the_email_claim(
    provider: OAuthProvider, validator: TokenValidator
) -> None:
    for kid in ("k1", "k2"):  # RS256 and ES256
        result = await validator.validate(provider.token(kid=kid).encode())
        assert result.ok and result.user == "alice@example.org", result
    assert provider.jwks_requests == 1  # fetched once, then from the cache
    again = validator.validate_now(provider.token().encode())
    assert again is not None and again.ok  # no I/O once the keys are known


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        # Times relative to the test's run, not to collection (a long run passed an nbf
        # computed at collection): see _at_run_time.
        ({"exp": -120}, "token expired"),
        ({"nbf": +120}, "token not yet valid"),
        ({"aud": "imap"}, "wrong audience"),
        ({"iss": "https://evil.example.net/"}, "wrong issuer"),
        ({"exp": None}, "a required claim is missing"),
        ({"email": None}, "no email claim"),
    ],
)
async def test_bad_claims_are_refused(
    provider: OAuthProvider, validator: TokenValidator, overrides: dict[str, Any], why: str
) -> None:
    result = await validator.validate(provider.token(**_at_run_time(overrides)).encode())
    assert result.outcome == "invalid" and result.why == why


def _at_run_time(overrides: dict[str, Any]) -> dict[str, Any]:
    """``exp``/``nbf`` given as seconds from now, made absolute when the test runs."""
    now = int(time.time())
    relative = ("exp", "nbf")
    return {k: now + v if k in relative and v is not None else v for k, v in overrides.items()}


async def test_clock_skew_is_allowed(provider: OAuthProvider, validator: TokenValidator) -> None:
    token = provider.token(exp=int(time.time()) - 10)  # within the default 30 s
    assert (await validator.validate(token.encode())).ok


async def test_tampered_tokens_are_refused(
    provider: OAuthProvider, validator: TokenValidator
) -> None:
    header, payload, signature = provider.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "mallory@example.org"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    result = await validator.validate(f"{header}.{forged}.{signature}".encode())
    assert result.outcome == "invalid" and result.why == "bad signature"
    unsigned = jwt.encode(provider.claims(), "", algorithm="none", headers={"kid": "k1"})
    assert (await validator.validate(unsigned.encode())).why == "JWT algorithm not allowed"
    # HS256 keyed with the RSA public key (the classic confusion): not an allowed alg.
    hs = jwt.encode(provider.claims(), "s" * 32, algorithm="HS256", headers={"kid": "k1"})
    assert (await validator.validate(hs.encode())).why == "JWT algorithm not allowed"
    # An RS256 token claiming the EC key's kid.
    wrong = provider.token(kid="k1")
    swapped = jwt.encode(
        provider.claims(), provider.keys["k1"].private, algorithm="RS256", headers={"kid": "k2"}
    )
    assert wrong != swapped
    assert (await validator.validate(swapped.encode())).outcome == "invalid"
    assert (await validator.validate(b"not.a.jwt")).outcome == "invalid"


async def test_rotation_fetches_the_new_key_once(
    provider: OAuthProvider, validator: TokenValidator
) -> None:
    assert (await validator.validate(provider.token().encode())).ok
    provider.rotate("k3")
    tokens = [provider.token(f"user{i}@example.org", kid="k3").encode() for i in range(20)]
    results: list[object] = []

    async def one(token: bytes) -> None:
        results.append(await validator.validate(token))

    async with trio.open_nursery() as nursery:
        for token in tokens:
            nursery.start_soon(one, token)
    assert all(getattr(r, "ok", False) for r in results)
    assert provider.jwks_requests == 2  # the first fetch and one refresh, shared by all


async def test_random_kids_cannot_make_us_hammer_the_provider(
    provider: OAuthProvider, validator: TokenValidator
) -> None:
    assert (await validator.validate(provider.token().encode())).ok
    for i in range(50):
        token = jwt.encode(
            provider.claims(),
            provider.keys["k1"].private,
            algorithm="RS256",
            headers={"kid": f"random-{i}"},
        )
        result = await validator.validate(token.encode())
        assert result.outcome == "invalid" and result.why == "unknown signing key (kid)"
    # One refresh for the first unknown kid; the others fall within jwks_min_refresh.
    assert provider.jwks_requests == 2


async def test_provider_down_is_a_temporary_failure(provider: OAuthProvider) -> None:
    validator = TokenValidator(jwt_settings(provider, jwks_min_refresh=0.0))
    try:
        with provider.down():
            result = await validator.validate(provider.token().encode())
            assert result.outcome == "unavailable"
        assert (await validator.validate(provider.token().encode())).ok
        # Keys known, provider down: known keys keep working, a new kid is a tempfail.
        with provider.down():
            assert (await validator.validate(provider.token().encode())).ok
            provider.rotate("k9")
            result = await validator.validate(provider.token(kid="k9").encode())
            assert result.outcome == "unavailable"
    finally:
        await validator.aclose()


async def test_unreachable_provider_is_a_temporary_failure(provider: OAuthProvider) -> None:
    settings = jwt_settings(provider, jwks_url="http://127.0.0.1:9/jwks")
    validator = TokenValidator(settings)
    try:
        assert (await validator.validate(provider.token().encode())).outcome == "unavailable"
    finally:
        await validator.aclose()


async def test_introspection_answers_and_its_cache(provider: OAuthProvider) -> None:
    validator = TokenValidator(introspection_settings(provider))
    try:
        token = provider.opaque("bob@example.org").encode()
        assert validator.validate_now(token) is None  # must ask
        result = await validator.validate(token)
        assert result.ok and result.user == "bob@example.org"
        assert provider.introspection_requests == 1
        cached = validator.validate_now(token)
        assert cached is not None and cached.ok  # answered from the cache
        assert (await validator.validate(token)).ok
        assert provider.introspection_requests == 1
        inactive = provider.opaque(active=False).encode()
        assert (await validator.validate(inactive)).why == "token inactive"
        assert (await validator.validate(inactive)).why == "token inactive"
        assert provider.introspection_requests == 2  # the inactive answer is cached too
        # A JWT without jwks_url is introspected too.
        assert (await validator.validate(provider.token().encode())).ok
        expired = provider.opaque(exp=int(time.time()) - 100).encode()
        assert (await validator.validate(expired)).why == "token expired"
        wrong_aud = provider.opaque(aud="imap").encode()
        assert (await validator.validate(wrong_aud)).why == "wrong audience"
    finally:
        await validator.aclose()


async def test_introspection_cache_never_outlives_the_token(provider: OAuthProvider) -> None:
    now = [time.time()]
    validator = TokenValidator(introspection_settings(provider, cache_ttl=300.0), lambda: now[0])
    try:
        token = provider.opaque(exp=int(now[0]) + 5).encode()
        assert (await validator.validate(token)).ok
        assert validator.validate_now(token) is not None
        now[0] += 6  # past exp, long before cache_ttl
        assert validator.validate_now(token) is None
    finally:
        await validator.aclose()


async def test_introspection_down_or_refusing_us_is_a_temporary_failure(
    provider: OAuthProvider,
) -> None:
    validator = TokenValidator(introspection_settings(provider))
    wrong = TokenValidator(introspection_settings(provider, client_secret="wrong"))
    try:
        token = provider.opaque().encode()
        with provider.down():
            assert (await validator.validate(token)).outcome == "unavailable"
        assert (await wrong.validate(token)).outcome == "unavailable"
        assert (await validator.validate(token)).ok
    finally:
        await validator.aclose()
        await wrong.aclose()


async def test_a_hanging_provider_is_cut_by_the_timeout(provider: OAuthProvider) -> None:
    validator = TokenValidator(introspection_settings(provider, timeout=0.3))
    provider.hang.set()
    try:
        with trio.fail_after(5):
            result = await validator.validate(provider.opaque().encode())
        assert result.outcome == "unavailable"
    finally:
        provider.released.set()
        await validator.aclose()


async def test_the_token_is_in_no_result_and_no_log(
    provider: OAuthProvider, caplog: pytest.LogCaptureFixture
) -> None:
    validator = TokenValidator(jwt_settings(provider, jwks_min_refresh=0.0))
    try:
        tokens = [provider.token(exp=int(time.time()) - 100), provider.token(aud="x")]
        with provider.down():
            tokens.append(provider.token(kid="k2"))
            results = [await validator.validate(t.encode()) for t in tokens]
    finally:
        await validator.aclose()
    for token, result in zip(tokens, results, strict=True):
        for part in token.split("."):
            assert part not in repr(result)
            assert part not in caplog.text


async def test_logins_while_the_provider_is_down_at_start_do_not_refetch_each(
    provider: OAuthProvider,
) -> None:
    validator = TokenValidator(jwt_settings(provider))
    try:
        with provider.down():
            for _ in range(10):
                result = await validator.validate(provider.token().encode())
                assert result.outcome == "unavailable"
        assert provider.jwks_requests == 1  # then one fetch per jwks_min_refresh at most
    finally:
        await validator.aclose()
