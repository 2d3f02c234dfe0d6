"""``authbridge emit-exim-config``: the Exim side of SMTP AUTH through authbridge.

Writes Debian split-config snippets (``--debian-split /etc/exim4``), a whole
standalone exim.conf (``--standalone FILE``), or prints one section (``--section``).
``--debian-split`` refuses a directory without ``update-exim4.conf.conf`` (a mistyped
path would get a whole conf.d tree nobody reads) unless ``--force``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from authbridge.commands.defaults import config_path
from authbridge.mta import exim
from authbridge.mta.errors import MtaConfigError
from authbridge.mta.files import PlannedFile
from authbridge.mta.options import add_common_arguments, build_settings
from authbridge.mta.report import apply_plan, key_warnings, print_notes, socket_warnings
from authbridge.mta.senders import read_login_file, render_exim_lsearch
from authbridge.mta.settings import MtaSettings, check_path, parse_networks

SENDER_MAP_NAME = "authbridge-senders"

#: The file that makes a directory Debian's exim4 configuration (update-exim4.conf reads it).
DEBIAN_MARKER = "update-exim4.conf.conf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_argument_group("output (choose one)").add_mutually_exclusive_group(
        required=True
    )
    mode.add_argument(
        "--debian-split",
        metavar="DIR",
        help="write conf.d/{main,acl,auth} snippets under DIR, Debian's exim4 directory "
        f"with its {DEBIAN_MARKER} (usually /etc/exim4)",
    )
    mode.add_argument(
        "--standalone", metavar="FILE", help="write a whole exim.conf to FILE (needs TLS files)"
    )
    mode.add_argument(
        "--section", choices=("main", "acl", "auth"), help="print one section to stdout"
    )
    parser.add_argument(
        "--flavour",
        choices=("plain", "debian"),
        default="plain",
        help="with --section: plain Exim options or Debian's macros (default plain)",
    )
    add_common_arguments(parser)
    tls = parser.add_argument_group("TLS client certificates")
    tls.add_argument(
        "--tls-verify-certificates",
        metavar="FILE",
        help="CA bundle that client certificates are verified against",
    )
    tls.add_argument(
        "--tls-verify-hosts",
        metavar="CIDRS",
        action="append",
        help="clients that must present a valid certificate (repeatable)",
    )
    tls.add_argument(
        "--tls-try-verify-hosts",
        metavar="CIDRS",
        action="append",
        help="clients whose certificate is verified when they present one (repeatable)",
    )
    alone = parser.add_argument_group("--standalone only")
    alone.add_argument(
        "--spool-dir",
        metavar="DIR",
        default="/var/spool/exim4",
        help="Exim's spool_directory (default /var/spool/exim4)",
    )
    alone.add_argument(
        "--log-file-path",
        metavar="PATH",
        default="/var/log/exim4/%slog",
        help="Exim's log_file_path, one %%s or 'syslog' (default /var/log/exim4/%%slog)",
    )
    alone.add_argument(
        "--pid-file", metavar="FILE", help="Exim's pid_file_path (default: Exim's own)"
    )
    alone.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        action="append",
        default=[],
        help="listen here instead of every interface on ports 25 and 587 (repeatable)",
    )
    parser.add_argument(
        "--exim-user",
        metavar="USER",
        default="Debian-exim",
        help="the user Exim runs as, for the key permission check (default Debian-exim)",
    )


def run(args: argparse.Namespace) -> int:
    args.config = config_path(args.config)  # /etc/authbridge/authbridge.toml if it exists
    try:
        return _run(args)
    except MtaConfigError as exc:
        sys.stderr.write(f"authbridge emit-exim-config: error: {exc}\n")
        return 2


def _default_sender_map(args: argparse.Namespace) -> str | None:
    if args.debian_split:
        return str(Path(args.debian_split).resolve() / SENDER_MAP_NAME)
    if args.standalone:
        return str(Path(args.standalone).resolve().parent / SENDER_MAP_NAME)
    return None


def _log_file_path(value: str) -> str:
    """Exim's log_file_path: "syslog", or a path whose one %s becomes main/reject/panic."""
    if value == "syslog":
        return value
    if value.count("%s") != 1:
        raise MtaConfigError(f"--log-file-path {value!r} needs exactly one %s (or 'syslog')")
    check_path(value.replace("%s", "s"), "--log-file-path")
    return value


def _listen(values: list[str]) -> tuple[tuple[str, int], ...]:
    result = []
    for value in values:
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise MtaConfigError(f"--listen {value!r}: expected ADDRESS:PORT")
        network = parse_networks([host])[0]
        result.append((str(network.network_address), int(port)))
    return tuple(result)


def _refuse_foreign_split_dir(directory: str, force: bool) -> None:
    """A --debian-split DIR must be Debian's exim4 directory, or the admin says --force."""
    root = Path(directory)
    if force or (root / DEBIAN_MARKER).is_file():
        return
    raise MtaConfigError(
        f"--debian-split {directory}: no {DEBIAN_MARKER} there, so it is not Debian's exim4 "
        "directory (usually /etc/exim4); nothing written (--force writes there anyway)"
    )


def _run(args: argparse.Namespace) -> int:
    if args.debian_split:
        _refuse_foreign_split_dir(args.debian_split, args.force)
    debian = bool(args.debian_split) or args.flavour == "debian"
    settings = build_settings(
        args,
        tls_required=bool(args.standalone),
        default_sender_map=_default_sender_map(args),
    )
    plan: list[PlannedFile] = []
    notes: list[str] = []
    if args.debian_split:
        root = Path(args.debian_split)
        for relative, content in exim.debian_split_files(settings).items():
            plan.append(PlannedFile(root / relative, content))
        notes += _macro_clashes(root) + _split_mode_off(root)
    elif args.standalone:
        options = exim.StandaloneOptions(
            spool_directory=check_path(args.spool_dir, "--spool-dir"),
            log_file_path=_log_file_path(args.log_file_path),
            pid_file_path=check_path(args.pid_file, "--pid-file") if args.pid_file else None,
            listen=_listen(args.listen),
        )
        plan.append(PlannedFile(Path(args.standalone), exim.standalone(settings, options)))
    plan += _sender_map_plan(settings)

    if debian and settings.tls is None and settings.require_tls_for_auth:
        notes.append(
            "no --tls-cert/--tls-key: AUTH is offered only after STARTTLS, so make sure "
            "MAIN_TLS_ENABLE and the certificate macros are set in conf.d/main/000_localmacros"
        )
    if settings.tls is not None:
        notes += key_warnings(settings.tls.key, args.exim_user, args.exim_user)
    notes += socket_warnings(settings.socket_path, args.exim_user)

    if args.section:
        sys.stdout.write(exim.section(settings, args.section, debian=debian))
    status = apply_plan(plan, diff=args.diff, force=args.force)
    print_notes("warnings", notes)
    if not args.diff:
        print_notes("next", _next_steps(args, settings))
    return status


def _sender_map_plan(settings: MtaSettings) -> list[PlannedFile]:
    path = settings.sender_map_path
    if path is None:
        return []
    if settings.sender_map:
        return [PlannedFile(Path(path), render_exim_lsearch(settings.sender_map))]
    if not Path(path).is_file():
        raise MtaConfigError(
            f"sender map {path} does not exist; create it or pass --allow-sender/--senders-from"
        )
    read_login_file(path)  # validates: a broken map would defer every MAIL FROM
    return []


def _split_mode_off(root: Path) -> list[str]:
    """conf.d is ignored unless update-exim4.conf.conf turns split mode on."""
    conf = root / "update-exim4.conf.conf"
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [f"{conf} not found: is {root} an exim4 configuration directory?"]
    match = re.search(r"^dc_use_split_config\s*=\s*'?(\w*)'?", text, re.MULTILINE)
    if match and match.group(1) == "true":
        return []
    return [
        f"{conf} does not set dc_use_split_config='true': update-exim4.conf ignores "
        "conf.d and these files have no effect until it does"
    ]


def _macro_clashes(root: Path) -> list[str]:
    """Definitions in files read before ours of the macros we set (Exim would refuse)."""
    main_dir = root / "conf.d" / "main"
    ours = Path(exim.DEBIAN_MAIN_FILE).name
    pattern = re.compile(r"^\s*(" + "|".join(exim.DEBIAN_STRICT_MACROS) + r")\s*=", re.M)
    notes = []
    candidates = sorted(p for p in main_dir.glob("*") if p.is_file()) if main_dir.is_dir() else []
    for path in candidates:
        if path.name >= ours:
            break
        for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            notes.append(
                f"{path} already defines {match.group(1)}; {ours} defines it too and Exim "
                "will refuse the duplicate: remove one of them"
            )
    return notes


def _next_steps(args: argparse.Namespace, settings: MtaSettings) -> list[str]:
    steps = []
    if args.debian_split:
        root = Path(args.debian_split).resolve()
        if root == Path("/etc/exim4"):
            steps.append("update-exim4.conf && systemctl restart exim4")
        else:
            steps.append(
                f"update-exim4.conf -d {root} -o /tmp/exim4.conf && exim -C /tmp/exim4.conf -bV"
            )
    elif args.standalone:
        steps.append(f"exim -C {args.standalone} -bV")
        steps.append(f"exim -C {args.standalone} -bd -q30m   (or point your service at it)")
    steps.append(
        f"make sure authbridge serves {settings.socket_path} and {args.exim_user} may connect to it"
    )
    return steps
