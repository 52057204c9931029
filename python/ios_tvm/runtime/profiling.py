"""End-to-end timing of compiled models, the device lock that keeps timings of several
processes apart, and the provenance benchmarks record with them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import statistics
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import tvm
from tvm import relax

from .._version import __version__
from ..ir.target import compute_capability

DEVICE_LOCK_ENV = "IOS_TVM_DEVICE_LOCK"
_lock_state: dict[str, Any] = {"depth": 0, "fd": None}
_lock_guard = threading.RLock()


@contextlib.contextmanager
def exclusive_device() -> Iterator[None]:
    """Hold the device alone while timing, when ``$IOS_TVM_DEVICE_LOCK`` names a lock file.

    Processes given the same file (benchmarks that build several models side by side) time one
    at a time and build and compile side by side: every timing in ios_tvm (the stage timers,
    :func:`time_vm`, the end-to-end guard) runs inside this context, building runs outside it.
    Without the variable it does nothing. Reentrant; an exclusive ``flock`` on the file, released
    when the outermost context ends (or the process dies).
    """
    path = os.environ.get(DEVICE_LOCK_ENV)
    if not path:
        yield
        return
    with _lock_guard:  # one thread of this process holds it; the others wait here
        if _lock_state["depth"] == 0:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            _lock_state["fd"] = fd
        _lock_state["depth"] += 1
        try:
            yield
        finally:
            _lock_state["depth"] -= 1
            if _lock_state["depth"] == 0:
                fd, _lock_state["fd"] = _lock_state["fd"], None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def device_lock_depth() -> int:
    """How deeply this process holds the device lock (0: not held; always 0 without
    ``$IOS_TVM_DEVICE_LOCK``)."""
    with _lock_guard:
        return int(_lock_state["depth"]) if _lock_state["fd"] is not None else 0


def time_vm(executable: Any, device: Any, inputs: Sequence[Any], *, number: int = 20, repeat: int = 5,
            min_repeat_ms: int = 0) -> list[float]:
    """Seconds per run of ``main`` (``repeat`` samples, each the mean of ``number`` runs), with
    TVM's ``time_evaluator`` (it synchronizes the device around each sample), holding the device
    (:func:`exclusive_device`)."""
    vm = relax.VirtualMachine(executable, device)
    args = [tvm.runtime.tensor(x, device) if not isinstance(x, tvm.runtime.Tensor) else x for x in inputs]
    vm.set_input("main", *args)
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat,
                              min_repeat_ms=min_repeat_ms)
    with exclusive_device():
        return [float(x) for x in timer("main").results]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None


def provenance(target: tvm.target.Target | None = None) -> dict[str, Any]:
    """Machine, GPU, driver, CUDA, TVM and git commit, for benchmark results."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "tvm": tvm.__version__,
        "ios_tvm": __version__,
        "target": str(target) if target is not None else None,
    }
    try:
        import tvm_ffi

        info["tvm_ffi"] = tvm_ffi.__version__
    except (ImportError, AttributeError):
        pass
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi:
        name, driver, mem = [s.strip() for s in smi.splitlines()[0].split(",")]
        info.update(gpu=name, driver=driver, gpu_memory=mem)
    if compute_capability() is not None:
        info["compute_capability"] = compute_capability()
    nvcc = _run(["nvcc", "--version"])
    if nvcc:
        info["nvcc"] = nvcc.splitlines()[-1]
    root = Path(__file__).resolve().parents[2]
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    if commit:
        dirty = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
        info["commit"] = commit + ("-dirty" if dirty else "")
    return info
