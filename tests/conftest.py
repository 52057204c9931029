"""Shared fixtures. Tests run on CPU; GPU tests are marked ``gpu`` and skip without a GPU."""

from __future__ import annotations

import pytest


def _has_gpu() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with its driver (tvm.cuda(0).exist is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_graphs():
    """Graphs of the reduced zoo models, lowered for llvm (built once per session)."""
    from ios_tvm import models
    from ios_tvm.graph import extract_graph

    return {name: extract_graph(models.get(name, small=True), "llvm") for name in models.names()}
