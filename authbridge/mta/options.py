"""Command-line options shared by the emitters, and turning them into MtaSettings.

Values come from ``--config`` (authbridge's TOML, via ``authbridge.config.load_config``)
and are overridden by flags, so the MTA config and the daemon cannot disagree about the
socket, the mechanisms or the networks unless the admin asks for it.
"""

from __future__ import annotations

import argparse

from authbridge.config import Config, ConfigError, load_config
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.senders import SenderMap, parse_allow_sender, read_login_file
from authbridge.mta.settings import (
    DEFAULT_MECHANISMS,
    MtaSettings,
    TlsFiles,
    check_hostname,
    check_path,
    parse_domains,
    parse_mechanisms,
    parse_networks,
)


def add_common_arguments(parser: argparse.ArgumentParser, mta: str = "Exim") -> None:
    """The options both emitters take; ``mta`` ("Exim" or "Postfix") names the one whose
    configuration the help texts talk about."""
    sender_map = (
        "without them Exim uses an existing lsearch file as it is"
        if mta == "Exim"
        else "Postfix reads it as a texthash: table"
    )
    group = parser.add_argument_group("what authbridge serves (override --config)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="authbridge TOML configuration: socket, mechanisms and networks come from it "
        "(default: /etc/authbridge/authbridge.toml when it exists)",
    )
    group.add_argument(
        "--socket", metavar="PATH", help=f"authbridge's auth-client socket, where {mta} connects"
    )
    group.add_argument(
        "--mechanisms",
        metavar="LIST",
        help=f"comma-separated SASL mechanisms (default {','.join(DEFAULT_MECHANISMS)})",
    )
    group.add_argument(
        "--networks",
        metavar="CIDRS",
        action="append",
        help="clients that may authenticate, comma-separated CIDRs (default: any)",
    )
    policy = parser.add_argument_group("mail policy")
    policy.add_argument(
        "--domains",
        metavar="LIST",
        action="append",
        help="mail domains: a login may send as login@DOMAIN for each of them",
    )
    policy.add_argument(
        "--allow-sender",
        metavar="LOGIN=ADDR[,ADDR]",
        action="append",
        default=[],
        help="extra envelope senders a login may use (repeatable); written to --sender-map",
    )
    policy.add_argument(
        "--senders-from",
        metavar="FILE",
        help="read extra senders from a 'login: addr, addr' file (written to --sender-map)",
    )
    policy.add_argument(
        "--sender-map",
        metavar="FILE",
        help=f"{mta}'s sender map: written from --allow-sender/--senders-from; {sender_map}",
    )
    policy.add_argument("--hostname", help=f"{mta}'s primary host name (default: {mta}'s own)")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
    tls.add_argument(
        "--allow-auth-without-tls",
        action="store_true",
        help="offer AUTH before STARTTLS (only non-plaintext mechanisms, see next flag)",
    )
    tls.add_argument(
        "--allow-plaintext-without-tls",
        action="store_true",
        help="also offer PLAIN/LOGIN before STARTTLS (passwords in clear text on the wire)",
    )
    output = parser.add_argument_group("writing files")
    output.add_argument(
        "--force",
        action="store_true",
        help="replace files that differ from what would be written"
        + (
            " and write into a --debian-split DIR that is no exim4 directory"
            if mta == "Exim"
            else ""
        ),
    )
    output.add_argument(
        "--diff",
        action="store_true",
        help="show a unified diff against the installed files, write nothing "
        "(exit 1 if they differ)",
    )


def load_authbridge_config(path: str) -> Config:
    """The daemon's own config; its errors (file, line, key) become MtaConfigError."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise MtaConfigError(str(exc)) from None


def sender_entries(args: argparse.Namespace) -> SenderMap:
    entries = parse_allow_sender(args.allow_sender)
    if args.senders_from:
        entries = entries.merged(read_login_file(args.senders_from))
    return entries


def build_settings(
    args: argparse.Namespace,
    *,
    tls_required: bool,
    default_sender_map: str | None = None,
) -> MtaSettings:
    """Merge config and flags into validated settings; ``tls_required``: refuse to go on
    without certificate and key when AUTH needs TLS (a standalone Exim, Postfix)."""
    socket_path = None
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS
    networks: tuple[str, ...] = ()
    if args.config:
        config = load_authbridge_config(args.config)
        socket_path = config.server.socket_path
        mechanisms = tuple(config.server.mechanisms)
        networks = tuple(config.policy.allowed_networks)
    if args.socket:
        socket_path = args.socket
    if args.mechanisms:
        mechanisms = (args.mechanisms,)
    if args.networks:
        networks = tuple(args.networks)
    if not socket_path:
        raise MtaConfigError("the auth socket is unknown: pass --socket PATH or --config FILE")

    if bool(args.tls_cert) != bool(args.tls_key):
        raise MtaConfigError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls_cert:
        tls = TlsFiles(
            cert=check_path(args.tls_cert, "--tls-cert"),
            key=check_path(args.tls_key, "--tls-key"),
            verify_certificates=(
                check_path(args.tls_verify_certificates, "--tls-verify-certificates")
                if getattr(args, "tls_verify_certificates", None)
                else None
            ),
            verify_hosts=parse_networks(getattr(args, "tls_verify_hosts", None) or ()),
            try_verify_hosts=parse_networks(getattr(args, "tls_try_verify_hosts", None) or ()),
        )
    require_tls = not args.allow_auth_without_tls
    if tls is None and require_tls and tls_required:
        raise MtaConfigError(
            "AUTH is offered only after STARTTLS, so TLS needs --tls-cert and --tls-key "
            "(or pass --allow-auth-without-tls)"
        )

    entries = sender_entries(args)
    sender_map_path = args.sender_map or (default_sender_map if entries else None)
    if entries and not sender_map_path:
        raise MtaConfigError("--allow-sender/--senders-from need --sender-map FILE to write to")
    return MtaSettings(
        socket_path=check_path(socket_path, "auth socket"),
        mechanisms=parse_mechanisms(mechanisms),
        networks=parse_networks(networks),
        domains=parse_domains(args.domains or ()),
        tls=tls,
        hostname=check_hostname(args.hostname) if args.hostname else None,
        sender_map_path=check_path(sender_map_path, "--sender-map") if sender_map_path else None,
        sender_map=entries,
        require_tls_for_auth=require_tls,
        plaintext_requires_tls=not args.allow_plaintext_without_tls,
    )
