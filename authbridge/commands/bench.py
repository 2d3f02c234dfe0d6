"""``authbridge bench``: load-test any auth-client socket (authbridge or Dovecot).

It prints auth/s and client-side p50/p99 latency; ``--json`` adds a machine-readable
line for scripts such as ``benchmarks/compare_dovecot.py``. Only answers inside the
measured window count (the warm-up does not); it exits 1 on connection errors and when
no request succeeded although some were meant to.
"""

from __future__ import annotations

import argparse
import json
import sys

from authbridge.benchclient.engine import BenchError, Plan
from authbridge.benchclient.runner import HEADER, format_row, run_plan
from authbridge.benchclient.workload import (
    MECHANISMS,
    Credential,
    WorkloadError,
    load_credentials,
    prepare,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", required=True, help="auth-client socket: PATH or HOST:PORT")
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="user:password lines (default: one user 'bench' with password 'bench')",
    )
    parser.add_argument(
        "--mechanism",
        default="PLAIN",
        type=str.upper,
        choices=MECHANISMS,
        help="SASL mechanism (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=("pipeline", "churn"),
        default="pipeline",
        help="pipeline: long-lived connections with --depth requests in flight; "
        "churn: connect, handshake, one AUTH, close (Exim's pattern) (default: %(default)s)",
    )
    parser.add_argument(
        "-c", "--connections", type=int, default=8, help="connections (default: %(default)s)"
    )
    parser.add_argument(
        "-d", "--depth", type=int, default=16, help="requests in flight each (default: %(default)s)"
    )
    parser.add_argument(
        "-p", "--processes", type=int, help="client processes (default: cores, at most -c)"
    )
    parser.add_argument(
        "-t", "--duration", type=float, default=5.0, help="measured seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="unmeasured seconds first, not counted (default: %(default)s)",
    )
    parser.add_argument(
        "-n", "--requests", type=int, help="send exactly this many requests instead of -t"
    )
    parser.add_argument(
        "--wrong-share",
        type=float,
        default=0.0,
        help="fraction of wrong passwords, 0..1 (default: %(default)s)",
    )
    parser.add_argument(
        "--service", default="smtp", help="service= of every request (default: %(default)s)"
    )
    parser.add_argument(
        "--secured",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="say secured (TLS) in every request, as an MTA does after STARTTLS; "
        "authbridge's default policy refuses PLAIN/LOGIN without it (default: on)",
    )
    parser.add_argument(
        "--rip",
        metavar="IP",
        help="client address sent as rip=; the per-IP penalty then applies to failures "
        "(default: none)",
    )
    parser.add_argument("--label", default="", help="name printed in the table (default: mech)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def run(args: argparse.Namespace) -> int:
    if args.connections < 1 or args.depth < 1:
        print("authbridge bench: --connections and --depth must be at least 1", file=sys.stderr)
        return 2
    if args.requests is not None and args.requests < 1:
        print("authbridge bench: --requests must be at least 1", file=sys.stderr)
        return 2
    try:
        creds = (
            load_credentials(args.credentials)
            if args.credentials
            else [Credential("bench", "bench")]
        )
        attempts = prepare(
            creds,
            args.mechanism,
            args.wrong_share,
            service=args.service,
            secured=args.secured,
            rip=args.rip,
        )
        plan = Plan(
            target=args.socket,
            mechanism=args.mechanism,
            mode=args.mode,
            connections=args.connections,
            depth=args.depth,
            duration=args.duration,
            warmup=args.warmup,
            requests=args.requests,
        )
        summary = run_plan(plan, attempts, args.processes, args.label or args.mechanism.lower())
    except (WorkloadError, BenchError, OSError) as exc:
        print(f"authbridge bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(HEADER)
        print(format_row(summary))
        print(
            f"{summary.rate:.0f} auth/s over {summary.seconds:.2f} s; "
            f"ok={summary.ok} fail={summary.fail} mismatched={summary.mismatched} "
            f"errors={summary.errors}"
        )
        for message in summary.error_messages:
            print(f"  error: {message}")
    if summary.errors:
        return 1
    if summary.ok == 0 and args.wrong_share < 1.0:
        print(
            f"authbridge bench: no request succeeded ({summary.fail} failed): check "
            "--credentials, --secured/--rip and the server's policy and log",
            file=sys.stderr,
        )
        return 1
    return 0
