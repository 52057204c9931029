"""Loads ios_tvm's C++ runtime library and exposes its ``ios_tvm.runtime.*`` globals.

The library is installed inside the package (``ios_tvm/lib``) by the wheel build; a development
CMake build writes it beside the sources. An editable install (``pip install -e .``) puts it in
site-packages while the Python files stay in the checkout: the package then spans both
directories (its ``__path__``), and the library is looked for in each, in that order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tvm_ffi

from ..errors import MissingDependencyError
from .libraries import package_dirs

_LIB_NAME = {"win32": "ios_tvm_runtime.dll", "darwin": "libios_tvm_runtime.dylib"}.get(
    sys.platform, "libios_tvm_runtime.so"
)


def _package_dirs() -> list[Path]:
    package = sys.modules.get(__package__.rpartition(".")[0])  # ios_tvm (the library is in ios_tvm/lib)
    dirs = [Path(d) for d in getattr(package, "__path__", [])]
    return dirs or [Path(__file__).resolve().parents[1]]


def _find() -> Path | None:
    for d in _package_dirs():
        if (d / "lib" / _LIB_NAME).exists():
            return d / "lib" / _LIB_NAME
    return None


def _load():
    path = _find()
    if path is None:
        looked = ", ".join(str(d / "lib") for d in _package_dirs())
        raise MissingDependencyError(
            f"ios_tvm's runtime library ({_LIB_NAME}) is missing (looked in {looked}). Install the package "
            "with `pip install .` (it builds src/ with CMake), or build it in place with "
            "`cmake -S . -B build && cmake --build build`."
        )
    return path, tvm_ffi.load_module(str(path))


LIB_PATH, LIB = _load()
tvm_ffi.init_ffi_api("ios_tvm.runtime", __name__)
# where the vendor kernels look for cuDNN / cuBLASLt besides $IOS_TVM_VENDOR_LIB_PATH and the system
tvm_ffi.get_global_func("ios_tvm.vendor.set_search_dirs")(package_dirs())

# Every global of src/ is registered as ios_tvm.runtime.<name> (init_ffi_api binds each as an
# attribute of this module); ios_tvm.runtime wraps the ones Python calls.
