"""The package's layers: no module imports from a higher layer, and no import cycle.

The subpackages follow the request path. Lowest first (a module may import from its own
layer and from any layer below it, never from one above):

0. base: ``authbridge`` itself (the version) and ``errors``;
1. ``schemes``: password schemes (only ``errors`` below them);
2. ``core``: the protocol, sans-I/O (``core.mechanisms.cram_md5`` uses ``schemes``);
3. ``observability``: logs, events, metrics, ``contained`` and ``after_batch`` (events
   and metrics describe core's requests and verdicts; the stores and checks below log
   and report through it, so it sits under them);
4. ``config``: the configuration objects (they name core's mechanisms; the SQL store
   reads its ``StoreConfig``, so it sits under ``passdb``);
5. ``passdb``: the user stores;
6. ``checks``: what decides a verdict (looks users up in the stores);
7. ``daemon``: the trio shell that runs the checks for each connection;
8. the top: ``commands``, ``mta``, ``benchclient``, ``cli``, ``__main__`` (``mta.doctor``
   is a command and uses ``commands.check``; the Exim and Postfix commands use ``mta``, so
   the two share a layer).

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``, and
``from authbridge.x import name`` where ``name`` is a submodule. Importing a submodule
also runs its package's ``__init__``; that implicit edge is not counted (only
``__init__`` files that import their own submodules would make a cycle of it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "authbridge"

#: Lowest first; a module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("authbridge", "authbridge.errors"),
    ("authbridge.schemes",),
    ("authbridge.core",),
    ("authbridge.observability",),
    ("authbridge.config", "authbridge.config_ldap"),
    ("authbridge.passdb",),
    ("authbridge.checks",),
    ("authbridge.daemon",),
    (
        "authbridge.commands",
        "authbridge.mta",
        "authbridge.benchclient",
        "authbridge.cli",
        "authbridge.__main__",
    ),
)

Graph = Mapping[str, set[str]]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The ``authbridge`` modules ``source`` (the text of ``module``) imports anywhere."""
    known = set(known)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {name for name in found if name in known and name != module}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", paths)
        for name, path in paths.items()
    }


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward_imports(graph: Graph) -> list[str]:
    return sorted(
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if layer_of(dst) > layer_of(src)
    )


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_every_module_has_a_layer() -> None:
    """A new top-level module or subpackage must be placed in LAYERS (and the README)."""
    unplaced = sorted(
        name for name in import_graph() if layer_of(name) == 0 and name not in LAYERS[0]
    )
    assert unplaced == []


def test_no_import_from_a_higher_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_the_checks_see_what_they_must(tmp_path: Path) -> None:
    """The checker itself: an upward import, an in-function one, one under TYPE_CHECKING
    and a relative one are all found, and so is a cycle."""
    root = tmp_path / "authbridge"
    (root / "core").mkdir(parents=True)
    (root / "daemon").mkdir()
    (root / "__init__.py").write_text("")
    (root / "core" / "__init__.py").write_text("")
    (root / "daemon" / "__init__.py").write_text("")
    (root / "daemon" / "server.py").write_text("from authbridge.core import wire\n")
    (root / "core" / "wire.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from authbridge.daemon.server import X\n"
        "def f():\n"
        "    from ..daemon import server\n"
        "    import authbridge.core.session\n"
    )
    (root / "core" / "session.py").write_text("from . import wire\n")
    graph = import_graph(root)
    assert graph["authbridge.core.wire"] == {"authbridge.daemon.server", "authbridge.core.session"}
    assert graph["authbridge.core.session"] == {"authbridge.core.wire"}
    assert upward_imports(graph) == [
        "authbridge.core.wire (layer 2) imports authbridge.daemon.server (layer 7)"
    ]
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 3
