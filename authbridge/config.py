"""The configuration file (TOML), loaded once into frozen, typed objects.

A reload builds a brand-new :class:`Config` and the server swaps it in whole; a file
that does not load raises :class:`ConfigError`, whose message names the file, the line
and the key, and the old configuration keeps serving.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from authbridge.config_ldap import LdapSettings
from authbridge.config_ldap import build as build_ldap
from authbridge.core.mechanisms import OAUTH_MECHANISMS
from authbridge.core.mechanisms import REGISTRY as MECHANISMS
from authbridge.core.usernames import UsernamePolicy
from authbridge.errors import ConfigError as ConfigError  # re-exported: config.ConfigError

T = TypeVar("T")

DEFAULT_SOCKET = "/var/run/dovecot/auth-client"
STORE_TYPES = ("passwd-file", "exim-file", "sql", "ldap")
SQL_DRIVERS = ("sqlite", "postgresql")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
UNKNOWN_USER_MODES = ("fingerprint", "typed")
#: The tables a config file may have (``store`` as ``[[store]]``, one per store).
TABLES = (
    "server",
    "store",
    "policy",
    "log",
    "metrics",
    "penalty",
    "cache",
    "rehash",
    "app_passwords",
)
#: Tables of optional features, parsed by their own function below.
FEATURE_TABLES = ("auth_policy", "oauth")
#: Postfix gives up on the auth socket after this many seconds.
POSTFIX_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PenaltySettings:
    enabled: bool = True
    #: Seconds of delay for penalty levels 1, 2, 3, ... (the last value repeats).
    steps: tuple[float, ...] = (1.0, 2.0, 4.0, 6.0)
    #: A record with no failure for this long is forgotten.
    forget_after: float = 60.0
    ipv6_prefix: int = 64
    #: Addresses never penalised (e.g. the webmail host).
    trusted_networks: tuple[str, ...] = ()
    #: Bound on tracked addresses; the least recently failed are dropped first.
    max_entries: int = 100_000
    #: Where the penalty lives: "local" (this process) or "redis" (shared by a fleet).
    backend: str = "local"
    #: redis://[:password@]host:port/db, rediss:// (TLS) or unix:///path?db=N.
    redis_url: str = ""
    key_prefix: str = "authbridge:"
    #: Seconds a Redis call may take before this request goes on with local state.
    redis_timeout: float = 0.1
    #: After a Redis failure, seconds on local state before Redis is tried again.
    redis_retry_after: float = 2.0
    #: A file with the fleet's secret (>= 16 bytes) that keys the password
    #: fingerprints; empty: a random key per process (backend "local" only).
    password_fingerprint_key_file: str = ""
    #: Password spraying: per-user failures (all addresses) slow further guesses.
    spraying: bool = True
    #: New wrong guesses at one account (any address) before its FAILs are slowed.
    user_threshold: int = 5
    #: Seconds for spraying levels 1, 2, 3, ... (the last repeats).
    user_steps: tuple[float, ...] = (1.0, 2.0, 4.0)
    #: A user's failure count is forgotten after this long without a new failure.
    user_forget_after: float = 900.0
    #: Distinct failed user names per address (in forget_after) before its level
    #: rises by two per new guess instead of one.
    max_users_per_ip: int = 5


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = False
    ttl: float = 300.0
    negative_ttl: float = 60.0
    max_entries: int = 100_000


#: Schemes a successful PLAIN/LOGIN login moves away from when ``[rehash]`` is on:
#: plaintext and plaintext-equivalent, unsalted or fast-salted digests, old crypt(3).
DEFAULT_WEAK_SCHEMES: tuple[str, ...] = (
    "PLAIN",
    "CLEAR",
    "CLEARTEXT",
    "PLAIN-TRUNC",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "LDAP-MD5",
    "MD5",
    "MD5-CRYPT",
    "SMD5",
    "SHA",
    "SHA1",
    "SSHA",
    "SHA256",
    "SHA512",
    "CRYPT",
    "DES-CRYPT",
    "CRAM-MD5",
    "HMAC-MD5",
    "DIGEST-MD5",
)


@dataclass(frozen=True, slots=True)
class RehashSettings:
    """``[rehash]``: write a stronger hash back after a successful PLAIN/LOGIN login."""

    enabled: bool = False
    #: The scheme written (any scheme ``authbridge pw`` makes).
    scheme: str = "ARGON2ID"
    #: Its cost (``authbridge pw -r``); 0: the scheme's default.
    rounds: int = 0
    #: Stored schemes that are rehashed; the target scheme with a lower cost is too.
    weak: tuple[str, ...] = DEFAULT_WEAK_SCHEMES
    #: Rehash jobs waiting at most; a login that finds the queue full is not rehashed.
    queue_size: int = 1000


#: Dovecot 2.3's ``auth_policy_request_attributes`` default.
DEFAULT_POLICY_ATTRIBUTES = (
    "login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} "
    "device_id=%{client_id} protocol=%s session_id=%{session}"
)
#: Variables ``[auth_policy] request_attributes`` may use (Dovecot's names; %u %n %d %s
#: %r %l are the short forms of the first six).
POLICY_VARIABLES = (
    "user",
    "username",
    "domain",
    "service",
    "rip",
    "lip",
    "rport",
    "lport",
    "mech",
    "session",
    "client_id",
    "requested_username",
    "hashed_password",
)
POLICY_HASH_MECHS = ("md4", "md5", "sha1", "sha256", "sha512")
_POLICY_VARIABLE = re.compile(r"%[LU]?(?:\{([^}]*)\}|(.)|$)")


@dataclass(frozen=True, slots=True)
class AuthPolicySettings:
    """``[auth_policy]``: Dovecot's auth-policy client (weakforced, Nauthilus); off unless
    ``server_url`` is set. Names and defaults are Dovecot's ``auth_policy_*``."""

    server_url: str = field(default="", repr=False)
    #: ``Name: value`` (or a bare value, sent as ``X-API-Key``).
    api_header: str = field(default="", repr=False)
    timeout_msecs: int = 2000
    hash_nonce: str = field(default="", repr=False)
    hash_mech: str = "sha256"
    hash_truncate: int = 12
    request_attributes: str = DEFAULT_POLICY_ATTRIBUTES
    reject_on_fail: bool = False
    check_before_auth: bool = True
    check_after_auth: bool = True
    report_after_auth: bool = True
    log_only: bool = False
    #: Reports waiting to be sent at most; more are dropped (and counted).
    report_queue_size: int = 1000

    @property
    def enabled(self) -> bool:
        return bool(self.server_url)


#: JWT signature algorithms accepted by default: public-key ones only (never ``none``,
#: never a shared-secret HMAC).
OAUTH_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """``[oauth]``: OAuth 2.0 bearer tokens for OAUTHBEARER and XOAUTH2, validated as
    Dovecot's oauth2 passdb does: locally (a JWT signed by a key of the provider's JWKS)
    and/or by RFC 7662 introspection. Off unless ``jwks_url`` or ``introspection_url``."""

    jwks_url: str = ""
    introspection_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    #: The ``iss`` a token must carry ("" = not checked).
    issuer: str = ""
    #: One of these must be in the token's ``aud`` (empty = not checked).
    audience: tuple[str, ...] = ()
    #: The claim (or introspection field) that is the login name.
    username_attribute: str = "email"
    #: A client that names a user (OAUTHBEARER ``a=``, XOAUTH2 ``user=``) must name the
    #: token's user.
    check_authzid: bool = True
    algorithms: tuple[str, ...] = OAUTH_ALGORITHMS
    #: Seconds of clock difference allowed for ``exp``, ``nbf`` and ``iat``.
    clock_skew: float = 30.0
    #: Seconds an HTTP request to the provider may take (then: temporary failure).
    timeout: float = 2.0
    #: Seconds between two JWKS fetches in the background (keys rotate slowly).
    jwks_refresh: float = 3600.0
    #: A token with an unknown ``kid`` refetches the JWKS at most this often.
    jwks_min_refresh: float = 10.0
    #: Seconds an introspection answer is reused (never past the token's ``exp``).
    cache_ttl: float = 60.0
    #: Seconds an "inactive" introspection answer is reused.
    negative_ttl: float = 10.0
    cache_max_entries: int = 10_000

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_url or self.introspection_url)


@dataclass(frozen=True, slots=True)
class AppPasswordSettings:
    """``[app_passwords]``: what holds for every store's app passwords."""

    #: Services (the request's ``service=``) the main password no longer works for.
    require_app_password_for: tuple[str, ...] = ()
    #: The scheme ``authbridge app-password add`` hashes new passwords with.
    scheme: str = "ARGON2ID"
    #: Seconds between two writes of one app password's last-used time.
    used_interval: float = 3600.0


#: The SQL of an sql store's app passwords, by config key (see deploy/sql/*.sql).
#: ``%{label}``, ``%w`` (the hash), ``%{scope}`` (services, comma separated, '' = any),
#: ``%{expires}`` and ``%{time}`` (Unix seconds, '' = none) are bound parameters.
APP_PASSWORD_QUERIES: dict[str, str] = {
    "app_password_query": (
        "SELECT label, password, service, expires_at, last_used FROM app_passwords "
        "WHERE username = '%u' ORDER BY label"
    ),
    "app_password_insert_query": (
        "INSERT INTO app_passwords (username, label, password, service, expires_at, "
        "created_at) VALUES ('%u', %{label}, %w, NULLIF(%{scope}, ''), "
        "CAST(NULLIF(%{expires}, '') AS bigint), CAST(%{time} AS bigint))"
    ),
    "app_password_delete_query": (
        "DELETE FROM app_passwords WHERE username = '%u' AND label = %{label}"
    ),
    "app_password_used_query": (
        "UPDATE app_passwords SET last_used = CAST(%{time} AS bigint) "
        "WHERE username = '%u' AND label = %{label}"
    ),
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    socket_path: str = DEFAULT_SOCKET
    socket_mode: int = 0o660
    socket_owner: str | None = None
    socket_group: str | None = None
    mechanisms: tuple[str, ...] = ("plain", "login", "cram-md5")
    #: ``host:port`` pairs for an optional TCP listener (MTAs on other hosts).
    tcp_listen: tuple[str, ...] = ()
    tcp_allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_connections: int = 20000
    max_requests_per_connection: int = 10000
    #: Seconds a connection may sit idle; Postfix keeps its connection open for minutes.
    idle_timeout: float = 900.0
    #: Seconds an abandoned request lives before it is forgotten silently.
    request_timeout: float = 150.0
    #: Serving processes sharing the listening sockets; 1 = a single process, no supervisor.
    workers: int = 1
    #: Seconds a worker may go without a keep-alive before the supervisor replaces it.
    worker_watchdog: float = 30.0


#: Dovecot's ``result_success``/``result_failure``/``result_internalfail`` values.
PASSDB_RULES = ("return", "return-ok", "return-fail", "continue", "continue-ok", "continue-fail")
#: Dovecot's passdb ``skip`` values.
PASSDB_SKIPS = ("never", "authenticated", "unauthenticated")


@dataclass(frozen=True, slots=True)
class PassdbRules:
    """How a passdb of a site's dovecot.conf takes part in the chain (Dovecot's names and
    defaults); a store without rules is tried the authbridge way (first that knows the
    user decides)."""

    result_success: str = "return-ok"
    result_failure: str = "continue"
    result_internalfail: str = "continue"
    skip: str = "never"
    #: ``deny = yes``: a user this passdb knows is refused, whatever the password.
    deny: bool = False
    #: The name looked up (passwd-file ``username_format``); ``%u``: the request's user.
    username_format: str = "%u"
    #: Mechanisms (upper case) this passdb is used for; empty: all.
    mechanisms: tuple[str, ...] = ()
    #: ``username_filter`` patterns (``*``, ``?``, ``!`` negates); empty: every user.
    username_filter: tuple[str, ...] = ()
    #: ``FILE:LINE`` of the passdb section, for logs.
    where: str = ""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    type: str
    #: The file of a file store (for ``sql``: unused, see ``dsn``).
    path: str = ""
    default_scheme: str = "CRYPT"
    #: ``sql`` stores: ``sqlite`` or ``postgresql``.
    driver: str = ""
    #: ``sql`` stores: a file path (sqlite) or a libpq connection string (postgresql).
    dsn: str = field(default="", repr=False)
    #: ``sql`` stores: Dovecot-style query; %u %n %d %s %r become bound parameters.
    password_query: str = ""
    #: ``sql`` stores: ``[rehash]``'s write (%u, %w the new hash, %{old} the verified one);
    #: empty: this store is not rehashed.
    update_query: str = ""
    #: ``sql`` stores: seconds before a query counts as an outage.
    timeout: float = 5.0
    pool_size: int = 4
    #: File stores: the companion file of app passwords ("" = none).
    app_password_file: str = ""
    #: ``sql`` stores: the app password queries by key (empty: no app passwords).
    app_password_queries: tuple[tuple[str, str], ...] = ()
    #: ``ldap`` stores: every setting, by Dovecot's names (``dnpass`` never shown).
    ldap: LdapSettings | None = None
    #: A passdb of ``--dovecot-config``: Dovecot's chaining rules (``None``: a [[store]]).
    rules: PassdbRules | None = None


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """``[policy.service.NAME]``: the gates of one service (the request's ``service=`` or
    ``protocol=``); ``None`` keeps the value of ``[policy]``."""

    require_secured: bool | None = None
    allowed_networks: tuple[str, ...] | None = None
    allow_no_rip: bool | None = None
    failure_delay: float | None = None
    #: False exempts the service from ``[penalty]`` (address penalty and spraying).
    penalty: bool | None = None


#: What a service name in ``[policy.service.NAME]`` may look like (lowercase; requests
#: are matched without regard to case).
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    #: Refuse PLAIN/LOGIN unless the client marks the session ``secured``.
    require_secured: bool = True
    #: Clients (``rip``) allowed to authenticate at all; empty = everyone.
    allowed_networks: tuple[str, ...] = ()
    #: Whether a request with no ``rip`` passes the network check.
    allow_no_rip: bool = True
    failure_delay: float = 2.0
    #: On an internal failure, close the connection so the MTA answers 4xx.
    tempfail_disconnects: bool = True
    #: An unusable stored hash is an internal failure (Dovecot 2.3: a plain FAIL).
    broken_hash_is_tempfail: bool = True
    #: An OK carrying ``nologin`` becomes a FAIL (Exim and Postfix would accept it).
    nologin_refuses: bool = True
    #: Speak Dovecot 2.4's level to a client whose VERSION minor asks for it (>= 3);
    #: off, every client is answered as Dovecot 2.3 answers (--dovecot-compat).
    protocol_24: bool = True
    #: Per-service overrides of the gates above, by lowercase service name.
    services: tuple[tuple[str, ServicePolicy], ...] = ()


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = "auto"
    level: str = "info"
    #: Login names no store recognised: ``fingerprint`` (may be passwords) or ``typed``.
    unknown_users: str = "fingerprint"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    stores: tuple[StoreConfig, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    penalty: PenaltySettings = field(default_factory=PenaltySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    source: str = "<defaults>"
    rehash: RehashSettings = field(default_factory=RehashSettings)
    app_passwords: AppPasswordSettings = field(default_factory=AppPasswordSettings)

    @property
    def has_app_passwords(self) -> bool:
        """Whether any store has app passwords (or the main password is refused somewhere)."""
        return bool(self.app_passwords.require_app_password_for) or any(
            store.app_password_file or store.app_password_queries for store in self.stores
        )

    auth_policy: AuthPolicySettings = field(default_factory=AuthPolicySettings)
    oauth: OAuthSettings = field(default_factory=OAuthSettings)
    #: How login names are normalised (``--dovecot-config``: auth_username_format,
    #: auth_default_realm, auth_username_chars).
    usernames: UsernamePolicy = field(default_factory=UsernamePolicy)

    @property
    def dovecot_chain(self) -> bool:
        """Whether the stores are a dovecot.conf passdb chain (Dovecot's result rules)."""
        return any(store.rules is not None for store in self.stores)

    def dovecot_compatible(self) -> Config:
        """The same setup, behaving exactly like Dovecot 2.3 on the wire."""
        return replace(
            self,
            policy=replace(
                self.policy,
                require_secured=False,
                allowed_networks=(),
                allow_no_rip=True,
                tempfail_disconnects=False,
                broken_hash_is_tempfail=False,
                nologin_refuses=False,
                protocol_24=False,
                services=(),
            ),
            penalty=replace(self.penalty, enabled=False),
        )


# ---------------------------------------------------------------------- loading

_DEF = ServerConfig()


class _Reader:
    """Typed access to one TOML table, with errors that point into the file."""

    def __init__(self, source: str, text: str, table: Mapping[str, Any], prefix: str) -> None:
        self.source, self.text, self.table, self.prefix = source, text, table, prefix
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        dotted = f"{self.prefix}.{key}" if self.prefix else key
        return ConfigError(f"{self.where(key)}: {dotted}: {problem}")

    def where(self, key: str) -> str:
        """``FILE:LINE`` of ``key`` in this table (``FILE`` alone when not found)."""
        line = self.line(key)
        return f"{self.source}:{line}" if line else self.source

    def line(self, key: str) -> int | None:
        if isinstance(self.table.get(key), dict | list) and _is_table(self.table[key]):
            dotted = f"{_section_name(self.prefix)}.{key}" if self.prefix else key
            header = _header_line(self.text, dotted)
            if header:
                return header
        return _line_of(self.text, key, self.prefix)

    def is_set(self, key: str) -> bool:
        return key in self.table

    def get(
        self, key: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None
    ) -> T:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {kind.__name__}, got {type(value).__name__}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.error(key, problem)
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        return tuple(value)

    def networks(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        values = self.strings(key, default)
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise self.error(key, f"{value!r} is not a network in CIDR form") from None
        return values

    def finish(self) -> None:
        """Refuse the first (in file order) key this table does not have, with a guess."""
        unknown = [key for key in self.table if key not in self.used]
        if not unknown:
            return
        key = min(unknown, key=lambda k: self.line(k) or 1 << 30)
        guess = _did_you_mean(key, self.used)
        if _is_table(self.table[key]):
            dotted = f"{_section_name(self.prefix)}.{key}" if self.prefix else key
            raise ConfigError(f"{self.where(key)}: unknown table {dotted!r}{guess}")
        raise self.error(key, f"unknown setting{guess}")


def _is_table(value: Any) -> bool:
    """A TOML table or array of tables (``[name]`` / ``[[name]]``), not a plain value."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(item, dict) for item in value)
    return isinstance(value, dict)


def _did_you_mean(word: str, known: set[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_name(prefix: str) -> str:
    """``store[1]`` -> ``store``: the name its header carries in the file."""
    return prefix.partition("[")[0]


_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*([^\]\n]+?)[ \t]*\]\]?", re.MULTILINE)


def _headers(text: str) -> list[tuple[str, re.Match[str]]]:
    """Every table header of the file with its dotted name, quotes and spaces removed."""
    found = []
    for match in _HEADER.finditer(text):
        parts = [part.strip().strip("\"'") for part in match.group(1).split(".")]
        found.append((".".join(parts), match))
    return found


def _header_line(text: str, dotted: str) -> int | None:
    """Line of the first ``[dotted]`` or ``[[dotted]]`` header (tomllib gives no lines)."""
    for name, match in _headers(text):
        if name == dotted:
            return text.count("\n", 0, match.start()) + 1
    return None


def _line_of(text: str, key: str, section: str = "") -> int | None:
    """Best-effort line number of ``key`` inside ``section`` (for error messages).

    The key is looked for between the section's header (the nth for ``store[n]``) and
    the next header; top-level keys before the first header.
    """
    headers = _headers(text)
    name, _, index = section.partition("[")
    start, end = 0, len(text)
    if name:
        own = [match for dotted, match in headers if dotted == name]
        nth = int(index.rstrip("]")) if index else 0
        if nth >= len(own):
            return None
        start = own[nth].end()
    following = [match.start() for _, match in headers if match.start() >= start]
    if following:
        end = following[0]
    pattern = re.compile(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*[=.]", re.MULTILINE)
    match = pattern.search(text, start, end)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


#: More serving processes than this is a typo, not a tuning.
MAX_WORKERS = 64


def parse_workers(value: int | str) -> int:
    """``workers``: a count, or ``"auto"`` for one per core; ConfigError says what is wrong."""
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(value, str):
        if not value.isdigit():
            raise ConfigError('expected a number of processes or "auto"')
        value = int(value)
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"must be between 1 and {MAX_WORKERS}")
    return value


def _workers(srv: _Reader) -> int:
    srv.used.add("workers")
    value = srv.table.get("workers", _DEF.workers)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise srv.error("workers", f'expected a number or "auto", got {type(value).__name__}')
    try:
        return parse_workers(value)
    except ConfigError as exc:
        raise srv.error("workers", str(exc)) from None


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    """A check accepting ``choices`` only; the refusal lists them and guesses the intent."""

    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}{_did_you_mean(value, choices)}"

    return check


def total_delay_problem(failure_delay: float, penalty: PenaltySettings) -> str | None:
    """Why a failure delay plus the largest penalty step would outlast Postfix, or None.

    A request waits for the larger of its address's step and its account's spraying
    step (never both), so the largest of either counts."""
    if not penalty.enabled:
        return None
    largest = max(penalty.steps)
    if penalty.spraying and max(penalty.user_steps) > largest:
        largest = max(penalty.user_steps)
        what = "spraying step (user_steps)"
    else:
        what = "penalty step"
    if failure_delay + largest < POSTFIX_TIMEOUT:
        return None
    return (
        f"failure_delay ({failure_delay:g} s) plus the largest {what} "
        f"({largest:g} s) must stay below Postfix's {POSTFIX_TIMEOUT:g} s timeout"
    )


def _check_total_delay(
    policy: PolicyConfig, penalty: PenaltySettings, pol: _Reader, pen: _Reader
) -> None:
    """Blame the setting the file actually sets: steps, else failure_delay (both: steps)."""
    problem = total_delay_problem(policy.failure_delay, penalty)
    if problem is None:
        return
    if "user_steps" in problem and (pen.is_set("user_steps") or not pol.is_set("failure_delay")):
        raise pen.error("user_steps", problem)
    if pen.is_set("steps") or not pol.is_set("failure_delay"):
        raise pen.error("steps", problem)
    raise pol.error("failure_delay", problem)


def _mode(value: str) -> str | None:
    return None if re.fullmatch(r"0?[0-7]{3,4}", value) else 'must be an octal mode like "0660"'


def _table(reader_root: _Reader, name: str) -> Mapping[str, Any]:
    reader_root.used.add(name)
    value = reader_root.table.get(name, {})
    if not isinstance(value, dict):
        raise reader_root.error(name, "expected a table")
    return value


def parse_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    root = _Reader(source, text, data, "")
    # A misspelt table name first: its settings would otherwise be silently missing.
    root.used.update(TABLES + FEATURE_TABLES)
    root.finish()

    srv = _Reader(source, text, _table(root, "server"), "server")
    mechanisms = srv.strings("mechanisms", _DEF.mechanisms)
    for name in mechanisms:
        if name.upper() not in MECHANISMS:
            names = tuple(n.lower() for n in MECHANISMS)
            known = ", ".join(sorted(names))
            guess = _did_you_mean(name.lower(), names)
            raise srv.error("mechanisms", f"unknown mechanism {name!r} (known: {known}){guess}")
    if not mechanisms:
        raise srv.error("mechanisms", "at least one mechanism is needed")
    server = ServerConfig(
        socket_path=srv.get("socket", str, DEFAULT_SOCKET),
        socket_mode=int(srv.get("socket_mode", str, "0660", _mode), 8),
        socket_owner=srv.get("socket_owner", str, "") or None,
        socket_group=srv.get("socket_group", str, "") or None,
        mechanisms=tuple(m.lower() for m in mechanisms),
        tcp_listen=srv.strings("tcp_listen", ()),
        tcp_allowed_networks=srv.networks("tcp_allowed_networks", _DEF.tcp_allowed_networks),
        max_connections=srv.get("max_connections", int, _DEF.max_connections, _positive),
        max_requests_per_connection=srv.get(
            "max_requests_per_connection", int, _DEF.max_requests_per_connection, _positive
        ),
        idle_timeout=srv.get("idle_timeout", float, _DEF.idle_timeout, _positive),
        request_timeout=srv.get("request_timeout", float, _DEF.request_timeout, _positive),
        workers=_workers(srv),
        worker_watchdog=srv.get("worker_watchdog", float, _DEF.worker_watchdog, _positive),
    )
    srv.finish()

    root.used.add("store")
    raw_stores = data.get("store", [])
    if isinstance(raw_stores, dict):
        raw_stores = [raw_stores]
    if not isinstance(raw_stores, list):
        raise root.error("store", "expected [[store]] tables")
    stores: list[StoreConfig] = []
    for index, raw in enumerate(raw_stores):
        st = _Reader(source, text, raw, f"store[{index}]")
        kind = st.get("type", str, "passwd-file")
        if kind not in STORE_TYPES:
            known = ", ".join(STORE_TYPES)
            guess = _did_you_mean(kind, STORE_TYPES)
            raise st.error("type", f"unknown store type {kind!r} (known: {known}){guess}")
        if kind == "ldap":
            stores.append(_ldap_store(st, base_dir))
            continue
        default_scheme = st.get("default_scheme", str, "MD5" if kind == "sql" else "CRYPT")
        if kind == "sql":
            driver = st.get("driver", str, "", _one_of(SQL_DRIVERS))
            dsn = st.get("dsn", str, "")
            if not dsn:
                raise st.error("dsn", "an sql store needs a dsn (sqlite: a file path)")
            if driver == "sqlite" and base_dir is not None and not Path(dsn).is_absolute():
                dsn = str(base_dir / dsn)
            query = st.get("password_query", str, "")
            if not query:
                raise st.error("password_query", "an sql store needs a password_query")
            stores.append(
                StoreConfig(
                    kind,
                    default_scheme=default_scheme.upper(),
                    driver=driver,
                    dsn=dsn,
                    password_query=query,
                    update_query=st.get("update_query", str, ""),
                    timeout=st.get("timeout", float, 5.0, _positive),
                    pool_size=st.get("pool_size", int, 4, _positive),
                    app_password_queries=_app_password_queries(st),
                )
            )
            st.finish()
            continue
        path = st.get("path", str, "")
        if not path:
            raise st.error("path", "a store needs a path")
        if base_dir is not None and not Path(path).is_absolute():
            path = str(base_dir / path)
        app_file = st.get("app_passwords", str, "")
        if app_file and base_dir is not None and not Path(app_file).is_absolute():
            app_file = str(base_dir / app_file)
        if app_file and os.path.abspath(app_file) == os.path.abspath(path):
            raise st.error("app_passwords", "must be a file of its own, not the store's path")
        stores.append(StoreConfig(kind, path, default_scheme.upper(), app_password_file=app_file))
        st.finish()

    pol = _Reader(source, text, _table(root, "policy"), "policy")
    policy = PolicyConfig(
        require_secured=pol.get("require_secured", bool, True),
        allowed_networks=pol.networks("allowed_networks", ()),
        allow_no_rip=pol.get("allow_no_rip", bool, True),
        failure_delay=pol.get("failure_delay", float, 2.0, _not_negative),
        tempfail_disconnects=pol.get("tempfail_disconnects", bool, True),
        broken_hash_is_tempfail=pol.get("broken_hash_is_tempfail", bool, True),
        nologin_refuses=pol.get("nologin_refuses", bool, True),
        protocol_24=pol.get("protocol_24", bool, True),
        services=_service_policies(pol, source, text),
    )
    pol.finish()

    lg = _Reader(source, text, _table(root, "log"), "log")
    log_config = LogConfig(
        format=lg.get("format", str, "auto", _one_of(LOG_FORMATS)),
        level=lg.get("level", str, "info", _one_of(LOG_LEVELS)),
        unknown_users=lg.get("unknown_users", str, "fingerprint", _one_of(UNKNOWN_USER_MODES)),
    )
    lg.finish()

    met = _Reader(source, text, _table(root, "metrics"), "metrics")
    metrics = MetricsConfig(listen=met.get("listen", str, "") or None)
    met.finish()

    pen = _Reader(source, text, _table(root, "penalty"), "penalty")
    pdef = PenaltySettings()
    steps = pen.get("steps", list, list(pdef.steps))
    if not steps or not all(isinstance(x, int | float) and 0 <= x < 10 for x in steps):
        raise pen.error("steps", "expected a non-empty list of seconds, each below 10")
    penalty = PenaltySettings(
        enabled=pen.get("enabled", bool, pdef.enabled),
        steps=tuple(float(x) for x in steps),
        forget_after=pen.get("forget_after", float, pdef.forget_after, _positive),
        ipv6_prefix=pen.get(
            "ipv6_prefix",
            int,
            pdef.ipv6_prefix,
            lambda v: None if 16 <= v <= 128 else "must be between 16 and 128",
        ),
        trusted_networks=pen.networks("trusted_networks", ()),
        max_entries=pen.get("max_entries", int, pdef.max_entries, _positive),
        **_fleet_settings(pen, pdef, base_dir),
    )
    pen.finish()
    _check_total_delay(policy, penalty, pol, pen)
    _check_service_delays(policy, penalty, pol)

    ca = _Reader(source, text, _table(root, "cache"), "cache")
    cdef = CacheSettings()
    cache = CacheSettings(
        enabled=ca.get("enabled", bool, cdef.enabled),
        ttl=ca.get("ttl", float, cdef.ttl, _not_negative),
        negative_ttl=ca.get("negative_ttl", float, cdef.negative_ttl, _not_negative),
        max_entries=ca.get("max_entries", int, cdef.max_entries, _positive),
    )
    ca.finish()
    rehash = _rehash_settings(_Reader(source, text, _table(root, "rehash"), "rehash"))
    ap = _Reader(source, text, _table(root, "auth_policy"), "auth_policy")
    auth_policy = _auth_policy_settings(ap, base_dir)
    app_passwords = _app_password_settings(
        _Reader(source, text, _table(root, "app_passwords"), "app_passwords")
    )
    oauth = _oauth_settings(_Reader(source, text, _table(root, "oauth"), "oauth"), base_dir)
    server = _with_oauth_mechanisms(server, oauth, srv)
    root.finish()
    return Config(
        server,
        tuple(stores),
        policy,
        log_config,
        metrics,
        penalty,
        cache,
        source,
        rehash,
        app_passwords,
        auth_policy=auth_policy,
        oauth=oauth,
    )


def _service_policies(
    pol: _Reader, source: str, text: str
) -> tuple[tuple[str, ServicePolicy], ...]:
    """``[policy.service.NAME]`` tables: each key of ``[policy]``'s gates, checked alike."""
    services = _table(pol, "service")
    found = []
    for name, table in services.items():
        where = _Reader(source, text, services, "policy.service")
        if not isinstance(table, dict):
            raise where.error(name, "expected a table ([policy.service.NAME])")
        if not SERVICE_NAME.fullmatch(name):
            problem = "a service name is lowercase letters, digits, '.', '_' or '-'"
            raise where.error(name, problem)
        sv = _Reader(source, text, table, f"policy.service.{name}")
        found.append(
            (
                name,
                ServicePolicy(
                    require_secured=_optional(sv, "require_secured", bool),
                    allowed_networks=(
                        sv.networks("allowed_networks", ())
                        if sv.is_set("allowed_networks")
                        else None
                    ),
                    allow_no_rip=_optional(sv, "allow_no_rip", bool),
                    failure_delay=_optional(sv, "failure_delay", float, _not_negative),
                    penalty=_optional(sv, "penalty", bool),
                ),
            )
        )
        sv.finish()
    return tuple(found)


def _optional(
    reader: _Reader, key: str, kind: type[T], check: Callable[[T], str | None] | None = None
) -> T | None:
    """``key``'s value, or None when the table does not set it (inherit)."""
    reader.used.add(key)
    if not reader.is_set(key):
        return None
    return reader.get(key, kind, None, check)  # type: ignore[arg-type]


def _check_service_delays(policy: PolicyConfig, penalty: PenaltySettings, pol: _Reader) -> None:
    """A service's failure delay plus the penalty it gets must stay below Postfix's timeout."""
    for name, service in policy.services:
        if service.failure_delay is None or service.penalty is False:
            continue
        problem = total_delay_problem(service.failure_delay, penalty)
        if problem is not None:
            where = _Reader(pol.source, pol.text, {"failure_delay": 0}, f"policy.service.{name}")
            raise where.error("failure_delay", problem)


def _ldap_store(st: _Reader, base_dir: Path | None) -> StoreConfig:
    """A ``[[store]] type = "ldap"`` table: Dovecot's dovecot-ldap.conf.ext keys, checked
    by :func:`authbridge.config_ldap.build` (errors name file, line and key)."""
    values = {key: value for key, value in st.table.items() if key != "type"}
    st.used.update(st.table)
    settings = build_ldap(values, lambda key: f"{st.where(key)}: {st.prefix}.{key}")
    if base_dir is not None:
        paths: dict[str, Any] = {}
        for key in ("tls_ca_cert_file", "tls_ca_cert_dir", "tls_cert_file", "tls_key_file"):
            value = getattr(settings, key)
            if value and not Path(value).is_absolute():
                paths[key] = str(base_dir / value)
        settings = replace(settings, **paths)
    return StoreConfig("ldap", default_scheme=settings.default_pass_scheme, ldap=settings)


def oauth_mechanism_problem(mechanisms: tuple[str, ...], oauth: OAuthSettings) -> str | None:
    """Why the mechanism list cannot be served with this ``[oauth]``, or None."""
    named = [m for m in mechanisms if m.upper() in OAUTH_MECHANISMS]
    if named and not oauth.enabled:
        return f"{named[0]} needs an [oauth] table with jwks_url or introspection_url"
    return None


def _with_oauth_mechanisms(
    server: ServerConfig, oauth: OAuthSettings, srv: _Reader
) -> ServerConfig:
    """``[oauth]`` on and no OAuth mechanism named: both are offered (after the others);
    named ones are offered as listed; named without ``[oauth]``: refused."""
    problem = oauth_mechanism_problem(server.mechanisms, oauth)
    if problem is not None:
        raise srv.error("mechanisms", problem)
    if not oauth.enabled or any(m.upper() in OAUTH_MECHANISMS for m in server.mechanisms):
        return server
    return replace(server, mechanisms=(*server.mechanisms, "oauthbearer", "xoauth2"))


def _http_url(reader: _Reader, key: str) -> str:
    url = reader.get(key, str, "")
    if url and not url.startswith(("http://", "https://")):
        raise reader.error(key, "expected an http:// or https:// URL")
    return url


def _inline_or_file(reader: _Reader, key: str, base_dir: Path | None) -> tuple[str, Path | None]:
    """A secret given as ``key`` or read from the file ``key_file`` (not both; relative
    to the config's folder): its text, and the file it came from."""
    value = reader.get(key, str, "")
    file_key = f"{key}_file"
    name = reader.get(file_key, str, "")
    if value and name:
        raise reader.error(file_key, f"give {key} or {file_key}, not both")
    if not name:
        return value, None
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        return path.read_text(encoding="utf-8").strip(), path
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise reader.error(file_key, f"cannot read {path}: {why}") from None


def _oauth_settings(oa: _Reader, base_dir: Path | None) -> OAuthSettings:
    """``[oauth]``: every key checked; introspection needs the client's credentials."""
    d = OAuthSettings()
    jwks = _http_url(oa, "jwks_url")
    introspection = _http_url(oa, "introspection_url")
    secret, _ = _inline_or_file(oa, "client_secret", base_dir)
    client_id = oa.get("client_id", str, "")
    if introspection and not (client_id and secret):
        raise oa.error(
            "introspection_url", "needs client_id and client_secret (or client_secret_file)"
        )
    algorithms = oa.strings("algorithms", d.algorithms)
    for name in algorithms:
        if name not in OAUTH_ALGORITHMS:
            raise oa.error(
                "algorithms",
                f"unknown or unsafe algorithm {name!r} (known: {', '.join(OAUTH_ALGORITHMS)})",
            )
    settings = OAuthSettings(
        jwks_url=jwks,
        introspection_url=introspection,
        client_id=client_id,
        client_secret=secret,
        issuer=oa.get("issuer", str, ""),
        audience=oa.strings("audience", ()),
        username_attribute=oa.get(
            "username_attribute",
            str,
            d.username_attribute,
            lambda v: None if v else "must not be empty",
        ),
        check_authzid=oa.get("check_authzid", bool, d.check_authzid),
        algorithms=algorithms or d.algorithms,
        clock_skew=oa.get("clock_skew", float, d.clock_skew, _not_negative),
        timeout=oa.get("timeout", float, d.timeout, _positive),
        jwks_refresh=oa.get("jwks_refresh", float, d.jwks_refresh, _positive),
        jwks_min_refresh=oa.get("jwks_min_refresh", float, d.jwks_min_refresh, _not_negative),
        cache_ttl=oa.get("cache_ttl", float, d.cache_ttl, _not_negative),
        negative_ttl=oa.get("negative_ttl", float, d.negative_ttl, _not_negative),
        cache_max_entries=oa.get("cache_max_entries", int, d.cache_max_entries, _positive),
    )
    oa.finish()
    return settings


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
PENALTY_BACKENDS = ("local", "redis")
#: The shortest fleet secret accepted for the password fingerprints.
MIN_FINGERPRINT_KEY = 16


def _fleet_settings(pen: _Reader, pdef: PenaltySettings, base_dir: Path | None) -> dict[str, Any]:
    """``[penalty]``'s shared-state and spraying keys (issue 18)."""
    backend = pen.get("backend", str, pdef.backend, _one_of(PENALTY_BACKENDS))
    url = pen.get("redis_url", str, pdef.redis_url)
    if backend == "redis" and not url.startswith(REDIS_SCHEMES):
        raise pen.error("redis_url", 'backend = "redis" needs a redis://, rediss:// or unix:// URL')
    key_file = pen.get("password_fingerprint_key_file", str, "")
    if key_file and base_dir is not None and not Path(key_file).is_absolute():
        key_file = str(base_dir / key_file)
    if key_file:
        try:
            size = len(Path(key_file).read_bytes().strip())
        except OSError as exc:
            raise pen.error(
                "password_fingerprint_key_file", f"cannot read: {exc.strerror}"
            ) from None
        if size < MIN_FINGERPRINT_KEY:
            problem = f"the key must have at least {MIN_FINGERPRINT_KEY} bytes"
            raise pen.error("password_fingerprint_key_file", problem)
    elif backend == "redis":
        problem = 'backend = "redis" needs the fleet\'s shared key (one file on every host)'
        raise pen.error("password_fingerprint_key_file", problem)
    user_steps = pen.get("user_steps", list, list(pdef.user_steps))
    if not user_steps or not all(isinstance(x, int | float) and 0 <= x < 10 for x in user_steps):
        raise pen.error("user_steps", "expected a non-empty list of seconds, each below 10")
    return {
        "backend": backend,
        "redis_url": url,
        "key_prefix": pen.get("key_prefix", str, pdef.key_prefix),
        "redis_timeout": pen.get("redis_timeout", float, pdef.redis_timeout, _positive),
        "redis_retry_after": pen.get("redis_retry_after", float, pdef.redis_retry_after, _positive),
        "password_fingerprint_key_file": key_file,
        "spraying": pen.get("spraying", bool, pdef.spraying),
        "user_threshold": pen.get("user_threshold", int, pdef.user_threshold, _positive),
        "user_steps": tuple(float(x) for x in user_steps),
        "user_forget_after": pen.get("user_forget_after", float, pdef.user_forget_after, _positive),
        "max_users_per_ip": pen.get("max_users_per_ip", int, pdef.max_users_per_ip, _positive),
    }


_SERVICE = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _app_password_queries(st: _Reader) -> tuple[tuple[str, str], ...]:
    """An sql store's ``app_passwords = true`` and its queries (defaults: the table of
    deploy/sql/); empty when off. A query set without ``app_passwords`` is refused."""
    enabled = st.get("app_passwords", bool, False)
    queries = []
    for key, default in APP_PASSWORD_QUERIES.items():
        query = st.get(key, str, default, lambda v: None if v.strip() else "must not be empty")
        if st.is_set(key) and not enabled:
            raise st.error(key, "set app_passwords = true in this store to use it")
        queries.append((key, query))
    return tuple(queries) if enabled else ()


def _app_password_settings(ap: _Reader) -> AppPasswordSettings:
    """``[app_passwords]``: settings shared by every store's app passwords."""
    from authbridge.schemes import available_schemes  # only configs with the table pay

    adef = AppPasswordSettings()
    required = tuple(s.lower() for s in ap.strings("require_app_password_for", ()))
    for service in required:
        if not _SERVICE.fullmatch(service):
            raise ap.error("require_app_password_for", f"{service!r} is not a service name")
    scheme = adef.scheme
    if ap.is_set("scheme"):
        known = tuple(available_schemes())
        scheme = ap.get("scheme", str, adef.scheme).upper()
        if scheme not in known:
            raise ap.error("scheme", f"unknown scheme {scheme!r}{_did_you_mean(scheme, known)}")
        if scheme in ("OTP", "DIGEST-MD5", "PLAIN", "CLEAR", "CLEARTEXT"):
            raise ap.error("scheme", f"{scheme} cannot hash app passwords")
    settings = AppPasswordSettings(
        require_app_password_for=required,
        scheme=scheme,
        used_interval=ap.get("used_interval", float, adef.used_interval, _positive),
    )
    ap.finish()
    return settings


def _rehash_settings(rh: _Reader) -> RehashSettings:
    """``[rehash]``: off unless ``enabled = true`` (the other keys are checked either way)."""
    from authbridge.schemes import available_schemes  # only configs with [rehash] pay

    known = tuple(available_schemes())
    rdef = RehashSettings()
    enabled = rh.get("enabled", bool, rdef.enabled)
    scheme = rh.get("scheme", str, rdef.scheme).upper()
    if scheme not in known:
        raise rh.error("scheme", f"unknown scheme {scheme!r}{_did_you_mean(scheme, known)}")
    if scheme in ("OTP", "DIGEST-MD5"):
        raise rh.error("scheme", f"{scheme} cannot be a rehash target (needs more than a password)")
    rounds = rh.get("rounds", int, rdef.rounds, _not_negative)
    weak = tuple(name.upper() for name in rh.strings("weak", rdef.weak))
    for name in weak:
        if name not in known:
            raise rh.error("weak", f"unknown scheme {name!r}{_did_you_mean(name, known)}")
    if scheme in weak:
        raise rh.error("scheme", f"{scheme} is listed in rehash.weak: it would be rehashed again")
    rehash = RehashSettings(
        enabled=enabled,
        scheme=scheme,
        rounds=rounds,
        weak=weak,
        queue_size=rh.get("queue_size", int, rdef.queue_size, _positive),
    )
    rh.finish()
    return rehash


def _auth_policy_settings(ap: _Reader, base_dir: Path | None) -> AuthPolicySettings:
    """``[auth_policy]``: every key checked; a nonce is required once ``server_url`` is set."""
    d = AuthPolicySettings()
    url = ap.get("server_url", str, "")
    if url and not url.startswith(("http://", "https://")):
        ap.used.discard("server_url")
        raise ap.error("server_url", "expected an http:// or https:// URL")
    nonce, path = _inline_or_file(ap, "hash_nonce", base_dir)
    if path is not None and not nonce:
        raise ap.error("hash_nonce_file", f"{path} is empty")
    if url and not nonce:
        raise ap.error("server_url", "needs hash_nonce or hash_nonce_file (the cluster-wide nonce)")
    attributes = ap.get("request_attributes", str, d.request_attributes, _policy_attributes)
    settings = AuthPolicySettings(
        server_url=url,
        api_header=ap.get("api_header", str, ""),
        timeout_msecs=ap.get("timeout_msecs", int, d.timeout_msecs, _positive),
        hash_nonce=nonce,
        hash_mech=ap.get("hash_mech", str, d.hash_mech, _one_of(POLICY_HASH_MECHS)),
        hash_truncate=ap.get(
            "hash_truncate",
            int,
            d.hash_truncate,
            lambda v: None if 0 <= v <= 512 else "must be between 0 (no truncation) and 512",
        ),
        request_attributes=attributes,
        reject_on_fail=ap.get("reject_on_fail", bool, d.reject_on_fail),
        check_before_auth=ap.get("check_before_auth", bool, d.check_before_auth),
        check_after_auth=ap.get("check_after_auth", bool, d.check_after_auth),
        report_after_auth=ap.get("report_after_auth", bool, d.report_after_auth),
        log_only=ap.get("log_only", bool, d.log_only),
        report_queue_size=ap.get("report_queue_size", int, d.report_queue_size, _positive),
    )
    ap.finish()
    return settings


def _policy_attributes(text: str) -> str | None:
    """``key=value ...`` with known variables only (the words split on blanks and ``=``)."""
    words = text.replace("=", " ").split()
    if not words or len(words) % 2:
        return "expected key=value pairs"
    for value in words[1::2]:
        for match in _POLICY_VARIABLE.finditer(value):
            long, short = match.group(1), match.group(2)
            if long is None and short is None:
                return f"{value!r}: a lone % at the end"
            name = long if long is not None else _POLICY_SHORT.get(short or "", "")
            if short == "%":
                continue
            if name not in POLICY_VARIABLES:
                shown = long if long is not None else short
                return f"unknown variable {shown!r} (known: {', '.join(POLICY_VARIABLES)})"
    return None


_POLICY_SHORT = {
    "u": "user",
    "n": "username",
    "d": "domain",
    "s": "service",
    "r": "rip",
    "l": "lip",
}


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse_config(text, str(p), p.parent.resolve())
