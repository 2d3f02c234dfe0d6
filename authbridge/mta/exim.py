"""Render the Exim side: authenticators, AUTH advertising, TLS and the sender ACL.

Three shapes of the same policy:

* ``plain`` fragments for a hand-written exim.conf (one section at a time);
* Debian's split configuration (``conf.d/{main,acl,auth}``), using Debian's own macros
  (MAIN_TLS_*, MAIN_ACL_CHECK_MAIL, AUTH_SERVER_ALLOW_NOTLS_PASSWORDS) so that
  ``update-exim4.conf`` assembles it and Debian's own MAIL checks still run;
* a whole standalone exim.conf.

Nothing site-specific is hard-coded: domains, networks, socket and map path all come
from :class:`MtaSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from authbridge.mta.settings import IPNetwork, MtaSettings

MAIL_ACL = "acl_authbridge_check_mail"
RCPT_ACL = "acl_authbridge_check_rcpt"
DEBIAN_MAIL_ACL = "acl_check_mail"

# conf.d file names: update-exim4.conf only takes names matching [[:alnum:]_-]+ (no dots)
# and concatenates them in C-locale order. "00_" sorts after the admin's 000_localmacros
# and before Debian's 02_exim4-config_options, which reads MAIN_ACL_CHECK_MAIL.
DEBIAN_MAIN_FILE = "conf.d/main/00_authbridge"
DEBIAN_ACL_FILE = "conf.d/acl/25_authbridge_check_mail"
DEBIAN_AUTH_FILE = "conf.d/auth/35_authbridge_dovecot"

# Macros our Debian main file defines without .ifndef: a second definition elsewhere
# must fail loudly (update-exim4.conf/exim -bV), never silently bypass our ACL or key.
DEBIAN_STRICT_MACROS = (
    "MAIN_ACL_CHECK_MAIL",
    "MAIN_TLS_CERTIFICATE",
    "MAIN_TLS_PRIVATEKEY",
    "MAIN_TLS_VERIFY_CERTIFICATES",
    "MAIN_TLS_VERIFY_HOSTS",
    "MAIN_TLS_TRY_VERIFY_HOSTS",
    "MAIN_HARDCODE_PRIMARY_HOSTNAME",
)

_HEADER = "# Written by authbridge {command}. Re-run the command instead of editing.\n"


@dataclass(frozen=True)
class StandaloneOptions:
    """Where a standalone Exim keeps its state and listens (ignored by the other shapes)."""

    spool_directory: str = "/var/spool/exim4"
    log_file_path: str = "/var/log/exim4/%slog"
    pid_file_path: str | None = None
    listen: tuple[tuple[str, int], ...] = ()
    mail_spool: str = "/var/mail"


def host_list(networks: tuple[IPNetwork, ...]) -> str:
    """An Exim host list; ';' as separator so IPv6 colons need no doubling."""
    if not networks:
        return "*"
    return "<; " + " ; ".join(str(n) for n in networks)


def auth_advertise_hosts(settings: MtaSettings) -> str:
    hosts = host_list(settings.networks)
    if settings.require_tls_for_auth:
        # empty expansion = an empty host list = AUTH offered to nobody before STARTTLS
        return "${if eq{$tls_in_cipher}{}{}{" + hosts + "}}"
    return hosts


# -- main section ----------------------------------------------------------------------


def main_plain(settings: MtaSettings, command: str = "emit-exim-config") -> str:
    lines = [_HEADER.format(command=command).rstrip("\n")]
    if settings.tls is not None:
        tls = settings.tls
        lines += [
            "tls_advertise_hosts = *",
            f"tls_certificate = {tls.cert}",
            f"tls_privatekey = {tls.key}",
        ]
        if tls.verify_certificates:
            lines.append(f"tls_verify_certificates = {tls.verify_certificates}")
        if tls.verify_hosts:
            lines.append(f"tls_verify_hosts = {host_list(tls.verify_hosts)}")
        if tls.try_verify_hosts:
            lines.append(f"tls_try_verify_hosts = {host_list(tls.try_verify_hosts)}")
    lines += [
        "# AUTH is offered only to these clients"
        + (", and only after STARTTLS" if settings.require_tls_for_auth else ""),
        f"auth_advertise_hosts = {auth_advertise_hosts(settings)}",
        "# if you already have an acl_smtp_mail, keep it and start it with",
        f"#   require acl = {MAIL_ACL}",
        f"acl_smtp_mail = {MAIL_ACL}",
    ]
    return "\n".join(lines) + "\n"


def main_debian(settings: MtaSettings) -> str:
    lines = [
        _HEADER.format(command="emit-exim-config").rstrip("\n"),
        "# Debian split config: macros read by 02_exim4-config_options and",
        "# 03_exim4-config_tlsoptions, plus the options Debian has no macro for.",
    ]
    if settings.hostname:
        lines.append(f"MAIN_HARDCODE_PRIMARY_HOSTNAME = {settings.hostname}")
    if settings.tls is not None:
        tls = settings.tls
        lines += [
            ".ifndef MAIN_TLS_ENABLE",
            "MAIN_TLS_ENABLE = yes",
            ".endif",
            f"MAIN_TLS_CERTIFICATE = {tls.cert}",
            f"MAIN_TLS_PRIVATEKEY = {tls.key}",
        ]
        if tls.verify_certificates:
            lines.append(f"MAIN_TLS_VERIFY_CERTIFICATES = {tls.verify_certificates}")
        if tls.verify_hosts:
            lines.append(f"MAIN_TLS_VERIFY_HOSTS = {host_list(tls.verify_hosts)}")
        if tls.try_verify_hosts:
            lines.append(f"MAIN_TLS_TRY_VERIFY_HOSTS = {host_list(tls.try_verify_hosts)}")
    lines += [
        f"MAIN_ACL_CHECK_MAIL = {MAIL_ACL}",
        "",
        "# AUTH is offered only to these clients"
        + (", and only after STARTTLS" if settings.require_tls_for_auth else ""),
        f"auth_advertise_hosts = {auth_advertise_hosts(settings)}",
    ]
    return "\n".join(lines) + "\n"


def main_standalone(settings: MtaSettings, options: StandaloneOptions) -> str:
    domains = settings.domains
    lines = [
        _HEADER.format(command="emit-exim-config --standalone").rstrip("\n"),
        "# A complete Exim 4 configuration: submission with SMTP AUTH through authbridge.",
        "",
    ]
    if settings.hostname:
        lines.append(f"primary_hostname = {settings.hostname}")
    if domains:
        lines.append(f"qualify_domain = {domains[0]}")
    lines += [
        "domainlist local_domains = " + " : ".join(("@", *domains)),
        "domainlist relay_to_domains =",
        "# nobody relays without authenticating, not even localhost over TCP",
        "hostlist relay_from_hosts =",
        "keep_environment =",
        f"spool_directory = {options.spool_directory}",
        f"log_file_path = {options.log_file_path}",
    ]
    if options.pid_file_path:
        lines.append(f"pid_file_path = {options.pid_file_path}")
    if options.listen:
        interfaces = " ; ".join(f"{addr}.{port}" for addr, port in options.listen)
        lines.append(f"local_interfaces = <; {interfaces}")
    else:
        lines.append("daemon_smtp_ports = 25 : 587")
    lines += [
        "acl_smtp_rcpt = " + RCPT_ACL,
        "",
    ]
    body = main_plain(settings).splitlines()[1:]  # drop the duplicate header
    return "\n".join(lines + body) + "\n"


# -- ACL section -----------------------------------------------------------------------


def _owned_condition(settings: MtaSettings) -> str:
    """An Exim condition: $sender_address belongs to $authenticated_id."""
    tests = ["{eqi{$sender_address}{$authenticated_id}}"]
    if settings.domains:
        domain_list = "<, " + ", ".join(settings.domains)
        tests.append(
            "{and{{eqi{${local_part:$sender_address}}{$authenticated_id}}"
            "{inlisti{${domain:$sender_address}}{" + domain_list + "}}}}"
        )
    if settings.sender_map_path:
        tests.append(
            "{inlisti{$sender_address}"
            "{<, ${lookup{$authenticated_id}lsearch{" + settings.sender_map_path + "}}}}"
        )
    return (
        "${if or{\\\n"
        + "\\\n".join(f"                 {t}" for t in tests)
        + "\\\n               }}"
    )


def acl_mail(settings: MtaSettings, *, chain_to: str | None = None) -> str:
    lines = [
        "# Authenticated clients may only use envelope senders they own: their login,",
        "# login@<each configured domain>, or what the sender map lists for the login.",
        f"{MAIL_ACL}:",
    ]
    if chain_to:
        lines += [
            f"  # keep the checks of the ACL this one replaces ({chain_to})",
            f"  require acl = {chain_to}",
        ]
    lines += [
        "  accept  !authenticated = *",
        "  deny    condition = ${if def:sender_address}",
        "          !condition = " + _owned_condition(settings),
        "          message = 553 5.7.1 Sender address <$sender_address> is not owned by"
        " $authenticated_id",
        "  accept  control = submission",
    ]
    return "\n".join(lines) + "\n"


def acl_rcpt_standalone() -> str:
    return (
        "\n".join(
            [
                f"{RCPT_ACL}:",
                "  # local submissions (sendmail, exim -bs without a client address)",
                "  accept  hosts = :",
                "  deny    local_parts = ^[./|] : ^.*[@%!/|]",
                "          message = restricted characters in address",
                "  accept  authenticated = *",
                "  require message = relay not permitted (authenticate first)",
                "          domains = +local_domains",
                "  require verify = recipient",
                "  accept",
            ]
        )
        + "\n"
    )


# -- authenticators --------------------------------------------------------------------


def authenticators(settings: MtaSettings, *, debian: bool = False) -> str:
    blocks = [
        "# SMTP AUTH is delegated to authbridge over the Dovecot auth protocol;"
        "\n# $auth1 is the login authbridge returns (normalised)."
    ]
    for mechanism in settings.mechanisms:
        lines = [
            f"{mechanism.exim_driver_name}:",
            "  driver = dovecot",
            f"  public_name = {mechanism.public_name}",
            f"  server_socket = {settings.socket_path}",
            "  server_set_id = $auth1",
        ]
        if mechanism.plaintext and settings.plaintext_requires_tls:
            condition = "  server_advertise_condition = ${if def:tls_in_cipher}"
            if debian:
                lines += [".ifndef AUTH_SERVER_ALLOW_NOTLS_PASSWORDS", condition, ".endif"]
            else:
                lines.append(condition)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# -- whole files -----------------------------------------------------------------------


def debian_split_files(settings: MtaSettings) -> dict[str, str]:
    """conf.d-relative path -> content, for update-exim4.conf's split configuration."""
    header = _HEADER.format(command="emit-exim-config --debian-split")
    return {
        DEBIAN_MAIN_FILE: main_debian(settings),
        DEBIAN_ACL_FILE: header + acl_mail(settings, chain_to=DEBIAN_MAIL_ACL),
        DEBIAN_AUTH_FILE: header + authenticators(settings, debian=True),
    }


def standalone(settings: MtaSettings, options: StandaloneOptions) -> str:
    parts = [
        main_standalone(settings, options),
        "\nbegin acl\n\n",
        acl_mail(settings),
        "\n",
        acl_rcpt_standalone(),
        "\nbegin routers\n\n",
        _ROUTERS,
        "\nbegin transports\n\n",
        _TRANSPORTS.format(mail_spool=options.mail_spool),
        "\nbegin retry\n\n",
        "*  *  F,2h,15m; G,16h,1h,1.5; F,4d,6h\n",
        "\nbegin authenticators\n\n",
        authenticators(settings),
    ]
    return "".join(parts)


def section(settings: MtaSettings, name: str, *, debian: bool) -> str:
    """One section as a fragment for stdout (``--section``)."""
    if name == "main":
        return main_debian(settings) if debian else main_plain(settings)
    if name == "acl":
        return acl_mail(settings, chain_to=DEBIAN_MAIL_ACL if debian else None)
    if name == "auth":
        return authenticators(settings, debian=debian)
    raise ValueError(f"unknown section {name!r}")


_ROUTERS = """\
remote_smtp:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  ignore_target_hosts = 0.0.0.0 : 127.0.0.0/8
  no_more

local_user:
  driver = accept
  domains = +local_domains
  check_local_user
  transport = local_delivery
"""

_TRANSPORTS = """\
remote_smtp:
  driver = smtp

local_delivery:
  driver = appendfile
  file = {mail_spool}/$local_part_data
  delivery_date_add
  envelope_to_add
  return_path_add
  group = mail
  mode = 0660
"""
