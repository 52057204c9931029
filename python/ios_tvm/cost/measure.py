"""Measured stage costs: the kernels TVM built, timed through the runtime's own stage path.

Flow (driven by :func:`ios_tvm.optimize`): the search enumerates every candidate stage first and
hands them to :meth:`MeasuredCostModel.prepare`, which builds the model once (the sequential
pipeline, so the very kernels the scheduled model launches), allocates arguments for every
kernel, and times each stage not already in the cache with ``ios_tvm.runtime.time_stage``: the
same fork / switch / join calls a lowered model makes, so a stage costs here what it costs there.
"""

from __future__ import annotations

import logging
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tvm
import tvm_ffi

from .. import runtime as _runtime
from ..graph import OpGraph, as_target
from ..lower import device_type_of
from .cache import StageCache, content_key, default_cache_dir

logger = logging.getLogger("ios_tvm")

Groups = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class MeasureConfig:
    """How stages are timed (separate from what the search considers).

    Attributes
    ----------
    warmup, repeat
        Untimed runs, then timed runs, per stage.
    statistic
        ``"median"`` or ``"trimmed_mean"`` (mean of the middle half) of the timed runs.
    cache_dir
        Where measured stages persist (``None``: the default directory; ``False``: no cache).
    device_id
        Which GPU (CUDA targets).
    progress
        Show a progress bar while measuring.
    rpc
        Measure through an RPC tracker on ``rpc.sessions`` remote devices instead of here
        (:mod:`ios_tvm.cost.remote`).
    """

    warmup: int = 3
    repeat: int = 10
    statistic: str = "median"
    cache_dir: str | Path | None | bool = None
    device_id: int = 0
    progress: bool = True
    rpc: Any = None  #: an :class:`ios_tvm.cost.remote.RPCConfig`: measure on remote devices

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeat < 1:
            raise ValueError(f"need warmup >= 0 and repeat >= 1, got {self.warmup}, {self.repeat}")
        if self.statistic not in ("median", "trimmed_mean"):
            raise ValueError(f"statistic must be 'median' or 'trimmed_mean', got {self.statistic!r}")


def summarize(samples: Sequence[float], statistic: str) -> float:
    if statistic == "median":
        return float(statistics.median(samples))
    s = sorted(samples)
    k = len(s) // 4
    middle = s[k:len(s) - k] or s
    return float(sum(middle) / len(middle))


def _random_array(rng: np.random.Generator, shape: Any, dtype: str) -> np.ndarray:
    """Timing data: uniform floats; zeros for integer and boolean tensors (they may be indices,
    and a random index reads out of bounds)."""
    if dtype.startswith(("int", "uint", "bool")):
        return np.zeros(shape, dtype=dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def _random_tensor(rng: np.random.Generator, shape: Any, dtype: str, device: Any) -> Any:
    return tvm.runtime.tensor(_random_array(rng, shape, dtype), device)


def _find_function(mod: Any, name: str) -> Any:
    if mod.implements_function(name):
        return mod.get_function(name)
    for sub in mod.imports:
        f = _find_function(sub, name)
        if f is not None:
            return f
    return None


class MeasuredCostModel:
    """Stage latencies measured on the target's device (CPU or one CUDA GPU)."""

    name = "measure"

    def __init__(self, target: str | dict | tvm.target.Target, config: MeasureConfig | None = None,
                 database: Any = "auto") -> None:
        self.target = as_target(target)
        self.database = database
        self.config = config or MeasureConfig()
        self.device_type = device_type_of(self.target)
        self.device = tvm.cpu(0) if self.device_type == 1 else tvm.cuda(self.config.device_id)
        self._sessions: list[Any] = []
        self._remote_args: list[list[list[Any]]] = []
        self._remote_mod: list[Any] = []
        if self.config.rpc is None and not self.device.exist:
            raise RuntimeError(
                f"cost_model='measure' needs the target's device, and {self.device} is not present "
                "(no GPU or no NVIDIA driver). Measure on a GPU machine, or use cost_model='analytic'")
        self._graph_fp: str | None = None
        self._funcs: list[Any] = []
        self._args: list[list[Any]] = []
        self._keys: list[Any] = []
        self._exec: Any = None
        self.cache: StageCache | None = None
        self.measured = 0
        self._keep: list[Any] = []  # executables whose kernels were timed

    # -- set-up ------------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        if self.config.rpc is not None:
            dev_name = f"rpc:{self.config.rpc.key}"
        else:
            dev_name = str(self.device.device_name) if self.device_type == 2 else "cpu"
        from ..tuning import database_tag

        return {"target": str(self.target), "device": dev_name, "tvm": tvm.__version__,
                "warmup": self.config.warmup, "repeat": self.config.repeat,
                "kernels": database_tag(self.database, self.target)}

    def _setup(self, graph: OpGraph) -> None:
        if self._graph_fp == graph.fingerprint:
            return
        if graph.mod is None:
            raise ValueError("measuring needs the graph's lowered module (graph.mod); use extract_graph")
        hashes: dict[str, int] = {}
        self._funcs, self._args, self._keys = [], [], []
        self._exec = None
        self._graph = graph
        for node in graph.nodes:
            if node.op not in ("relax.call_tir", "relax.call_dps_packed"):
                raise ValueError(f"cannot measure kernel {node.kernel} ({node.op}) on its own yet")
            if node.kernel not in hashes:
                fn = graph.mod[node.kernel] if node.op == "relax.call_tir" else None
                hashes[node.kernel] = int(tvm_ffi.structural_hash(fn)) if fn is not None else 0
            self._keys.append([node.kernel if hashes[node.kernel] == 0 else hashes[node.kernel],
                               node.inputs, node.outputs])
        cache_dir = self.config.cache_dir
        directory = None if cache_dir is False else (default_cache_dir() if cache_dir in (None, True) else cache_dir)
        self.cache = StageCache(directory, self._context())
        self._graph_fp = graph.fingerprint

    def _build(self) -> None:
        """Build the model once and allocate every kernel's arguments (first measurement only:
        a search whose stages are all cached builds nothing)."""
        if self._exec is not None:
            return
        from ..compiler import build

        graph = self._graph
        from ..tuning import resolve_database

        if graph.source is None and resolve_database(self.database, self.target) is not None:
            logger.warning("ios_tvm: measuring the kernels of an already lowered module; tuning records "
                           "may not apply to them (use extract_graph(mod, target) on the model itself)")
        # From the source model when there is one: the kernels of the lowered module, lowered
        # again, carry new attributes and no longer match their tuning records.
        self._exec = build(graph.source if graph.source is not None else graph.mod, self.target,
                           database=self.database)
        if self.config.rpc is not None:
            from .remote import connect

            self._sessions = connect(self.config.rpc, self.device_type, self.config.device_id)
            for sess in self._sessions:
                self._remote_mod.append(sess.load(f"ios_model_{graph.fingerprint[7:23]}", self._exec))
                rng = np.random.default_rng(0)
                self._remote_args.append([sess.tensors([_random_array(rng, shape, dtype)
                                                        for shape, dtype in list(n.inputs) + list(n.outputs)])
                                          for n in graph.nodes])
            return
        rng = np.random.default_rng(0)
        for node in graph.nodes:
            f = _find_function(self._exec.mod, node.kernel)
            if f is None:
                f = tvm_ffi.get_global_func(node.kernel, allow_missing=True)
            if f is None:
                raise RuntimeError(f"kernel {node.kernel} is not in the built module")
            self._funcs.append(f)
            self._args.append([_random_tensor(rng, shape, dtype, self.device)
                               for shape, dtype in list(node.inputs) + list(node.outputs)])

    def stage_key(self, groups: Groups) -> str:
        return content_key([[self._keys[v] for v in g] for g in groups])

    def _measure(self, groups: Groups, session: int = 0, replace: dict[int, Any] | None = None) -> list[float]:
        """Samples of one stage; ``replace``: node -> kernel run instead of the model's (local only)."""
        self._build()
        if self._sessions:
            kernels = [[(self._graph.nodes[v].kernel, self._remote_args[session][v]) for v in g] for g in groups]
            samples = self._sessions[session].time(self._remote_mod[session], kernels,
                                                   self.config.warmup, self.config.repeat)
            self.measured += 1
            return samples
        replace = replace or {}
        fs = [[replace.get(v, self._funcs[v]) for v in g] for g in groups]
        args = [[self._args[v] for v in g] for g in groups]
        samples = _runtime.time_stage(self.device_type, self.config.device_id, fs, args,
                                      self.config.warmup, self.config.repeat)
        self.measured += 1
        return samples

    def measure_stage(self, graph: OpGraph, groups: Groups, replace: dict[int, Any] | None = None) -> float:
        """Time ``groups`` now (no cache), node ``v`` running ``replace[v]`` (a compiled kernel
        with the same arguments, e.g. another schedule of it) instead of the model's kernel."""
        if self.config.rpc is not None:
            raise NotImplementedError("measure_stage times on this machine's device, not over RPC")
        self._setup(graph)
        return summarize(self._measure(groups, replace=replace), self.config.statistic)

    def keep(self, executable: Any) -> None:
        """Hold ``executable`` alive as long as this model (its kernels are being timed)."""
        self._keep.append(executable)

    # -- CostModel ---------------------------------------------------------------------------
    def prepare(self, graph: OpGraph, stages: Sequence[Groups]) -> None:
        """Measure every stage not in the cache (with a progress bar), then save the cache."""
        self._setup(graph)
        assert self.cache is not None
        todo = []
        seen = set()
        for groups in stages:
            key = self.stage_key(groups)
            if key not in seen and self.cache.get(key) is None:
                seen.add(key)
                todo.append((key, groups))
        logger.info("ios_tvm: %d candidate stages, %d to measure", len(stages), len(todo))
        bar = None
        if self.config.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="measuring stages", unit="stage", file=sys.stderr,
                       disable=None)
        try:
            if todo:
                self._build()
            workers = max(1, len(self._sessions))
            lock = threading.Lock()

            def work(w: int) -> None:
                for i in range(w, len(todo), workers):
                    key, groups = todo[i]
                    samples = self._measure(groups, w)
                    with lock:
                        self.cache.put(key, samples)
                        if bar is not None:
                            bar.update(1)
                        if (i + 1) % 5000 == 0:
                            self.cache.save()

            if workers == 1:
                work(0)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for f in [pool.submit(work, w) for w in range(workers)]:
                        f.result()
        finally:
            if bar is not None:
                bar.close()
            self.cache.save()

    def stage_latency(self, graph: OpGraph, groups: Groups) -> float:
        self._setup(graph)
        assert self.cache is not None
        key = self.stage_key(groups)
        samples = self.cache.get(key)
        if samples is None:
            samples = self._measure(groups)
            self.cache.put(key, samples)
        return summarize(samples, self.config.statistic)

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        """Time the merged kernel (and its split) built from the merged module, on one stream."""
        from ..compiler import build
        from ..graph import extract_graph
        from ..merge import merged_module

        self._setup(graph)
        assert self.cache is not None
        units = [graph.merges.units[v] for v in nodes]
        key = content_key("merge", [self._keys[v] for v in nodes],
                          [list(u.kernel) for u in units], [list(u.padding) for u in units])
        samples = self.cache.get(key)
        if samples is None:
            mini = merged_module(units, zero_weights=True)
            mgraph = extract_graph(mini, self.target)
            ex = build(mini, self.target, database=self.database)
            rng = np.random.default_rng(0)
            arrays = [[_random_array(rng, shape, dtype) for shape, dtype in list(n.inputs) + list(n.outputs)]
                      for n in mgraph.nodes]
            if self.config.rpc is not None:
                self._build()
                sess = self._sessions[0]
                rmod = sess.load(f"ios_merge_{key[:16]}", ex)
                kernels = [[(n.kernel, sess.tensors(a)) for n, a in zip(mgraph.nodes, arrays)]]
                samples = sess.time(rmod, kernels, self.config.warmup, self.config.repeat)
            else:
                funcs = [_find_function(ex.mod, n.kernel) for n in mgraph.nodes]
                args = [[tvm.runtime.tensor(x, self.device) for x in a] for a in arrays]
                samples = _runtime.time_stage(self.device_type, self.config.device_id, [funcs], [args],
                                              self.config.warmup, self.config.repeat)
                self._keep.append(ex)
            self.measured += 1
            self.cache.put(key, samples)
        return summarize(samples, self.config.statistic)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config), **self._context()}
