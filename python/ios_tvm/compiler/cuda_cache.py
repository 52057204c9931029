"""A content-keyed cache of compiled CUDA kernels, so that builds sharing their kernels compile
them once.

TVM compiles a CUDA module when it is first loaded on a GPU (``CUDAModuleNode`` calls the
global ``tvm_callback_cuda_compile`` with the module's whole CUDA source; NVRTC by default,
``TVM_CUDA_COMPILE_MODE=nvcc`` for nvcc) and keeps no cache. The sequential, greedy and IOS
builds of a model (also with a CUDA graph) launch the very same kernels, so their CUDA sources are
identical: a benchmark or test that builds five of them compiles the same source five times, 6-10 s
each for Inception-v3 on one core. :func:`enable` wraps TVM's callback: a source compiled before
(same text, same compile mode and architecture, same TVM) is served from memory, or from
``<cache dir>/cuda/<key>.bin`` across processes; anything else goes to TVM's compiler and is
stored. Files are written atomically; one that cannot be read is compiled again and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import tvm
import tvm_ffi

from ..ir.target import compute_capability
from ..ir.tvm_private import CUDA_COMPILE_CALLBACK, cuda_compile_callback
from .paths import default_cache_dir

logger = logging.getLogger("ios_tvm")

CACHE_VERSION = 1

_state: dict[str, Any] = {"inner": None, "directory": None, "memory": {}, "hits": 0, "compiled": 0}


def _arch() -> str:
    """The architecture the compile is for: the current target's, else the local GPU's."""
    tgt = tvm.target.Target.current(allow_none=True)
    if tgt is not None and "arch" in tgt.attrs:
        return str(tgt.attrs["arch"])
    return compute_capability() or "unknown"


def key_of(code: str) -> str:
    """Cache key of a CUDA source: the text, compile mode, architecture, TVM version."""
    mode = os.environ.get("TVM_CUDA_COMPILE_MODE", "nvrtc").lower()
    blob = "\0".join([str(CACHE_VERSION), tvm.__version__, mode, _arch(), code]).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


def _compile(code: Any, *rest: Any) -> Any:
    text = str(code)
    key = key_of(text)
    memory = _state["memory"]
    if key in memory:
        _state["hits"] += 1
        return memory[key]
    path = Path(_state["directory"]) / f"{key}.bin" if _state["directory"] is not None else None
    if path is not None and path.is_file():
        try:
            binary = path.read_bytes()
            if binary:
                memory[key] = binary
                _state["hits"] += 1
                return binary
        except OSError as err:
            logger.warning("ios_tvm: cannot read the compiled kernels in %s (%s); compiling again", path, err)
    binary = _state["inner"](code, *rest)
    _state["compiled"] += 1
    data = bytes(binary)
    memory[key] = data
    if path is not None:
        _write(path, data)
    return data


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:  # a cache that cannot be written only costs time
        logger.warning("ios_tvm: cannot store compiled kernels in %s (%s)", path, err)


def enable(directory: str | os.PathLike | None | bool = None) -> Path | None:
    """Serve ``tvm_callback_cuda_compile`` from the cache from now on (idempotent).

    Parameters
    ----------
    directory
        Where compiled kernels persist: ``None`` (default) ``<stage cache dir>/cuda``
        (``$IOS_TVM_CACHE_DIR`` or ``~/.cache/ios_tvm``), ``False`` memory only.

    Returns
    -------
    Path or None
        The directory in use.
    """
    if directory is None:
        directory = default_cache_dir() / "cuda"
    _state["directory"] = None if directory is False else Path(directory)
    if _state["inner"] is None:
        inner: Callable[..., Any] = cuda_compile_callback()
        _state["inner"] = inner
        tvm_ffi.register_global_func(CUDA_COMPILE_CALLBACK, _compile, override=True)
    return _state["directory"]


def disable() -> None:
    """Give TVM its own callback back and forget what is in memory."""
    if _state["inner"] is not None:
        tvm_ffi.register_global_func(CUDA_COMPILE_CALLBACK, _state["inner"], override=True)
    _state.update(inner=None, memory={}, hits=0, compiled=0)


def forget_memory() -> None:
    """Forget the binaries held in memory (the directory keeps them): what a new process sees."""
    _state["memory"].clear()


def stats() -> dict[str, int]:
    """``{"hits": ..., "compiled": ...}`` since :func:`enable`."""
    return {"hits": int(_state["hits"]), "compiled": int(_state["compiled"])}
