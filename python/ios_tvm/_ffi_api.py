"""Loads ios_tvm's C++ runtime library and exposes its ``ios_tvm.runtime.*`` globals.

The library is installed inside the package (``ios_tvm/lib``) by the wheel build; a development
CMake build writes it to the same place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tvm_ffi

from .errors import MissingDependencyError

_LIB_DIR = Path(__file__).resolve().parent / "lib"
_LIB_NAME = {"win32": "ios_tvm_runtime.dll", "darwin": "libios_tvm_runtime.dylib"}.get(
    sys.platform, "libios_tvm_runtime.so"
)


def _load():
    path = _LIB_DIR / _LIB_NAME
    if not path.exists():
        raise MissingDependencyError(
            f"ios_tvm's runtime library is missing ({path}). Install the package with "
            "`pip install .` (it builds src/ with CMake), or build it in place with "
            "`cmake -S . -B build && cmake --build build`."
        )
    return tvm_ffi.load_module(str(path))


LIB = _load()
tvm_ffi.init_ffi_api("ios_tvm.runtime", __name__)

# Globals registered by src/runtime.cc (init_ffi_api binds them as module attributes):
#   version() -> str, build_info() -> str, check_num_streams(n, pool) -> int
