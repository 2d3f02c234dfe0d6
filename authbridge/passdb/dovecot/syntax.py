"""Dovecot's configuration language, parsed into sections and settings with their place.

Enough of the 2.3 syntax to find a site's passdbs without ``doveconf``: ``key = value``
(quoted values with backslash escapes, `` #`` comments, ``\\`` line continuation),
sections ``name [label] {`` ... ``}``, ``!include`` and ``!include_try`` with globs
relative to the including file, and ``$setting`` references to a setting set earlier.
``<file`` values are kept as written (only the settings authbridge uses read them).
The same parser reads ``doveconf``'s normalised output, which is this syntax too.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from authbridge.errors import ConfigError

#: Includes nested deeper than this are a loop.
MAX_INCLUDE_DEPTH = 20
_KEY = re.compile(r"[A-Za-z0-9_./-]+")
_VARIABLE = re.compile(r"\$[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    value: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Section:
    """One ``kind [label] { }`` block (the root has kind ``""``), its settings in order
    (a later one of the same key wins) and its subsections in order."""

    kind: str
    label: str = ""
    file: str = ""
    line: int = 0
    settings: list[Setting] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def get(self, key: str) -> Setting | None:
        """The setting of ``key`` that counts (the last one), or ``None``."""
        for setting in reversed(self.settings):
            if setting.key == key:
                return setting
        return None

    def value(self, key: str, default: str = "") -> str:
        setting = self.get(key)
        return default if setting is None else setting.value

    def children(self, kind: str) -> list[Section]:
        return [section for section in self.sections if section.kind == kind]


def parse_file(path: str | Path, expand: bool = True) -> Section:
    """The root section of ``path`` with its includes; ConfigError names file and line.

    ``expand``: replace ``$key`` words (dovecot.conf; not the sql/ldap args files)."""
    root = Section("", file=str(path))
    _Parser(root, expand).read_file(Path(path), None, optional=False)
    return root


def parse_text(text: str, source: str, base_dir: Path | None = None) -> Section:
    """``text`` (a config, or doveconf's output) as a root section."""
    root = Section("", file=source)
    _Parser(root).read_text(text, source, base_dir or Path.cwd())
    return root


class _Parser:
    def __init__(self, root: Section, expand: bool = True) -> None:
        self.stack = [root]
        self.expand = expand
        self.depth = 0
        #: Top-level values by key, for ``$key`` references.
        self.values: dict[str, str] = {}

    def read_file(self, path: Path, where: str | None, optional: bool) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            if optional and isinstance(exc, FileNotFoundError):
                return
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{path}: cannot read: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        self.read_text(text, str(path), path.parent)

    def read_text(self, text: str, source: str, base_dir: Path) -> None:
        pending = ""
        start = 0
        for number, raw in enumerate(text.splitlines(), 1):
            # As Dovecot: comment and empty lines are skipped first, even in the middle
            # of a continued line (a commented-out example may end in a backslash).
            line = _strip_comment(raw.strip())
            if not line:
                continue
            if not pending:
                start = number
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            line = pending + line
            pending = ""
            self._line(line, source, start, base_dir)
        # A line still continued at the end of the file is dropped, as Dovecot does.
        if len(self.stack) > 1 and self.depth == 0:
            open_section = self.stack[-1]
            raise ConfigError(f"{open_section.where}: section {open_section.kind!r} not closed")

    def _line(self, line: str, source: str, number: int, base_dir: Path) -> None:
        if not line:
            return
        where = f"{source}:{number}"
        if line.startswith("!"):
            self._include(line, where, base_dir)
            return
        current = self.stack[-1]
        if line == "}":
            if len(self.stack) == 1:
                raise ConfigError(f"{where}: '}}' without an open section")
            self.stack.pop()
            return
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and _KEY.fullmatch(key):
            value = self._value(value.strip(), top=len(self.stack) == 1)
            current.settings.append(Setting(key, value, source, number))
            if len(self.stack) == 1:
                self.values[key] = value
            return
        if line.endswith("{"):
            words = line[:-1].split()
            if not words or not _KEY.fullmatch(words[0]):
                raise ConfigError(f"{where}: expected a section name before '{{'")
            label = " ".join(_unquote(word) for word in words[1:])
            section = Section(words[0], label, source, number)
            current.sections.append(section)
            self.stack.append(section)
            return
        raise ConfigError(f"{where}: expected 'key = value', 'name {{' or '}}'")

    def _include(self, line: str, where: str, base_dir: Path) -> None:
        command, _, target = line.partition(" ")
        if command not in ("!include", "!include_try"):
            raise ConfigError(f"{where}: unknown directive {command!r}")
        target = _unquote(target.strip())
        if not target:
            raise ConfigError(f"{where}: {command} needs a file name")
        if self.depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{where}: includes nested too deeply (a loop?)")
        pattern = target if os.path.isabs(target) else str(base_dir / target)
        optional = command == "!include_try"
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches and not optional and not glob.has_magic(pattern):
            raise ConfigError(f"{where}: {pattern}: no such file")
        self.depth += 1
        try:
            for match in matches:
                self.read_file(Path(match), where, optional)
        finally:
            self.depth -= 1

    def _value(self, value: str, top: bool) -> str:
        """A quoted value unquoted; in a top-level value, each word ``$key`` replaced by
        the value ``key`` was given earlier (as Dovecot does; unset: empty)."""
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            return _unescape(value[1:-1])
        if top and self.expand and "$" in value:
            words = value.split(" ")
            for index, word in enumerate(words):
                if _VARIABLE.fullmatch(word):
                    words[index] = self.values.get(word[1:], "")
            return " ".join(words)
        return value


def _strip_comment(line: str) -> str:
    """The line without a `` #`` comment (a ``#`` inside quotes or a word is kept)."""
    if line.startswith("#"):
        return ""
    quote = ""
    index = 0
    while index < len(line):
        char = line[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and line[index - 1] in " \t":
            return line[:index].rstrip()
        index += 1
    return line


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return _unescape(word[1:-1])
    return word


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)
