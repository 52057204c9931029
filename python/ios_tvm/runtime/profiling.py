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
import time
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


#: a run at least this long is timed by Python, one run at a time (Ctrl-C acts between runs)
LONG_RUN_S = 0.05


def time_vm(executable: Any, device: Any, inputs: Sequence[Any], *, number: int = 20, repeat: int = 5,
            min_repeat_ms: int = 0) -> list[float]:
    """Seconds per run of ``main`` (``repeat`` samples, each the mean of ``number`` runs), holding
    the device (:func:`exclusive_device`).

    A first run warms up (and is timed): when it took :data:`LONG_RUN_S` or more, every run is
    timed from Python (the device synchronized after each), so that Ctrl-C acts within one run;
    shorter runs go through TVM's ``time_evaluator`` (which synchronizes the device around each
    sample), where the timer's own overhead would matter. ``min_repeat_ms``: a sample runs at
    least that long (more runs per sample than ``number`` where needed), which steadies the
    samples of short runs.
    """
    vm = relax.VirtualMachine(executable, device)
    args = [tvm.runtime.tensor(x, device) if not isinstance(x, tvm.runtime.Tensor) else x for x in inputs]
    vm.set_input("main", *args)
    with exclusive_device():
        t0 = time.perf_counter()
        vm.invoke_stateful("main")
        device.sync()
        first = time.perf_counter() - t0
        if first >= LONG_RUN_S:
            runs = max(number, int(-(-min_repeat_ms / 1e3 // first)))
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                for _ in range(runs):
                    vm.invoke_stateful("main")
                    device.sync()
                samples.append((time.perf_counter() - t0) / runs)
            return samples
        timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat,
                                  min_repeat_ms=min_repeat_ms)
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
