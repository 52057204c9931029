"""The C++ runtime library loads, matches the package, and raises typed errors."""

from __future__ import annotations

import pytest

import ios_tvm
from ios_tvm import runtime


def test_library_version_matches_package():
    assert runtime.version() in (ios_tvm.__version__, ios_tvm.__version__ + ".dev")
    info = runtime.build_info()
    assert info["version"] == runtime.version() and info["cuda"] in ("0", "1")


def test_typed_errors_cross_from_cpp():
    assert runtime.check_num_streams(3, 8) == 3
    with pytest.raises(ValueError, match="pool holds 8"):
        runtime.check_num_streams(9, 8)
    with pytest.raises(ValueError, match=">= 1"):
        runtime.check_num_streams(0, 8)


def test_globals_are_namespaced():
    import tvm_ffi

    for name in ("version", "build_info", "check_num_streams"):
        assert tvm_ffi.get_global_func(f"ios_tvm.runtime.{name}") is not None
