"""Write generated files the careful way: idempotent, no silent overwrite, diffable.

A plan is checked as a whole before anything is written, so a conflict on the third
file does not leave the first two changed; each file is replaced atomically (temporary
file in the same directory, then rename).
"""

from __future__ import annotations

import difflib
import enum
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from authbridge.mta.errors import FileConflictError, MtaConfigError


class FileState(enum.Enum):
    NEW = "new"
    UNCHANGED = "unchanged"
    CHANGED = "changed"


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: str
    mode: int = 0o644

    def installed(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MtaConfigError(f"cannot read {self.path}: {exc.strerror}") from None

    def state(self) -> FileState:
        current = self.installed()
        if current is None:
            return FileState.NEW
        return FileState.UNCHANGED if current == self.content else FileState.CHANGED

    def diff(self) -> str:
        current = self.installed()
        old_name = str(self.path) if current is not None else "/dev/null"
        return "".join(
            difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                self.content.splitlines(keepends=True),
                fromfile=old_name,
                tofile=str(self.path),
            )
        )


def plan_diff(plan: list[PlannedFile]) -> tuple[str, bool]:
    """Unified diff of every file against what is installed, and whether anything differs."""
    text = "".join(item.diff() for item in plan)
    return text, bool(text)


def write_plan(plan: list[PlannedFile], *, force: bool) -> list[tuple[PlannedFile, FileState]]:
    """Write the files that are new or (with ``force``) changed; report every file's state."""
    states = [(item, item.state()) for item in plan]
    conflicts = [str(item.path) for item, state in states if state is FileState.CHANGED]
    if conflicts and not force:
        raise FileConflictError(conflicts)
    for item, state in states:
        if state is not FileState.UNCHANGED:
            _atomic_write(item)
    return states


def _atomic_write(item: PlannedFile) -> None:
    directory = item.path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".authbridge-", dir=directory)
    except OSError as exc:
        raise MtaConfigError(f"cannot write {item.path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(item.content)
        os.chmod(tmp_name, item.mode)
        os.replace(tmp_name, item.path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise MtaConfigError(f"cannot write {item.path}: {exc.strerror}") from None
