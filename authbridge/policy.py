"""Gates applied before any store is asked: TLS-only plaintext and client networks.

Dovecot's auth service enforces neither on its auth-client socket (its login processes
do); authbridge does, as defence in depth, unless it runs in Dovecot-compatible mode.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property

from authbridge.config import PolicyConfig
from authbridge.session import RequestInfo


class PolicyGate:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    @cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.config.allowed_networks)

    def refusal(self, info: RequestInfo, plaintext_mechanism: bool) -> str | None:
        """Why the request must fail before any lookup, or ``None`` to let it through."""
        if self.config.require_secured and plaintext_mechanism and not info.secured:
            return "plaintext mechanism on a session that is not secured"
        if self._networks:
            address = info.address
            if address is None:
                if not self.config.allow_no_rip:
                    return "request without rip"
            elif not any(address in net for net in self._networks):
                return "client address outside the allowed networks"
        return None
