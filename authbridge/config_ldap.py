"""The settings of an LDAP store, by Dovecot's ``dovecot-ldap.conf.ext`` names.

One set of checks for two sources: a ``[[store]] type = "ldap"`` table of
authbridge.toml (TOML types: ``auth_bind = true``, ``uris = ["ldap://a", ...]``) and a
plain mapping of Dovecot's own key names and string values (``auth_bind = yes``,
``uris = ldap://a ldap://b``), for ``--dovecot-config``:

    LdapSettings.from_dovecot({"uris": "ldap://ldap.example.org", "base": "..."},
                              "/etc/dovecot/dovecot-ldap.conf.ext", lines={"base": 7})

Both raise :class:`~authbridge.errors.ConfigError` naming the file, the line (when known)
and the key. The Dovecot keys about userdb lookups and iteration (``user_attrs``,
``user_filter``, ``iterate_*``) and libldap tuning without an equivalent here
(``debug_level``, ``blocking``, ``ldaprc_path``) are accepted and ignored
(:data:`IGNORED_DOVECOT_KEYS`); any other unknown key is refused, so a typo is not a
silently missing setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authbridge.errors import ConfigError

SCOPES = ("base", "onelevel", "subtree")
DEREFS = ("never", "searching", "finding", "always")
#: ``tls_require_cert``: libldap's TLS_REQCERT values (Dovecot passes them through).
REQUIRE_CERT = ("never", "allow", "try", "demand", "hard")
#: Dovecot 2.3's defaults.
DEFAULT_PASS_FILTER = "(&(objectClass=posixAccount)(uid=%u))"
DEFAULT_PASS_ATTRS = "uid=user,userPassword=password"
#: Dovecot keys that mean nothing to a password-only store (accepted, ignored).
IGNORED_DOVECOT_KEYS = frozenset(
    {
        "user_attrs",
        "user_filter",
        "iterate_attrs",
        "iterate_filter",
        "debug_level",
        "blocking",
        "ldaprc_path",
        "tls_cipher_suite",
        "sasl_bind",
    }
)
_VARIABLE = re.compile(r"%[LU]?(?:\{([^}]*)\}|(.)|$)")
_SHORT = {"u": "user", "n": "username", "d": "domain", "s": "service", "r": "rip", "l": "lip"}
#: Variables a filter or a bind DN template may use.
TEMPLATE_VARIABLES = frozenset(_SHORT.values())
_URI = re.compile(r"ldaps?://[^\s/]*/?|ldapi://\S*")


@dataclass(frozen=True, slots=True)
class PassAttr:
    """One ``pass_attrs`` item: LDAP attribute ``attr`` read as field ``name``, or (no
    attribute) the field set to ``template`` (``%{ldap:attr}`` and ``%u`` expand)."""

    attr: str
    name: str
    template: str | None = None


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """One LDAP store. ``dnpass`` never appears in a repr, a log or a message."""

    uris: tuple[str, ...]
    base: str
    dn: str = ""
    dnpass: str = field(default="", repr=False)
    scope: str = "subtree"
    deref: str = "never"
    pass_filter: str = DEFAULT_PASS_FILTER
    pass_attrs: tuple[PassAttr, ...] = ()
    default_pass_scheme: str = "CRYPT"
    auth_bind: bool = False
    auth_bind_userdn: str = ""
    #: StartTLS on ``ldap://`` URIs (``ldaps://`` is TLS from the start).
    tls: bool = False
    tls_ca_cert_file: str = ""
    tls_ca_cert_dir: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_require_cert: str = "demand"
    #: authbridge's own: seconds for a connect, a bind or a search before an outage.
    timeout: float = 5.0
    #: authbridge's own: connections (and worker threads) at most, per kind.
    pool_size: int = 4

    @property
    def description(self) -> str:
        """``ldap:URI`` for names and logs (the first URI; never a password)."""
        return f"ldap:{self.uris[0]}"

    @property
    def uses_request(self) -> bool:
        """Whether the filter or the DN template reads %s, %r or %l."""
        return any(
            name in ("service", "rip", "lip")
            for text in (self.pass_filter, self.auth_bind_userdn)
            for name in template_variables(text)
        )

    @classmethod
    def from_dovecot(
        cls, values: Mapping[str, str], source: str, lines: Mapping[str, int] | None = None
    ) -> LdapSettings:
        """The settings of a ``dovecot-ldap.conf.ext`` read into ``values`` (key -> raw
        string); ``lines`` (key -> line number) makes errors point at the line."""
        known = lines or {}

        def where(key: str) -> str:
            line = known.get(key)
            return f"{source}:{line}: {key}" if line else f"{source}: {key}"

        settings = dict(values)
        hosts = settings.pop("hosts", "")
        if hosts and "uris" not in settings:
            settings["uris"] = " ".join(_host_uri(h) for h in hosts.split())
        for key in IGNORED_DOVECOT_KEYS:
            value = settings.pop(key, None)
            if key == "sasl_bind" and value is not None and _bool(value) is True:
                raise ConfigError(f"{where(key)}: SASL binds are not supported (use dn/dnpass)")
        return build(settings, where)


def _host_uri(host: str) -> str:
    bare_ipv6 = host.count(":") > 1 and not host.startswith("[")
    return f"ldap://[{host}]" if bare_ipv6 else f"ldap://{host}"


def template_variables(text: str) -> list[str]:
    """The variable names ``text`` uses (``%u`` as ``user``); ``%%`` is none."""
    names = []
    for match in _VARIABLE.finditer(text):
        long, short = match.group(1), match.group(2)
        if short == "%":
            continue
        names.append(long if long is not None else _SHORT.get(short or "", f"%{short or ''}"))
    return names


def _check_template(text: str, extra: frozenset[str] = frozenset()) -> str | None:
    for name in template_variables(text):
        if name.partition(":")[0] in extra:
            continue
        if name not in TEMPLATE_VARIABLES:
            known = ", ".join(sorted(TEMPLATE_VARIABLES))
            return f"unknown variable {name!r} (known: {known}, as %u %n %d %s %r %l)"
    return None


def parse_pass_attrs(text: str) -> tuple[PassAttr, ...]:
    """Dovecot's ``attr=field, =field=template, attr`` list; ValueError says what is wrong."""
    found = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        attr, eq, rest = item.partition("=")
        attr, rest = attr.strip(), rest.strip()
        if not attr:
            name, eq2, template = rest.partition("=")
            if not name.strip() or not eq2:
                raise ValueError(f"{item!r}: expected =field=value")
            problem = _check_template(template, frozenset({"ldap"}))
            if problem is None:
                problem = _ldap_references(template)
            if problem is not None:
                raise ValueError(f"{item!r}: {problem}")
            found.append(PassAttr("", name.strip().lower(), template.strip()))
            continue
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*", attr):
            raise ValueError(f"{attr!r} is not an LDAP attribute name")
        name = rest if eq else attr
        if not name or "=" in name or "%" in name:
            raise ValueError(f"{item!r}: expected attribute=field")
        found.append(PassAttr(attr, name.lower()))
    return tuple(found)


def _ldap_references(template: str) -> str | None:
    for match in re.finditer(r"%\{ldap:([^}]*)\}", template):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", match.group(1)):
            return f"%{{ldap:{match.group(1)}}} does not name an attribute"
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return value.strip().lower() in ("yes", "true")
    return None


def build(values: Mapping[str, Any], where: Callable[[str], str]) -> LdapSettings:
    """Check every key of ``values`` (TOML types or Dovecot strings) into LdapSettings;
    ``where(key)`` is the ``FILE:LINE: key`` an error about that key starts with."""
    left = dict(values)

    def error(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where(key)}: {problem}")

    def text(key: str, default: str) -> str:
        value = left.pop(key, default)
        if not isinstance(value, str):
            raise error(key, f"expected a string, got {type(value).__name__}")
        return value.strip()

    def flag(key: str, default: bool) -> bool:
        if key not in left:
            return default
        value = _bool(left.pop(key))
        if value is None:
            raise error(key, "expected yes or no (true or false)")
        return value

    def number(key: str, default: float, kind: type = float) -> Any:
        if key not in left:
            return default
        raw = left.pop(key)
        try:
            if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
                raise ValueError
            value = kind(raw)
        except (TypeError, ValueError):
            raise error(key, f"expected a number, got {raw!r}") from None
        if value <= 0:
            raise error(key, "must be greater than 0")
        return value

    def choice(key: str, default: str, choices: tuple[str, ...]) -> str:
        value = text(key, default).lower()
        if value not in choices:
            raise error(key, f"must be one of {', '.join(choices)}")
        return value

    raw_uris = left.pop("uris", None)
    if raw_uris is None:
        raise error("uris", "an ldap store needs uris (ldap://host, ldaps://host)")
    if isinstance(raw_uris, str):
        uris = tuple(raw_uris.split())
    elif isinstance(raw_uris, list) and all(isinstance(u, str) for u in raw_uris):
        uris = tuple(u.strip() for u in raw_uris)
    else:
        raise error("uris", "expected a string or a list of strings")
    if not uris:
        raise error("uris", "an ldap store needs at least one URI")
    for uri in uris:
        if not _URI.fullmatch(uri):
            raise error("uris", f"{uri!r} is not an ldap://, ldaps:// or ldapi:// URI")
    base = text("base", "")
    if not base:
        raise error("base", "an ldap store needs a base (the search base DN)")
    version = left.pop("ldap_version", "3")
    if str(version).strip() != "3":
        raise error("ldap_version", "only LDAP version 3 is supported")
    pass_filter = text("pass_filter", DEFAULT_PASS_FILTER)
    if not (pass_filter.startswith("(") and pass_filter.endswith(")")):
        raise error("pass_filter", "expected an LDAP filter in parentheses")
    problem = _check_template(pass_filter)
    if problem:
        raise error("pass_filter", problem)
    try:
        pass_attrs = parse_pass_attrs(text("pass_attrs", DEFAULT_PASS_ATTRS))
    except ValueError as exc:
        raise error("pass_attrs", str(exc)) from None
    userdn = text("auth_bind_userdn", "")
    problem = _check_template(userdn)
    if problem:
        raise error("auth_bind_userdn", problem)
    auth_bind = flag("auth_bind", False)
    if userdn and not auth_bind:
        raise error("auth_bind_userdn", "only used with auth_bind = yes")
    dn = text("dn", "")
    dnpass = left.pop("dnpass", "")
    if not isinstance(dnpass, str):
        raise error("dnpass", f"expected a string, got {type(dnpass).__name__}")
    if dnpass and not dn:
        raise error("dnpass", "dnpass without dn (the DN to bind as for searches)")
    settings = LdapSettings(
        uris=uris,
        base=base,
        dn=dn,
        dnpass=dnpass,
        scope=choice("scope", "subtree", SCOPES),
        deref=choice("deref", "never", DEREFS),
        pass_filter=pass_filter,
        pass_attrs=pass_attrs,
        default_pass_scheme=text("default_pass_scheme", "CRYPT").upper(),
        auth_bind=auth_bind,
        auth_bind_userdn=userdn,
        tls=flag("tls", False),
        tls_ca_cert_file=text("tls_ca_cert_file", ""),
        tls_ca_cert_dir=text("tls_ca_cert_dir", ""),
        tls_cert_file=text("tls_cert_file", ""),
        tls_key_file=text("tls_key_file", ""),
        tls_require_cert=choice("tls_require_cert", "demand", REQUIRE_CERT),
        timeout=number("timeout", 5.0),
        pool_size=number("pool_size", 4, int),
    )
    if left:
        key = sorted(left)[0]
        raise error(key, "unknown setting")
    return settings
