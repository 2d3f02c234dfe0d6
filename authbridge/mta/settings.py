"""Validated inputs shared by the Exim and Postfix emitters.

Every value that ends up in an MTA configuration is checked here, once: Exim expands
most option values (``$`` and ``\\`` are live) and both MTAs end a value at a newline,
so a path, domain or network that does not look like one is refused with a clear
message rather than quoted and hoped for.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from authbridge.core.mechanisms import REGISTRY
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.senders import SenderMap

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+=,-]*$")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True)
class Mechanism:
    """A SASL mechanism authbridge can serve, and how the MTAs name it."""

    name: str  # authbridge's lower-case name (config, --mechanisms)
    public_name: str  # the SMTP AUTH name (Exim public_name)

    @property
    def plaintext(self) -> bool:
        """The password crosses the wire as is: offer only under TLS (the mechanism's
        own ``Mechanism.plaintext``, the one source of it)."""
        return REGISTRY[self.public_name].plaintext

    @property
    def exim_driver_name(self) -> str:
        return "authbridge_" + self.name.replace("-", "_")


#: Every mechanism the daemon serves, in its registry's order.
MECHANISMS: dict[str, Mechanism] = {
    name.lower(): Mechanism(name.lower(), name) for name in REGISTRY
}

DEFAULT_MECHANISMS: tuple[str, ...] = ("plain", "login", "cram-md5")


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key, plus the optional client-certificate verification knobs."""

    cert: str
    key: str
    verify_certificates: str | None = None
    verify_hosts: tuple[IPNetwork, ...] = ()
    try_verify_hosts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class MtaSettings:
    """Everything an emitter needs, already validated."""

    socket_path: str
    mechanisms: tuple[Mechanism, ...]
    networks: tuple[IPNetwork, ...] = ()
    domains: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    hostname: str | None = None
    sender_map_path: str | None = None
    sender_map: SenderMap = field(default_factory=SenderMap)
    # AUTH (any mechanism) only after STARTTLS.
    require_tls_for_auth: bool = True
    # PLAIN/LOGIN only after STARTTLS (matters only when require_tls_for_auth is off).
    plaintext_requires_tls: bool = True


def check_path(value: str, what: str) -> str:
    """An absolute path made of characters that mean nothing to Exim or Postfix."""
    if not _SAFE_PATH.match(value) or "/../" in value + "/" or value.endswith("/.."):
        raise MtaConfigError(
            f"{what} {value!r} must be an absolute path of letters, digits and _ . / @ + = , -"
        )
    return value


def check_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise MtaConfigError(f"{value!r} is not a domain name (letters, digits, - and .)")
    return domain


def check_hostname(value: str) -> str:
    try:
        return check_domain(value)
    except MtaConfigError:
        raise MtaConfigError(f"--hostname {value!r} is not a fully qualified host name") from None


def parse_networks(values: list[str] | tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """CIDR strings (or bare addresses) to networks; host bits set is an error, not a guess."""
    networks: list[IPNetwork] = []
    for raw in values:
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                network = ipaddress.ip_network(item, strict=True)
            except ValueError as exc:
                raise MtaConfigError(f"network {item!r}: {exc}") from None
            if network not in networks:
                networks.append(network)
    return tuple(networks)


def parse_mechanisms(values: list[str] | tuple[str, ...]) -> tuple[Mechanism, ...]:
    names: list[str] = []
    for raw in values:
        names.extend(part.strip().lower() for part in raw.split(",") if part.strip())
    if not names:
        raise MtaConfigError("no SASL mechanism enabled")
    unknown = [name for name in names if name not in MECHANISMS]
    if unknown:
        raise MtaConfigError(
            f"unknown mechanism(s) {', '.join(unknown)}; known: {', '.join(MECHANISMS)}"
        )
    return tuple(MECHANISMS[name] for name in dict.fromkeys(names))


def parse_domains(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    domains: list[str] = []
    for raw in values:
        domains.extend(check_domain(p) for p in raw.split(",") if p.strip())
    return tuple(dict.fromkeys(domains))
