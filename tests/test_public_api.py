from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import batchrunner


def test_all_is_exactly_the_public_surface() -> None:
    assert set(batchrunner.__all__) == {*batchrunner._EXPORTS, "__version__"}
    assert set(batchrunner.__all__) <= set(dir(batchrunner))


def test_everything_in_all_is_importable() -> None:
    for name in batchrunner.__all__:
        assert getattr(batchrunner, name) is not None, name


def test_type_checkers_see_the_same_names_as_the_lazy_imports() -> None:
    tree = ast.parse(Path(batchrunner.__file__).read_text())
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                seen.update((alias.name, stmt.module) for alias in stmt.names)
    assert seen == batchrunner._EXPORTS


def test_public_names_say_they_belong_to_the_package() -> None:
    for name in batchrunner.__all__:
        value = getattr(batchrunner, name)
        if isinstance(value, type) or callable(value):
            assert value.__module__ == "batchrunner", name
    assert repr(batchrunner.RunConfig) == "<class 'batchrunner.RunConfig'>"


def test_public_values_pickle_by_their_public_name() -> None:
    import pickle

    config = batchrunner.RunConfig(input=Path("in.jsonl"), output=Path("out.jsonl"))
    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301 (our own bytes)
    assert b"batchrunner.config" not in pickle.dumps(config)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        batchrunner.no_such_thing  # noqa: B018


def test_importing_the_package_or_the_command_loads_no_arrow() -> None:
    # The command picks Arrow's allocator, which Arrow reads once, when pyarrow loads.
    code = (
        "import sys, batchrunner, batchrunner.cli.main\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('pyarrow', 'batchrunner.')))\n"
        "print(' '.join(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert not [m for m in loaded if m.startswith("pyarrow")], loaded
