"""Measured stage costs: the kernels TVM built, timed through the runtime's own stage path.

Flow (driven by :func:`ios_tvm.optimize`): the search enumerates every candidate stage first and
hands them to :meth:`MeasuredCostModel.prepare`, which builds the model once (the sequential
pipeline, so the very kernels the scheduled model launches) and times each stage not already in
the cache with the same fork / switch / join calls a lowered model makes, so a stage costs here
what it costs there.

Where the timing happens is a *timer* (:class:`ios_tvm.cost.timers.StageTimer`):
:class:`~ios_tvm.cost.timers.LocalTimer` on this machine's device,
:class:`ios_tvm.cost.remote.RPCTimer` on devices behind an RPC tracker. The model decides what to
time and caches it; the timer only runs kernels.
"""

from __future__ import annotations

import logging
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import tvm
import tvm_ffi
from tvm import relax

from ..compiler.databases import DatabaseLike, database_tag, resolve_database
from ..compiler.pipeline import build
from ..core.search import Groups
from ..errors import CUDAGraphError, UnsupportedModelError
from ..ir.bindings import num_input
from ..ir.graph import OpGraph, call_args, extract_graph, tensor_bytes
from ..ir.merge_plan import merged_module
from ..ir.target import CUDA, TargetLike, as_target, device_type_of, require_device
from .analytic import AnalyticCostModel
from .cache import StageCache, content_key, default_cache_dir
from .model import CostModel
from .remote import RPCConfig, RPCTimer
from .timers import LocalTimer, StageTimer

logger = logging.getLogger("ios_tvm")

#: seconds a measurement costs besides its runs (Python, arguments, the runtime's timer)
STAGE_OVERHEAD_S = 1e-3
#: a measurement predicted to take longer than this (seconds) is announced as a warning
LONG_MEASUREMENT_S = 600.0


def format_duration(seconds: float) -> str:
    """``"0.3 s"``, ``"45 s"``, ``"12 min"``, ``"3 h 36 min"`` (never ``"0 s"``)."""
    if seconds < 0.1:
        return "under 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


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
    cache_state
        What the device's cache holds when a stage is timed: ``"hot"`` (the stage's buffers, from
        its previous run: every sample after the first), ``"flush"`` (nothing of it: the L2 cache
        is overwritten before every sample), or ``"auto"`` (default): ``"flush"`` on a GPU when
        the model's weights do not fit in its L2 cache (a whole run then finds each stage's
        weights evicted by the stages before it), else ``"hot"``. The first GPU run timed stages
        hot and under-predicted Inception-v3 (95 MB of weights, 60 MB of L2) by 15-40%.
    launch
        How the stage's kernels are launched, as the build will launch them: ``"kernels"`` (one
        host launch per kernel, the stage calls between them) or ``"graph"`` (CUDA targets: the
        stage captured as one CUDA graph and replayed, as a build with ``cuda_graph=True``
        replays the whole run; local devices only).
    """

    warmup: int = 3
    repeat: int = 10
    statistic: str = "median"
    cache_dir: str | Path | None | bool = None
    device_id: int = 0
    progress: bool = True
    rpc: RPCConfig | None = None  #: measure on remote devices
    cache_state: str = "auto"
    launch: str = "kernels"

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeat < 1:
            raise ValueError(f"need warmup >= 0 and repeat >= 1, got {self.warmup}, {self.repeat}")
        if self.statistic not in ("median", "trimmed_mean"):
            raise ValueError(f"statistic must be 'median' or 'trimmed_mean', got {self.statistic!r}")
        if self.cache_state not in CACHE_STATES:
            raise ValueError(f"cache_state must be one of {CACHE_STATES}, got {self.cache_state!r}")
        if self.launch not in LAUNCH_MODES:
            raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {self.launch!r}")


CACHE_STATES = ("auto", "hot", "flush")
LAUNCH_MODES = ("kernels", "graph")


def summarize(samples: Sequence[float], statistic: str) -> float:
    """``statistic`` (see :class:`MeasureConfig`) of the samples."""
    if statistic == "median":
        return float(statistics.median(samples))
    s = sorted(samples)
    k = len(s) // 4
    middle = s[k:len(s) - k] or s
    return float(sum(middle) / len(middle))


def weight_bytes(graph: OpGraph) -> int:
    """Bytes of the model's weights: parameters of ``main`` after its ``num_input`` inputs, and
    the constants its kernels read."""
    fn = graph.mod["main"]
    total = sum(tensor_bytes([int(d) for d in p.ty.shape.values], str(p.ty.dtype))
                for p in fn.params[num_input(fn):] if isinstance(p.ty, relax.TensorType))
    seen: set[Any] = set()
    for b in graph.bindings:
        for a in call_args(b.value):
            value = getattr(a, "value", None)
            if isinstance(a, tvm.ir.expr.GenericConst) and isinstance(value, tvm.runtime.Tensor) and a not in seen:
                seen.add(a)
                total += tensor_bytes(tuple(int(d) for d in value.shape), str(value.dtype))
    return total


def kernel_keys(graph: OpGraph) -> list[list[Any]]:
    """What the measured cost model keys each node by, without a device: the kernel (TVM's
    structural hash of its PrimFunc; a packed function's name), then the shapes and dtypes of
    its inputs and outputs. A stage's cache key is these per group, in order
    (:meth:`MeasuredCostModel.stage_key`), so stages of repeated cells share one measurement.

    Raises
    ------
    UnsupportedModelError
        A node the measured model cannot time on its own.
    """
    if graph.mod is None:
        raise ValueError("kernel keys need the graph's lowered module (graph.mod); use extract_graph")
    hashes: dict[str, int] = {}
    keys = []
    for node in graph.nodes:
        if node.op not in ("relax.call_tir", "relax.call_dps_packed"):
            raise UnsupportedModelError(f"cannot measure kernel {node.kernel} ({node.op}) on its own yet; "
                                        "use the analytic cost model (cost_model='analytic')")
        if node.kernel not in hashes:
            fn = graph.mod[node.kernel] if node.op == "relax.call_tir" else None
            hashes[node.kernel] = int(tvm_ffi.structural_hash(fn)) if fn is not None else 0
        keys.append([node.kernel if hashes[node.kernel] == 0 else hashes[node.kernel], node.inputs, node.outputs])
    return keys


def distinct_stages(keys: Sequence[Any], stages: Iterable[Groups]) -> dict[tuple, Groups]:
    """The stages of ``stages`` that differ by content (``keys[v]`` of their nodes per group, in
    order, as :func:`kernel_keys` gives them): ``{content: first stage with it}``. What measuring
    them all costs; cheap to compute (each node's key is numbered once)."""
    number: dict[str, int] = {}
    ids = [number.setdefault(repr(k), len(number)) for k in keys]
    out: dict[tuple, Groups] = {}
    for groups in stages:
        out.setdefault(tuple(tuple(ids[v] for v in g) for g in groups), groups)
    return out


def measure_seconds(latencies: Iterable[float], runs: int, workers: int = 1) -> float:
    """Predicted seconds to time stages of these latencies ``runs`` times each (warm-up runs
    included), plus :data:`STAGE_OVERHEAD_S` per stage, spread over ``workers``."""
    return sum(runs * lat + STAGE_OVERHEAD_S for lat in latencies) / max(1, workers)


def resolve_cache_state(requested: str, l2_bytes: int, weights: int) -> tuple[str, int]:
    """``(state, bytes to flush before each sample)`` for ``MeasureConfig.cache_state``
    ``requested`` on a device with ``l2_bytes`` of L2 cache (0: a CPU) and a model with
    ``weights`` bytes of weights. ``"auto"`` flushes on a GPU whose L2 the weights overflow.
    A flush overwrites twice the L2 (64 MB, twice, on a CPU: more than a last-level cache)."""
    state = requested
    if state == "auto":
        state = "flush" if l2_bytes and weights > l2_bytes else "hot"
    return state, (2 * (l2_bytes or 64 << 20) if state == "flush" else 0)


class MeasuredCostModel(CostModel):
    """Stage latencies measured on the target's device (CPU or one CUDA GPU), or on remote
    devices (``MeasureConfig(rpc=...)``)."""

    name = "measure"
    supports_merge = True

    @property
    def measures_here(self) -> bool:  # type: ignore[override]
        """Timed on this machine's device (not over RPC)."""
        return self.config.rpc is None

    def measurement(self) -> dict[str, Any]:
        """How the stages are timed: ``{"cache_state", "launch", "warmup", "repeat"}``
        (``cache_state`` resolved for the model last measured)."""
        return {"cache_state": self.cache_state, "launch": self.config.launch,
                "warmup": self.config.warmup, "repeat": self.config.repeat}

    def prediction_note(self, dtype: str = "float32") -> dict[str, str]:
        """Latencies measured on the device; end to end adds the gaps between kernel launches."""
        return {"cost_model": self.name, "device": str(self.timer.device_name),
                "known_error": "stage latencies measured on the device; end to end adds the gaps between kernel "
                               "launches (H200, Inception-v3: sequential 8.76 ms end to end vs 7.61 ms, the sum of "
                               "its measured stages)"}

    def __init__(self, target: TargetLike, config: MeasureConfig | None = None,
                 database: DatabaseLike = "auto") -> None:
        self.target = as_target(target)
        self.database = database
        self.config = config or MeasureConfig()
        device_type = device_type_of(self.target)
        self.timer: StageTimer
        if self.config.launch == "graph" and device_type != CUDA:
            raise CUDAGraphError(f"MeasureConfig(launch='graph') times stages as CUDA graphs and needs a CUDA "
                                 f"target, not {self.target.kind.name!r}")
        if self.config.rpc is not None:
            if self.config.launch == "graph":
                raise NotImplementedError("stages are timed as CUDA graphs on this machine's GPU only, not over "
                                          "RPC: measure on the GPU machine, or with launch='kernels'")
            self.timer = RPCTimer(self.config.rpc, device_type, self.config.device_id,
                                  self.config.warmup, self.config.repeat)
        else:
            device = require_device(self.target, self.config.device_id, "cost_model='measure'")
            self.timer = LocalTimer(device_type, device, self.config.warmup, self.config.repeat, self.config.launch)
        self._graph: OpGraph | None = None
        self._keys: list[Any] = []
        self._loaded = False
        self.cache: StageCache | None = None
        self.cache_state = self.config.cache_state  #: resolved per model (``"hot"`` or ``"flush"``)
        self.measured = 0

    # -- set-up ------------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        return {"target": str(self.target), "device": self.timer.device_name, "tvm": tvm.__version__,
                "warmup": self.config.warmup, "repeat": self.config.repeat, "cache_state": self.cache_state,
                "launch": self.config.launch,
                "kernels": database_tag(self.database, self.target)}

    def _l2_bytes(self) -> int:
        """L2 size of the GPU (target attribute, else asked from the device); 0 on a CPU."""
        if device_type_of(self.target) != CUDA:
            return 0
        known = int(self.target.attrs.get("l2_cache_size_bytes", 0))
        device = getattr(self.timer, "device", None)
        return known or (int(device.l2_cache_size_bytes or 0) if device is not None else 0)

    def _setup(self, graph: OpGraph) -> None:
        if self._graph is not None and self._graph.fingerprint == graph.fingerprint:
            return
        if graph.mod is None:
            raise ValueError("measuring needs the graph's lowered module (graph.mod); use extract_graph")
        self._keys = kernel_keys(graph)
        self._loaded = False
        self.cache_state, flush_bytes = resolve_cache_state(self.config.cache_state, self._l2_bytes(),
                                                            weight_bytes(graph))
        self.timer.flush_before_samples(flush_bytes)
        cache_dir = self.config.cache_dir
        directory = None if cache_dir is False else (default_cache_dir() if cache_dir in (None, True) else cache_dir)
        self.cache = StageCache(directory, self._context())
        self._graph = graph

    def build_model(self, mod: tvm.IRModule) -> Any:
        """Build ``mod`` (the model, or a merged kernel's module) as the measured stages run it:
        :func:`ios_tvm.build` with this model's target and database, sequentially."""
        return build(mod, self.target, database=self.database)

    def _load(self) -> None:
        """Build the model once and load it into the timer (first measurement only: a search
        whose stages are all cached builds nothing)."""
        if self._loaded:
            return
        graph = self._graph
        assert graph is not None
        if graph.source is None and resolve_database(self.database, self.target) is not None:
            logger.warning("ios_tvm: measuring the kernels of an already lowered module; tuning records "
                           "may not apply to them (use extract_graph(mod, target) on the model itself)")
        # From the source model when there is one: the kernels of the lowered module, lowered
        # again, carry new attributes and no longer match their tuning records.
        self.timer.load(self.build_model(graph.source if graph.source is not None else graph.mod), graph.nodes)
        self._loaded = True

    def stage_key(self, groups: Groups) -> str:
        """Cache key of a stage: its kernels, shapes and dtypes per group, in order."""
        return content_key([[self._keys[v] for v in g] for g in groups])

    def _measure(self, groups: Groups, worker: int = 0, replace: Mapping[int, Any] | None = None) -> list[float]:
        self._load()
        samples = self.timer.time(groups, worker, replace)
        self.measured += 1
        return samples

    def load(self, graph: OpGraph) -> None:
        """Build ``graph``'s model and load it into the timer now (a search does it at its first
        measurement; a search whose stages are all cached builds nothing)."""
        self._setup(graph)
        self._load()

    @property
    def loaded(self) -> bool:
        """Whether the model was built and loaded into the timer."""
        return self._loaded

    def samples(self, graph: OpGraph, groups: Groups, replace: Mapping[int, Any] | None = None) -> list[float]:
        """Time ``groups`` now (no cache): the seconds of each timed run, node ``v`` running
        ``replace[v]`` (a compiled kernel with the same arguments, e.g. another schedule of it)
        instead of the model's kernel."""
        if replace and self.config.rpc is not None:
            raise NotImplementedError("kernel replacements are timed on this machine's device, not over RPC")
        self._setup(graph)
        return self._measure(groups, replace=replace)

    def measure_stage(self, graph: OpGraph, groups: Groups, replace: Mapping[int, Any] | None = None) -> float:
        """:meth:`samples`, summarized by the configured statistic."""
        if self.config.rpc is not None:
            raise NotImplementedError("measure_stage times on this machine's device, not over RPC")
        return summarize(self.samples(graph, groups, replace), self.config.statistic)

    def keep(self, executable: Any) -> None:
        """Hold ``executable`` alive as long as this model (its kernels are being timed)."""
        assert isinstance(self.timer, LocalTimer), "kernel replacements are timed locally"
        self.timer.keep(executable)

    def estimate_seconds(self, graph: OpGraph, stages: Sequence[Groups]) -> float:
        """Predicted seconds to measure ``stages`` (without building the model): each stage run
        ``warmup + repeat`` times at the latency the analytic model predicts for the target, plus
        :data:`STAGE_OVERHEAD_S`, spread over the timer's workers."""
        analytic = AnalyticCostModel.for_target(self.target)
        return measure_seconds((analytic.stage_latency(graph, groups) for groups in stages),
                               self.config.warmup + self.config.repeat, self.timer.workers)

    def _announce(self, graph: OpGraph, todo: Sequence[Groups], cached: int) -> None:
        """Say, before measuring, how many distinct stages and how long; warn when it is long."""
        if not todo:
            logger.info("ios_tvm: all %d distinct candidate stages are in the stage cache", cached)
            return
        seconds = self.estimate_seconds(graph, todo)
        about = "about " if seconds >= 0.1 else ""
        what = (f"ios_tvm: measuring {len(todo)} distinct candidate stages ({cached} more are in the stage cache; "
                f"each runs {self.config.warmup + self.config.repeat} times) takes {about}{format_duration(seconds)} "
                "(analytic estimate) plus building the model once")
        if seconds < LONG_MEASUREMENT_S:
            logger.info("%s", what)
            return
        logger.warning("%s. To wait less: the analytic cost model (cost_model='analytic'; CLI --cost-model "
                       "analytic), a smaller model (CLI --small), fewer candidate stages (smaller max_group_size / "
                       "max_num_groups; CLI -r / -s), or a GPU, where stages run far faster. Ctrl-C keeps what was "
                       "measured: the same call resumes from the stage cache", what)

    # -- CostModel ---------------------------------------------------------------------------
    def prepare(self, graph: OpGraph, stages: Iterable[Groups]) -> None:
        """Measure every stage not in the cache (with a progress bar), then save the cache."""
        self._setup(graph)
        assert self.cache is not None
        cache = self.cache
        todo = []
        cached = 0
        for groups in distinct_stages(self._keys, stages).values():  # hash each content once
            key = self.stage_key(groups)
            if cache.get(key) is None:
                todo.append((key, groups))
            else:
                cached += 1
        self._announce(graph, [groups for _, groups in todo], cached)
        bar = None
        if self.config.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="measuring stages", unit="stage", file=sys.stderr,
                       disable=None)
        try:
            if todo:
                self._load()
            workers = max(1, self.timer.workers)
            lock = threading.Lock()

            def work(w: int) -> None:
                for i in range(w, len(todo), workers):
                    key, groups = todo[i]
                    samples = self._measure(groups, w)
                    with lock:
                        cache.put(key, samples)
                        if bar is not None:
                            bar.update(1)
                        if (i + 1) % 5000 == 0:
                            cache.save()

            if workers == 1:
                work(0)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for f in [pool.submit(work, w) for w in range(workers)]:
                        f.result()
        finally:
            if bar is not None:
                bar.close()
            cache.save()

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
        self._setup(graph)
        assert self.cache is not None and graph.merges is not None
        units = [graph.merges.units[v] for v in nodes]
        key = content_key("merge", [self._keys[v] for v in nodes],  # conv: kernels, paddings; matmul: weight shapes
                          *[list(part) for part in zip(*(u.cost_key for u in units))])
        samples = self.cache.get(key)
        if samples is None:
            mini = merged_module(units, zero_weights=True)
            samples = self.timer.time_once(self.build_model(mini), extract_graph(mini, self.target).nodes,
                                           f"ios_merge_{key[:16]}")
            self.measured += 1
            self.cache.put(key, samples)
        return summarize(samples, self.config.statistic)
