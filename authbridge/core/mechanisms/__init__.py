"""The SASL mechanisms authbridge serves, by the name clients ask for."""

from __future__ import annotations

from authbridge.core.mechanisms.base import Mechanism
from authbridge.core.mechanisms.cram_md5 import CramMd5
from authbridge.core.mechanisms.login import Login
from authbridge.core.mechanisms.oauth import OAuthBearer, XOAuth2
from authbridge.core.mechanisms.plain import Plain
from authbridge.core.mechanisms.scram import ScramSha1, ScramSha256
from authbridge.errors import ConfigError

#: Every mechanism authbridge knows, keyed by its upper-case SASL name.
REGISTRY: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (Plain, Login, CramMd5, ScramSha1, ScramSha256, OAuthBearer, XOAuth2)
}
#: The mechanisms that carry an OAuth 2.0 token: offered only with ``[oauth]``.
OAUTH_MECHANISMS = frozenset({OAuthBearer.name, XOAuth2.name})


class UnknownMechanism(ConfigError):
    """A configured mechanism name that authbridge does not implement."""


def resolve(names: tuple[str, ...] | list[str]) -> tuple[type[Mechanism], ...]:
    """Map configured names (any case) to mechanism classes, keeping their order."""
    out: list[type[Mechanism]] = []
    for name in names:
        cls = REGISTRY.get(name.upper())
        if cls is None:
            known = ", ".join(sorted(n.lower() for n in REGISTRY))
            raise UnknownMechanism(f"unknown mechanism {name!r} (known: {known})")
        if cls not in out:
            out.append(cls)
    return tuple(out)
