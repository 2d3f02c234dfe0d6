"""Render the Postfix side: main.cf SASL/TLS lines, a master.cf submission entry, maps.

The policy is the one the Exim emitter writes, in Postfix's terms: AUTH only after
STARTTLS (``smtpd_tls_auth_only``), plaintext mechanisms only under TLS
(``noplaintext`` outside TLS), AUTH offered only to the configured networks
(``smtpd_sasl_exceptions_networks`` lists who is *not* offered it), and the
sender/login ownership check (``smtpd_sender_login_maps`` +
``reject_sender_login_mismatch`` on the submission service).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from authbridge.mta.settings import IPNetwork, MtaSettings

DEFAULT_QUEUE_DIRECTORY = "/var/spool/postfix"


@dataclass(frozen=True)
class PostfixOptions:
    queue_directory: str = DEFAULT_QUEUE_DIRECTORY
    service: str = "submission"  # master.cf service name: "submission" or "ADDR:PORT"
    sender_owner_regexp: str = "/etc/postfix/authbridge_sender_owners.regexp"
    networks_cidr: str = "/etc/postfix/authbridge_networks.cidr"


def sasl_path(settings: MtaSettings, queue_directory: str) -> tuple[str, bool]:
    """(smtpd_sasl_path value, whether smtpd may be chrooted).

    A chrooted smtpd sees only the queue directory, and resolves a relative path
    against it: the socket must live there (Debian's default: private/auth).
    """
    return sasl_path_for(settings.socket_path, queue_directory)


def sasl_path_for(socket_path: str, queue_directory: str) -> tuple[str, bool]:
    """:func:`sasl_path` for a bare socket path (doctor's fix has no MtaSettings)."""
    queue = queue_directory.rstrip("/") + "/"
    if queue != "/" and socket_path.startswith(queue):
        return socket_path[len(queue) :], True
    return socket_path, False


def _postfix_network(network: IPNetwork) -> str:
    if isinstance(network, ipaddress.IPv6Network):
        return f"[{network.network_address}]/{network.prefixlen}"
    return str(network)


def sasl_exceptions_networks(networks: tuple[IPNetwork, ...]) -> str:
    """Clients NOT offered AUTH: everybody except the configured networks."""
    allowed = [f"!{_postfix_network(n)}" for n in networks]
    return ", ".join([*allowed, "0.0.0.0/0", "[::]/0"])


def networks_cidr(networks: tuple[IPNetwork, ...]) -> str:
    """A cidr table: the configured networks pass, everybody else is refused.

    smtpd_sasl_exceptions_networks only hides AUTH from the EHLO reply; Postfix still
    accepts an AUTH command from those clients. This table makes the submission service
    refuse their mail too (authbridge's allowed_networks refuses their AUTH).
    """
    lines = ["# Written by authbridge emit-postfix-config (cidr, keyed by client address)."]
    lines += [f"{network}\tDUNNO" for network in networks]
    refusal = "REJECT 5.7.1 submission is only open to the configured networks"
    lines += [f"0.0.0.0/0\t{refusal}", f"::/0\t{refusal}"]
    return "\n".join(lines) + "\n"


def sender_login_maps(settings: MtaSettings, options: PostfixOptions) -> str:
    maps = []
    if settings.sender_map and settings.sender_map_path:
        maps.append(f"texthash:{settings.sender_map_path}")
    maps.append(f"regexp:{options.sender_owner_regexp}")
    return ", ".join(maps)


def main_cf(settings: MtaSettings, options: PostfixOptions) -> str:
    path, _chroot = sasl_path(settings, options.queue_directory)
    lines = ["# authbridge: SMTP AUTH through authbridge (authbridge emit-postfix-config)"]
    if settings.hostname:
        lines.append(f"myhostname = {settings.hostname}")
    lines += [
        "smtpd_sasl_type = dovecot",
        f"smtpd_sasl_path = {path}",
        "smtpd_sasl_auth_enable = yes",
        "smtpd_sasl_security_options = noanonymous"
        + (", noplaintext" if settings.plaintext_requires_tls else ""),
        "smtpd_sasl_tls_security_options = noanonymous",
        "smtpd_sasl_mechanism_filter = " + ", ".join(m.name for m in settings.mechanisms),
        "smtpd_tls_auth_only = " + ("yes" if settings.require_tls_for_auth else "no"),
    ]
    if settings.tls is not None:
        lines += [
            "smtpd_tls_security_level = may",
            f"smtpd_tls_cert_file = {settings.tls.cert}",
            f"smtpd_tls_key_file = {settings.tls.key}",
        ]
    if settings.networks:
        lines.append(
            f"smtpd_sasl_exceptions_networks = {sasl_exceptions_networks(settings.networks)}"
        )
    lines.append(f"smtpd_sender_login_maps = {sender_login_maps(settings, options)}")
    return "\n".join(lines) + "\n"


def master_cf(settings: MtaSettings, options: PostfixOptions) -> str:
    _path, chroot = sasl_path(settings, options.queue_directory)
    level = "encrypt" if settings.require_tls_for_auth else "may"
    client_checks = "permit_sasl_authenticated,reject"
    if settings.networks:
        client_checks = f"check_client_access,cidr:{options.networks_cidr}," + client_checks
    overrides = [
        "syslog_name=postfix/submission",
        f"smtpd_tls_security_level={level}",
        "smtpd_sasl_auth_enable=yes",
        "smtpd_tls_auth_only=" + ("yes" if settings.require_tls_for_auth else "no"),
        f"smtpd_client_restrictions={client_checks}",
        "smtpd_sender_restrictions=reject_sender_login_mismatch",
        "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        "milter_macro_daemon_name=ORIGINATING",
    ]
    lines = [
        "# authbridge: submission with SMTP AUTH (authbridge emit-postfix-config)",
        f"{options.service} inet n - {'y' if chroot else 'n'} - - smtpd",
        *(f"  -o {item}" for item in overrides),
    ]
    return "\n".join(lines) + "\n"


def notes(settings: MtaSettings, options: PostfixOptions) -> list[str]:
    path, chroot = sasl_path(settings, options.queue_directory)
    found = []
    if not chroot:
        found.append(
            f"smtpd_sasl_path is the absolute {path}: the submission smtpd must not be "
            f"chrooted (chroot column 'n'); to chroot it, make authbridge listen under "
            f"{options.queue_directory}/private/ instead"
        )
    if settings.tls is None:
        found.append(
            "no --tls-cert/--tls-key: smtpd_tls_cert_file and smtpd_tls_key_file must "
            "already be set, or STARTTLS (and with it AUTH) is never offered"
        )
    return found
