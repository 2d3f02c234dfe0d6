"""Gates applied before any store is asked: TLS-only plaintext and client networks.

Dovecot's auth service enforces neither on its auth-client socket (its login processes
do); authbridge does, as defence in depth, unless it runs in Dovecot-compatible mode.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from authbridge.config import PolicyConfig
from authbridge.core.addresses import in_network
from authbridge.core.session import RequestInfo
from authbridge.core.verdict import Reason


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


class PolicyGate:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    @cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.config.allowed_networks)

    def refusal(self, info: RequestInfo, plaintext_mechanism: bool) -> Refusal | None:
        """Why the request must fail before any lookup, or ``None`` to let it through."""
        if self.config.require_secured and plaintext_mechanism and not info.secured:
            return PLAINTEXT_INSECURE
        if self._networks:
            address = info.address
            if address is None:
                if not self.config.allow_no_rip:
                    return NO_RIP
            elif not any(in_network(address, net) for net in self._networks):
                return OUTSIDE_NETWORKS
        return None
