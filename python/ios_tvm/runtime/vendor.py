"""Python face of the vendor kernels of the runtime library (``src/vendor_*.cc``): where cuDNN and
cuBLASLt are looked for, whether they are there, and whether this build of the library has the
kernels at all.

The library opens ``libcudnn.so.9`` and ``libcublasLt.so.13`` itself when a model first calls a
vendor kernel, looking in ``$IOS_TVM_VENDOR_LIB_PATH`` (folders or files, ``:``-separated), then
a copy the process already loaded (PyTorch's), then the folders :func:`package_dirs` lists (the
``nvidia/*/lib`` folders of installed Python packages and PyTorch's ``torch/lib``, registered
when the library loads; :mod:`ios_tvm.runtime.libraries`), then the system's library path.
"""

from __future__ import annotations

from typing import Any

from ..errors import DeviceNotFoundError, MissingDependencyError
from .libraries import package_dirs

#: the libraries, as ``find_library`` names them
LIBRARIES = {"cudnn": 0, "cublaslt": 1}
#: what to install for each
INSTALL = {"cudnn": "nvidia-cudnn-cu13", "cublaslt": "nvidia-cublas"}


def _api() -> Any:
    from . import _ffi

    return _ffi


def register_search_dirs(dirs: list[str] | None = None) -> None:
    """Tell the runtime library where to look (default: :func:`package_dirs`); the library
    loading does this once."""
    _api().LIB  # the library is loaded
    import tvm_ffi

    tvm_ffi.get_global_func("ios_tvm.vendor.set_search_dirs")(package_dirs() if dirs is None else list(dirs))


def compiled() -> bool:
    """Whether this build of the runtime library has the vendor kernels (built where the CUDA
    toolkit and the libraries' headers were found: ``pip install 'ios-tvm[vendor]'``)."""
    import tvm_ffi

    _api()
    return bool(tvm_ffi.get_global_func("ios_tvm.vendor.compiled")())


def find_library(name: str) -> tuple[str, int]:
    """``(path, version)`` of ``"cudnn"`` or ``"cublaslt"``, opened as a model's first vendor call
    opens it.

    Raises
    ------
    MissingDependencyError
        Not found (or too old): the message says where it looked and what to install.
    """
    import tvm_ffi

    if name not in LIBRARIES:
        raise ValueError(f"library must be one of {sorted(LIBRARIES)}, got {name!r}")
    _api()
    path, version = tvm_ffi.get_global_func("ios_tvm.vendor.find_library")(LIBRARIES[name])
    return str(path), int(version)


def check(names: tuple[str, ...] = ("cudnn", "cublaslt")) -> dict[str, tuple[str, int]]:
    """What a model with vendor kernels needs to run here: the vendor module built into the
    runtime library, and each library found. Returns ``{name: (path, version)}``.

    Raises
    ------
    MissingDependencyError
        Either is missing, with what to install.
    """
    if not compiled():
        raise MissingDependencyError(
            "this build of ios_tvm's runtime library has no vendor kernels (the CUDA toolkit or the cuDNN / cuBLASLt "
            "headers were not found when it was built): pip install 'ios-tvm[vendor]', rebuild it (pip install ., "
            "or cmake --build build), or use kernels='tvm'")
    return {name: find_library(name) for name in names}


def require_gpu_libraries(purpose: str) -> None:
    """:func:`check`, for something about to run vendor kernels on this machine's GPU
    (``purpose`` names it in the message); also a :class:`~ios_tvm.errors.DeviceNotFoundError`
    when there is no GPU."""
    from ..ir.target import has_gpu

    if not has_gpu():
        raise DeviceNotFoundError(f"{purpose} runs cuDNN / cuBLASLt kernels on this machine's GPU, and there is "
                                  "none: run it on the GPU machine, or use the analytic cost model")
    check()


__all__ = ["LIBRARIES", "package_dirs", "register_search_dirs", "compiled", "find_library", "check",
           "require_gpu_libraries"]
