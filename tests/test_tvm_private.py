"""Every private TVM name ios_tvm relies on sits behind ``ios_tvm.ir.tvm_private``: this test
fails, naming the name and the TVM version, the day a TVM release moves one."""

from __future__ import annotations

import pytest

from ios_tvm.ir import tvm_private


def test_every_private_tvm_name_is_still_there():
    assert tvm_private.check() == []


def test_a_moved_name_is_a_clear_error(monkeypatch):
    from tvm.s_tir.meta_schedule.builder import local_builder

    monkeypatch.delattr(local_builder, "_worker_func")
    with pytest.raises(tvm_private.TVMChangedError, match=r"local_builder\._worker_func is not in this TVM .* supports "
                                                          r"apache-tvm 0\.27\.0\.post1"):
        tvm_private.builder_worker(None, None, None, None, None)
    assert any(p.startswith("tvm.s_tir.meta_schedule.builder.local_builder._worker_func:")
               for p in tvm_private.check())


def test_no_other_module_reaches_into_tvm_privately():
    """Outside the adapter, no ios_tvm module names a private TVM attribute (``tvm...._name``) or
    one of the strings the adapter owns."""
    import ast
    from pathlib import Path

    import ios_tvm

    owned = {tvm_private.CUDA_COMPILE_CALLBACK, tvm_private.CUDA_GRAPH_RUN_OR_CAPTURE,
             tvm_private.CUDA_GRAPH_GET_CACHED_ALLOC, tvm_private.USE_CUDA_GRAPH, tvm_private.DISABLE_STORAGE_REWRITE}
    root = Path(ios_tvm.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "tvm_private.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tvm") and any(
                    a.name.startswith("_") for a in node.names):
                found.append(f"{path.relative_to(root)}: from {node.module} import {[a.name for a in node.names]}")
            if isinstance(node, ast.ImportFrom) and node.module == "tvm.support.popen_pool":
                found.append(f"{path.relative_to(root)}: imports tvm.support.popen_pool")
            if isinstance(node, ast.Attribute) and node.attr in ("_worker_func", "_serialize_params", "id_"):
                found.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in owned:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    assert not found, found
