"""Shared tail of the emit commands: apply or diff a plan, print states and next steps."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from authbridge.mta.access import connectable_by, readable_by
from authbridge.mta.files import FileState, PlannedFile, plan_diff, write_plan


def key_warnings(key: str, user: str, group_hint: str) -> list[str]:
    """The TLS-key permission problems that make STARTTLS fail only at run time."""
    report = readable_by(key, user)
    if report is None:
        return [f"user {user} does not exist here: cannot check that it can read {key}"]
    warnings = []
    if report.missing:
        return [f"the TLS key {key} does not exist (yet); STARTTLS will fail until it does"]
    if report.blocking_directory is not None:
        warnings.append(
            f"{user} cannot read the TLS key: {report.reason}; STARTTLS will fail. Fix: "
            f"give it search (x) permission on {report.blocking_directory}, or move the key"
        )
    elif not report.readable:
        warnings.append(
            f"{user} cannot read the TLS key ({report.reason}); STARTTLS will fail. Fix:\n"
            f"    chgrp {group_hint} {key} && chmod 0640 {key}"
        )
    if report.world_readable:
        warnings.append(f"the TLS key {key} is world-readable; chmod o-rwx {key}")
    return warnings


def socket_warnings(socket_path: str, user: str) -> list[str]:
    """The MTA user must be able to connect to authbridge's socket (write permission)."""
    report = connectable_by(socket_path, user)
    if report is None or report.missing:
        return []  # no such user here, or the daemon is not running yet: nothing to check
    if report.readable:
        return []
    return [
        f"{user} cannot connect to {socket_path} ({report.reason}); AUTH will answer "
        f"435/454. Fix: run authbridge with --socket-group {user} --socket-mode 0660 "
        "(or socket_group/socket_mode in its config)"
    ]


def apply_plan(
    plan: Sequence[PlannedFile],
    *,
    diff: bool,
    force: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """--diff: print the diff, exit 1 if anything differs. Else write and list states."""
    out = out or sys.stdout
    err = err or sys.stderr
    if diff:
        text, differs = plan_diff(list(plan))
        out.write(text)
        return 1 if differs else 0
    for item, state in write_plan(list(plan), force=force):
        verb = {
            FileState.NEW: "wrote",
            FileState.CHANGED: "replaced",
            FileState.UNCHANGED: "unchanged",
        }[state]
        err.write(f"{verb}: {item.path}\n")
    return 0


def print_notes(title: str, notes: Sequence[str], err: TextIO | None = None) -> None:
    err = err or sys.stderr
    if notes:
        err.write(f"{title}:\n")
        for note in notes:
            err.write(f"  {note}\n")
