"""Where stages are timed: a :class:`StageTimer` runs kernels of a built model as one stage and
returns the seconds of each timed run. :class:`LocalTimer` times on this machine's device with
the runtime's own fork / switch / join path (``ios_tvm.runtime.time_stage``);
:class:`ios_tvm.cost.remote.RPCTimer` on devices behind an RPC tracker. A timer only runs
kernels: what to time and what to keep is the cost model's business (:mod:`ios_tvm.cost.measure`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import tvm
import tvm_ffi

from .. import runtime as _runtime
from ..core.search import Groups
from ..ir.graph import Node
from ..ir.target import CUDA
from ..ir.tensors import random_array
from ..runtime.profiling import exclusive_device


def node_arrays(nodes: Sequence[Node], seed: int = 0) -> list[list[np.ndarray]]:
    """Arguments (inputs, then outputs) of every node, as host arrays."""
    rng = np.random.default_rng(seed)
    return [[random_array(rng, shape, dtype) for shape, dtype in list(n.inputs) + list(n.outputs)] for n in nodes]


def flush_buffers(nbytes: int, device: Any) -> Callable[[], None]:
    """A function that overwrites ``nbytes`` of ``device``'s cache: two buffers of that size,
    allocated now, copied one into the other."""
    a, b = (tvm.runtime.empty((max(nbytes, 4) // 4,), "float32", device) for _ in range(2))
    return lambda: a.copyto(b)  # noqa: E731 - the copy is the flush


def find_function(mod: Any, name: str) -> Any:
    """Function ``name`` of a runtime module or of one of its imports (``None``: absent)."""
    if mod.implements_function(name):
        return mod.get_function(name)
    for sub in mod.imports:
        f = find_function(sub, name)
        if f is not None:
            return f
    return None


class StageTimer(Protocol):
    """Runs kernels of a built model as stages and returns the seconds of each timed run."""

    #: stages that can be timed at once (one per device or session)
    workers: int
    #: the device, for cache keys (``"cpu"``, the GPU's name, ``"rpc:<key>"``)
    device_name: str

    def load(self, executable: Any, nodes: Sequence[Node]) -> None:
        """Make the kernels of ``executable`` (the model's graph ``nodes``) ready to time."""

    def time(self, groups: Groups, worker: int = 0, replace: Mapping[int, Any] | None = None) -> list[float]:
        """Samples of one stage of the loaded model; ``replace``: node -> another kernel function
        with the same arguments (local timers only)."""

    def time_once(self, executable: Any, nodes: Sequence[Node], name: str) -> list[float]:
        """Samples of all kernels of a small separate ``executable`` (``nodes``) run as one group,
        on new arguments (a merged kernel); ``name`` identifies it."""

    def flush_before_samples(self, nbytes: int) -> None:
        """From now on overwrite ``nbytes`` of the device's cache before every timed sample
        (``0``: never, the default)."""


def sampled(run: Any, flush: Any, warmup: int, repeat: int) -> list[float]:
    """``repeat`` samples of ``run(warmup, repeat)``; with ``flush``, one run per sample, each
    after ``flush()`` (a stage then starts with a cold cache, as deep inside a model's run)."""
    if flush is None:
        return run(warmup, repeat)
    if warmup:
        run(warmup - 1, 1)  # ``warmup`` untimed runs (the timer takes at least one timed run)
    samples: list[float] = []
    for _ in range(repeat):
        flush()
        samples += run(0, 1)
    return samples


class LocalTimer:
    """Times stages on this machine's device with ``ios_tvm.runtime.time_stage``."""

    workers = 1

    def __init__(self, device_type: int, device: Any, warmup: int, repeat: int, launch: str = "kernels") -> None:
        self.device_type = device_type
        self.device = device
        self.warmup, self.repeat = warmup, repeat
        self._time_stage = _runtime.time_stage_graph if launch == "graph" else _runtime.time_stage
        self.device_name = str(device.device_name) if device_type == CUDA else "cpu"
        self.funcs: list[Any] = []  #: kernel function of each node of the loaded model
        self.args: list[list[Any]] = []  #: its arguments on the device
        self._keep: list[Any] = []  # executables whose kernels may be timed
        self._flush_bytes = 0
        self._flush_fn: Callable[[], None] | None = None  # made on the first timing that flushes

    def flush_before_samples(self, nbytes: int) -> None:
        self._flush_bytes = max(nbytes, 0)
        self._flush_fn = None

    def _flush(self) -> Callable[[], None] | None:
        if not self._flush_bytes:
            return None
        if self._flush_fn is None:  # allocated on the first timing, not when nothing is timed
            self._flush_fn = flush_buffers(self._flush_bytes, self.device)
        return self._flush_fn

    def load(self, executable: Any, nodes: Sequence[Node]) -> None:
        self.funcs = [self._function(executable, n.kernel) for n in nodes]
        self.args = [[tvm.runtime.tensor(a, self.device) for a in arrays] for arrays in node_arrays(nodes)]
        self._keep.append(executable)

    @staticmethod
    def _function(executable: Any, kernel: str) -> Any:
        f = find_function(executable.mod, kernel) or tvm_ffi.get_global_func(kernel, allow_missing=True)
        if f is None:
            raise AssertionError(f"kernel {kernel} of the graph is not in the module built from it")
        return f

    def _run(self, funcs: list[list[Any]], args: list[list[Any]]) -> list[float]:
        def run(warmup: int, repeat: int) -> list[float]:
            return self._time_stage(self.device_type, self.device.index, funcs, args, warmup, repeat)

        with exclusive_device():  # other processes timing on this device wait (IOS_TVM_DEVICE_LOCK)
            return sampled(run, self._flush(), self.warmup, self.repeat)

    def time(self, groups: Groups, worker: int = 0, replace: Mapping[int, Any] | None = None) -> list[float]:
        """``replace[v]``: another kernel function taking node ``v``'s arguments, or a
        ``(function, arguments)`` pair calling something else in its place (a vendor kernel)."""
        replace = replace or {}

        def call(v: int) -> tuple[Any, list[Any]]:
            r = replace.get(v)
            if isinstance(r, tuple):
                return r
            return (self.funcs[v] if r is None else r), self.args[v]

        calls = [[call(v) for v in g] for g in groups]
        return self._run([[f for f, _ in g] for g in calls], [[a for _, a in g] for g in calls])

    def time_once(self, executable: Any, nodes: Sequence[Node], name: str) -> list[float]:
        self._keep.append(executable)
        args = [[tvm.runtime.tensor(a, self.device) for a in arrays] for arrays in node_arrays(nodes)]
        return self._run([[self._function(executable, n.kernel) for n in nodes]], [args])

    def keep(self, executable: Any) -> None:
        """Hold ``executable`` alive as long as this timer (its kernels are being timed)."""
        self._keep.append(executable)
