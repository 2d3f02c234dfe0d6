"""Gates applied before any store is asked: TLS-only plaintext and client networks.

Dovecot's auth service enforces neither on its auth-client socket (its login processes
do); authbridge does, as defence in depth, unless it runs in Dovecot-compatible mode.
Each service (the request's ``service=``/``protocol=``) may have gates of its own
(``[policy.service.NAME]``): they are merged with ``[policy]`` once, when the config
loads, so a request finds its gates with one dict lookup, and none at all when no
service has a table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeVar

from authbridge.config import PolicyConfig, ServicePolicy
from authbridge.core.addresses import in_network
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Reason

_T = TypeVar("_T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request fails before any lookup: for the event, the log line and the FAIL."""

    reason: Reason
    #: The log line's ``why=``.
    why: str
    #: Extra fields of the FAIL (``reason=``: what doveadm prints and Postfix shows).
    fields: tuple[tuple[str, str | None], ...] = ()


#: The text Dovecot's own login processes give for the same refusal, so an admin who
#: knows Dovecot recognises it (Dovecot's auth service on this socket never refuses it).
PLAINTEXT_DISALLOWED = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."

PLAINTEXT_INSECURE = Refusal(
    Reason.PLAINTEXT_INSECURE,
    "plaintext mechanism on a session that is not secured",
    (("reason", PLAINTEXT_DISALLOWED),),
)
#: Network refusals say nothing on the wire: the client learns no more than a FAIL.
NO_RIP = Refusal(Reason.POLICY, "request without rip")
OUTSIDE_NETWORKS = Refusal(Reason.POLICY, "client address outside the allowed networks")


@dataclass(frozen=True, slots=True)
class Gates:
    """The effective gates of one service (or of every service without a table)."""

    require_secured: bool
    allowed_networks: tuple[str, ...]
    allow_no_rip: bool
    failure_delay: float
    #: False: the service is exempt from the penalty.
    penalty: bool
    networks: tuple[Network, ...]

    @classmethod
    def of(cls, config: PolicyConfig, service: ServicePolicy | None = None) -> Gates:
        """``[policy]``'s gates, with ``service``'s values where it sets them."""
        s = service or ServicePolicy()
        allowed = config.allowed_networks if s.allowed_networks is None else s.allowed_networks
        return cls(
            require_secured=_pick(s.require_secured, config.require_secured),
            allowed_networks=allowed,
            allow_no_rip=_pick(s.allow_no_rip, config.allow_no_rip),
            failure_delay=_pick(s.failure_delay, config.failure_delay),
            penalty=_pick(s.penalty, True),
            networks=tuple(ipaddress.ip_network(n, strict=False) for n in allowed),
        )

    def refusal(self, info: RequestInfo, plaintext_mechanism: bool) -> Refusal | None:
        """Why the request must fail before any lookup, or ``None`` to let it through."""
        if self.require_secured and plaintext_mechanism and not info.secured:
            return PLAINTEXT_INSECURE
        if self.networks:
            address = info.address
            if address is None:
                if not self.allow_no_rip:
                    return NO_RIP
            elif not any(in_network(address, net) for net in self.networks):
                return OUTSIDE_NETWORKS
        return None


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


class PolicyGate:
    """The gates of every service: :attr:`default`, and :attr:`services` by lowercase
    name (``None`` when no service has a table of its own)."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.default = Gates.of(config)
        self.services: dict[str, Gates] | None = (
            {name: Gates.of(config, service) for name, service in config.services}
            if config.services
            else None
        )

    def gates(self, info: RequestInfo) -> Gates:
        """The gates of the request's service."""
        services = self.services
        if services is None:
            return self.default
        return services.get(info.service.lower(), self.default)

    def refusal(self, info: RequestInfo, plaintext_mechanism: bool) -> Refusal | None:
        """Why the request must fail before any lookup, or ``None`` to let it through."""
        return self.gates(info).refusal(info, plaintext_mechanism)

    def failure_delay(self, info: RequestInfo) -> float:
        """How long the request's FAIL is held."""
        services = self.services
        if services is None:
            return self.default.failure_delay
        return services.get(info.service.lower(), self.default).failure_delay

    def effective(self) -> list[tuple[str, Gates]]:
        """Every service's gates for display: ``*`` (the default) first."""
        return [("*", self.default), *sorted((self.services or {}).items())]
