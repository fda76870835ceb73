from __future__ import annotations

import types

import batchrunner


def test_all_is_exactly_the_public_surface() -> None:
    public = {
        name
        for name, value in vars(batchrunner).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the __future__ import
    }
    assert set(batchrunner.__all__) - {"__version__"} == public


def test_everything_in_all_is_importable() -> None:
    for name in batchrunner.__all__:
        assert getattr(batchrunner, name) is not None, name
