"""``authbridge emit-postfix-config``: the Postfix side of SMTP AUTH through authbridge.

Prints the main.cf lines and the master.cf submission entry (``--section`` picks one)
and the sender-ownership maps they name. Nothing is written unless ``--write`` is given:
then the maps go under ``--map-dir`` (which must exist: a host without Postfix gets no
/etc/postfix), with the same idempotent, ``--force`` and ``--diff`` behaviour as
``emit-exim-config``. main.cf and master.cf are never touched; the admin adds the lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from authbridge.commands.defaults import config_path
from authbridge.mta import postfix
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.files import PlannedFile
from authbridge.mta.options import add_common_arguments, build_settings
from authbridge.mta.report import apply_plan, print_notes, socket_warnings
from authbridge.mta.senders import render_postfix_regexp, render_postfix_texthash
from authbridge.mta.settings import check_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--section",
        choices=("main", "master", "all"),
        default="all",
        help="print the main.cf lines, the master.cf entry, or both and the maps (default)",
    )
    add_common_arguments(parser, mta="Postfix")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the sender maps under --map-dir (default: print them, write nothing)",
    )
    pf = parser.add_argument_group("Postfix")
    pf.add_argument(
        "--map-dir",
        metavar="DIR",
        default="/etc/postfix",
        help="where the sender maps live, an existing directory (default /etc/postfix)",
    )
    pf.add_argument(
        "--queue-directory",
        metavar="DIR",
        default=postfix.DEFAULT_QUEUE_DIRECTORY,
        help="Postfix's queue_directory, the chroot of smtpd (default /var/spool/postfix)",
    )
    pf.add_argument(
        "--postfix-user",
        metavar="USER",
        default="postfix",
        help="the user smtpd runs as, for the socket permission check (default postfix)",
    )
    pf.add_argument(
        "--service",
        metavar="NAME",
        default="submission",
        help="master.cf service name of the entry, e.g. submission or 127.0.0.1:587",
    )


def run(args: argparse.Namespace) -> int:
    args.config = config_path(args.config)  # /etc/authbridge/authbridge.toml if it exists
    try:
        return _run(args)
    except MtaConfigError as exc:
        sys.stderr.write(f"authbridge emit-postfix-config: error: {exc}\n")
        return 2


def _run(args: argparse.Namespace) -> int:
    map_dir = Path(check_path(str(Path(args.map_dir).resolve()), "--map-dir"))
    settings = build_settings(
        args, tls_required=False, default_sender_map=str(map_dir / "authbridge_senders")
    )
    options = postfix.PostfixOptions(
        queue_directory=check_path(args.queue_directory, "--queue-directory"),
        service=_service(args.service),
        sender_owner_regexp=str(map_dir / "authbridge_sender_owners.regexp"),
        networks_cidr=str(map_dir / "authbridge_networks.cidr"),
    )
    plan = [PlannedFile(Path(options.sender_owner_regexp), render_postfix_regexp(settings.domains))]
    if settings.networks:
        plan.append(
            PlannedFile(Path(options.networks_cidr), postfix.networks_cidr(settings.networks))
        )
    if settings.sender_map and settings.sender_map_path:
        plan.append(
            PlannedFile(
                Path(settings.sender_map_path),
                render_postfix_texthash(settings.sender_map, settings.domains),
            )
        )
    elif args.sender_map:
        raise MtaConfigError(
            "--sender-map names the texthash file we write; give entries with "
            "--allow-sender or --senders-from"
        )
    if args.section in ("main", "all"):
        if args.section == "all":
            sys.stdout.write("# ---- add to main.cf ----\n")
        sys.stdout.write(postfix.main_cf(settings, options))
    if args.section in ("master", "all"):
        if args.section == "all":
            sys.stdout.write("# ---- add to master.cf ----\n")
        sys.stdout.write(postfix.master_cf(settings, options))
    if args.write or args.diff:
        if args.write and not args.diff and not map_dir.is_dir():
            raise MtaConfigError(
                f"--map-dir {map_dir} is not a directory (is Postfix installed here?); "
                "create it or pass --map-dir DIR"
            )
        status = apply_plan(plan, diff=args.diff, force=args.force)
    else:
        status = 0
        if args.section == "all":
            for item in plan:
                sys.stdout.write(f"# ---- map {item.path} (written with --write) ----\n")
                sys.stdout.write(item.content)
    print_notes(
        "notes",
        postfix.notes(settings, options) + socket_warnings(settings.socket_path, args.postfix_user),
    )
    if not args.diff:
        steps = [] if args.write else [f"run again with --write to write the maps into {map_dir}"]
        print_notes(
            "next",
            [
                *steps,
                "add the main.cf lines (or postconf -e each) and the master.cf entry",
                "postfix check && postfix reload",
                f"make sure authbridge serves {settings.socket_path}, writable by postfix",
            ],
        )
    return status


def _service(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise MtaConfigError(f"--service {value!r}: a master.cf service name has no spaces")
    return value
