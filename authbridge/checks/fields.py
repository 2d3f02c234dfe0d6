"""A store entry's extra fields, interpreted as Dovecot's passdb does.

``nopassword``, ``allow_nets``, ``fail``, ``user=``/``domain=`` rewriting and the
hidden/visible split of fields in replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from authbridge.checks.expand import expand, variables
from authbridge.core.addresses import IPAddress, in_network
from authbridge.core.addresses import network as parse_network
from authbridge.core.session import RequestInfo
from authbridge.observability.logs import get_stdlib_logger
from authbridge.passdb.base import PassdbEntry

log = get_stdlib_logger(__name__)

#: Fields that only switch password checking off: not returned, not even counted.
CONSUMED = frozenset({"nopassword", "noauthenticate"})

#: Extra fields Dovecot acts on itself and never returns to the client.
HIDDEN_FIELDS = frozenset(
    {
        *CONSUMED,
        "user",
        "username",
        "domain",
        "login_user",
        "allow_nets",
        "allow_real_nets",
        "fail",
        "delay_until",
        "password",
        "password_noscheme",
        "passdb_import",
    }
)


@dataclass(frozen=True, slots=True)
class Applied:
    """An entry's extra fields, interpreted."""

    user: str
    visible: tuple[tuple[str, str | None], ...]
    has_fields: bool
    nopassword: bool
    forced_fail: bool
    nets_denied: bool
    client_specific: bool


def networks_allow(spec: str, address: IPAddress | None) -> bool:
    """Dovecot's allow_nets: CIDRs separated by commas/spaces; ``local`` = no rip."""
    for token in spec.replace(",", " ").split():
        if token == "local":
            if address is None:
                return True
            continue
        if address is None:
            continue
        net = parse_network(token)
        if net is None:
            log.warning("ignoring unparsable allow_nets entry", entry=token)
        elif in_network(address, net):
            return True
    return False


def plain_entry(user: str) -> Applied:
    """Most users: no extra fields, nothing to expand or look for."""
    return Applied(user, (), False, False, False, False, False)


def apply_fields(entry: PassdbEntry, user: str, info: RequestInfo) -> Applied:
    """Interpret the entry's extra fields; raises ExpansionError for an unknown %var."""
    if not entry.fields:
        return plain_entry(user)
    visible: list[tuple[str, str | None]] = []
    nets_denied = False
    values = variables(user, info.service, info.rip, info.lip)
    for key, raw in entry.fields:
        value = expand(raw, values) if raw else raw
        if value == "":
            value = None  # a value that expands to nothing is sent as a bare key
        if key in ("user", "username") and value:
            user = value
        elif key == "domain" and value:
            user = f"{user.partition('@')[0]}@{value}"
        elif key == "allow_nets" and value is not None:
            nets_denied = nets_denied or not networks_allow(value, info.address)
        if key not in HIDDEN_FIELDS and not key.startswith("userdb_"):
            visible.append((key, value))
    return Applied(
        user=user,
        visible=tuple(visible),
        # nopassword/noauthenticate are consumed here and never counted (Dovecot 2.3).
        has_fields=any(k not in CONSUMED for k, _ in entry.fields),
        nopassword=entry.has("nopassword") or entry.has("noauthenticate"),
        forced_fail=entry.has("fail"),
        nets_denied=nets_denied,
        client_specific=entry.has("allow_nets") or entry.has("allow_real_nets"),
    )
