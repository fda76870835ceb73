"""The house's import rules: rooms import one way, down, and nothing imports in a cycle.

Every module's imports are read with ``ast`` (top-level, inside functions and under
``TYPE_CHECKING`` alike: a lazy import is still a dependency) and checked against the table
below, which is the same table each room's ``__init__`` docstring states in words.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batchrunner"

GROUND = frozenset({"errors", "results", "config"})
# What each room may import besides itself. The ground floor's own order: errors and
# results import nothing of ours, config only those two.
ALLOWED: Mapping[str, frozenset[str]] = {
    "errors": frozenset(),
    "results": frozenset(),
    "config": frozenset({"errors", "results"}),
    "input": GROUND,
    "auth": GROUND,
    "limits": GROUND,
    "output": GROUND,
    "stats": GROUND,
    "endpoint": GROUND | {"auth"},
    "report": GROUND | {"stats", "output"},
    "pipeline": GROUND | {"input", "auth", "limits", "endpoint", "output", "stats", "report"},
    "batch": GROUND | {"input", "auth", "endpoint", "output", "stats"},
    "launch": GROUND
    | {"input", "auth", "limits", "endpoint", "output", "stats", "report", "pipeline"}
    | {"batch", "simulator"},
    "scale": GROUND
    | {"input", "auth", "limits", "endpoint", "output", "stats", "report", "pipeline"},
    # cli also reads the package's __version__
    "cli": GROUND
    | {"input", "auth", "limits", "endpoint", "output", "stats", "report", "pipeline"}
    | {"batch", "launch", "scale", "simulator", "__init__"},
    "simulator": frozenset(),
    # The package's face: lazily re-exports the public names of every room but cli.
    "__init__": GROUND
    | {"input", "auth", "limits", "endpoint", "output", "stats", "report", "pipeline"}
    | {"launch", "scale"},
    "__main__": frozenset({"cli"}),
}


def room_of(module: str) -> str:
    """``batchrunner.output.writers`` → ``output``; ``batchrunner.errors`` → ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, is_package: bool) -> set[str]:
    """Every batchrunner module ``path`` imports, resolved to absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = module.split(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != top:
                continue
            found.add(target)
            # ``from batchrunner.output import writers`` imports a module too
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def graph(package: Path) -> dict[str, set[str]]:
    modules = {
        module_name(p, package): p for p in package.rglob("*.py") if "__pycache__" not in p.parts
    }
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = imports_of(path, name, path.name == "__init__.py")
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def upward_imports(edges: Mapping[str, Iterable[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(edges.items()):
        room = room_of(module)
        allowed = ALLOWED.get(room)
        if allowed is None:
            wrong.append(f"{module}: room {room!r} is not in the table")
            continue
        for target in sorted(targets):
            other = room_of(target)
            if other != room and other not in allowed:
                wrong.append(f"{module} imports {target} ({room} may not import {other})")
    return wrong


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def room_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in edges.items():
        rooms.setdefault(room_of(module), set()).update(
            room_of(t) for t in targets if room_of(t) != room_of(module)
        )
    return cycles(rooms)


def test_no_room_imports_a_room_above_it() -> None:
    assert upward_imports(graph(PACKAGE)) == []


def test_no_modules_import_each_other_in_a_cycle_lazily_or_not() -> None:
    edges = graph(PACKAGE)
    assert cycles(edges) == []
    assert room_cycles(edges) == []


def test_only_the_ground_floor_sits_loose_beside_the_package_init() -> None:
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == {"__init__", "__main__", "errors", "results", "config"}


def test_every_room_says_what_lives_there_and_what_it_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc) > 120, f"{init} needs a docstring naming its job"
        assert "import" in doc, f"{init}'s docstring must say what the room may import"


def _fake_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "batchrunner"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_the_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "output/__init__.py": "",
            "output/writers.py": "from batchrunner.pipeline.runner import Runner\n",
            "pipeline/__init__.py": "",
            "pipeline/runner.py": "from batchrunner.output import writers\n",
        },
    )
    assert upward_imports(graph(package)) == [
        "batchrunner.output.writers imports batchrunner.pipeline.runner "
        "(output may not import pipeline)"
    ]


def test_the_check_fails_on_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "report/__init__.py": "",
            "report/render.py": "def f():\n    from batchrunner.report import html\n",
            "report/html.py": "from . import render\n",
        },
    )
    assert cycles(graph(package)) == [["batchrunner.report.html", "batchrunner.report.render"]]


@pytest.mark.parametrize(
    ("module", "room"),
    [("batchrunner", "__init__"), ("batchrunner.errors", "errors"), ("batchrunner.cli.run", "cli")],
)
def test_a_module_belongs_to_the_room_under_the_package(module: str, room: str) -> None:
    assert room_of(module) == room
