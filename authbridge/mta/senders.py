"""The per-login allowed-senders map, and its Exim and Postfix file formats.

One source of truth — login -> envelope senders it may use besides the ones it owns
naturally (the login itself when it is an address, ``login@domain`` for each configured
domain) — rendered as Exim ``lsearch`` (keyed by login) or Postfix ``texthash`` (keyed
by sender, listing owners), so both MTAs enforce the same ownership.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from authbridge.mta.errors import SenderMapError

_LOGIN = re.compile(r"^[a-z0-9._+=@-]+$")
_ADDRESS = re.compile(r"^[a-z0-9._+=-]+@[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


def check_login(value: str) -> str:
    login = value.strip().lower()
    if not _LOGIN.match(login):
        raise SenderMapError(f"login {value!r}: only letters, digits and . _ + = @ - are allowed")
    return login


def check_address(value: str) -> str:
    address = value.strip().lower()
    if not _ADDRESS.match(address) or ".." in address:
        raise SenderMapError(f"{value!r} is not a plain envelope address (local@domain)")
    return address


@dataclass(frozen=True)
class SenderMap:
    """login -> extra envelope senders, normalised to lower case and sorted."""

    entries: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Iterable[str]]) -> SenderMap:
        merged: dict[str, set[str]] = {}
        for login, addresses in mapping.items():
            merged.setdefault(check_login(login), set()).update(check_address(a) for a in addresses)
        return cls(tuple((login, tuple(sorted(merged[login]))) for login in sorted(merged)))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def merged(self, other: SenderMap) -> SenderMap:
        mapping: dict[str, list[str]] = {}
        for login, addresses in (*self.entries, *other.entries):
            mapping.setdefault(login, []).extend(addresses)
        return SenderMap.from_mapping(mapping)

    def owners_by_sender(self) -> dict[str, set[str]]:
        owners: dict[str, set[str]] = {}
        for login, addresses in self.entries:
            for address in addresses:
                owners.setdefault(address, set()).add(login)
        return owners


def parse_allow_sender(values: Iterable[str]) -> SenderMap:
    """``--allow-sender LOGIN=ADDR[,ADDR...]`` values."""
    mapping: dict[str, list[str]] = {}
    for value in values:
        login, sep, rest = value.partition("=")
        if not sep or not rest.strip():
            raise SenderMapError(f"--allow-sender {value!r}: expected LOGIN=ADDRESS[,ADDRESS...]")
        mapping.setdefault(login, []).extend(a for a in rest.split(",") if a.strip())
    return SenderMap.from_mapping(mapping)


def parse_login_file(text: str, source: str) -> SenderMap:
    """The per-login text format (``login: addr1, addr2``), which is also Exim's lsearch."""
    mapping: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        login, sep, rest = line.partition(":")
        if not sep:
            raise SenderMapError(f"{source}:{number}: expected 'login: address, address'")
        try:
            addresses = [check_address(a) for a in re.split(r"[,\s]+", rest) if a.strip()]
            mapping.setdefault(check_login(login), []).extend(addresses)
        except SenderMapError as exc:
            raise SenderMapError(f"{source}:{number}: {exc}") from None
    return SenderMap.from_mapping(mapping)


def read_login_file(path: str) -> SenderMap:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SenderMapError(f"cannot read sender map {path}: {exc.strerror}") from None
    return parse_login_file(text, path)


def render_exim_lsearch(sender_map: SenderMap) -> str:
    lines = [
        "# Written by authbridge emit-exim-config (lsearch, keyed by login).",
        "# login: envelope senders it may use besides its own address(es)",
    ]
    lines += [f"{login}: {', '.join(addresses)}" for login, addresses in sender_map.entries]
    return "\n".join(lines) + "\n"


def natural_owners(address: str, domains: Iterable[str]) -> set[str]:
    """Logins that own ``address`` without any map entry."""
    local, _, domain = address.partition("@")
    owners = {address}
    if domain in set(domains):
        owners.add(local)
    return owners


def render_postfix_texthash(sender_map: SenderMap, domains: Iterable[str]) -> str:
    """Sender -> owners. Postfix stops at the first map that knows a sender, so each
    line also names the natural owners, which the regexp map would otherwise supply."""
    domain_list = tuple(domains)
    lines = [
        "# Written by authbridge emit-postfix-config (texthash, keyed by envelope sender).",
        "# sender  logins allowed to use it",
    ]
    for address, owners in sorted(sender_map.owners_by_sender().items()):
        everyone = sorted(owners | natural_owners(address, domain_list))
        lines.append(f"{address}\t{', '.join(everyone)}")
    return "\n".join(lines) + "\n"


def render_postfix_regexp(domains: Iterable[str]) -> str:
    """The ownership every login has without a map entry, as a Postfix regexp table."""
    lines = [
        "# Written by authbridge emit-postfix-config (regexp, keyed by envelope sender).",
    ]
    domain_list = tuple(domains)
    if domain_list:
        alternatives = "|".join(re.escape(d).replace("\\-", "-") for d in domain_list)
        lines.append("# login@domain belongs to login (and to a login spelt as the address)")
        lines.append(f"/^([^@]+)@({alternatives})$/\t${{1}}, ${{1}}@${{2}}")
    lines.append("# an address belongs to the login spelt exactly like it")
    lines.append("/^(.+@.+)$/\t${1}")
    return "\n".join(lines) + "\n"
