"""Stage costs with vendor kernels: the cost models that know a node runs cuDNN or cuBLASLt
instead of TVM's kernel (which nodes, and how they are called: :mod:`ios_tvm.ir.vendor`).

* :class:`VendorAnalyticCostModel`: the analytic model (:mod:`ios_tvm.cost.analytic`) with the
  vendor nodes' kernel times from :class:`VendorSpec`;
* :class:`VendorMeasuredCostModel`: a measured model's stages timed with the vendor nodes
  calling ``ios_tvm.vendor.*`` on the device (same timer, same stage path, the stage cache keyed
  apart);
* :func:`with_vendor`: either, for the cost model a search uses.

What the analytic model assumes about vendor kernels (not yet measured: the GPU kit times them)
-----------------------------------------------------------------------------------------------
cuDNN's and cuBLASLt's kernels are tuned per architecture, so they are modelled as reaching a
fixed fraction of the device's peak whatever the shape, and as filling the device: convolutions
``eta = 0.55`` of the FP32 peak (0.145 for TVM's untuned ones: the calibrated
:data:`~ios_tvm.cost.analytic.GPU_H100_CLASS`), matmuls 0.7; float16, and float32 with TF32,
run on the tensor cores at 0.5 of their peak (``dtype_peaks``; TF32 at half the float16 rate, as
on NVIDIA's H100 datasheet: 494 vs 989 TFLOP/s dense). A vendor call costs more on the host than
a TVM kernel launch (a packed call, the plan lookup, cuDNN's own launch): ``L = 6 us``. The
result orders the two as expected for the calibrated preset (vendor faster on any convolution
with more than about 10 MFLOP), and nothing finer: ``kernels="auto"`` chooses by measurement on
a GPU.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import tvm_ffi

from ..core.search import Groups
from ..ir.graph import OpGraph
from ..ir.vendor import VendorSite
from .analytic import AnalyticCostModel, DeviceSpec, kernel_dtype
from .cache import content_key
from .measure import MeasuredCostModel, summarize
from .model import CostModel

logger = logging.getLogger("ios_tvm")


@dataclass(frozen=True)
class VendorSpec:
    """How fast vendor kernels are assumed to run (see the module docstring)."""

    conv_efficiency: float = 0.55
    matmul_efficiency: float = 0.7
    tensor_core_efficiency: float = 0.5
    tf32_fraction: float = 0.5  #: TF32 peak over the float16 tensor-core peak
    launch_overhead: float = 6e-6


KNOWN_ERROR = ("vendor kernels (cuDNN / cuBLASLt) assumed at fixed fractions of the datasheet peaks, not yet "
               "measured on a GPU")


class VendorAnalyticCostModel(AnalyticCostModel):
    """:class:`~ios_tvm.cost.analytic.AnalyticCostModel` whose ``vendor`` nodes run vendor kernels."""

    name = "analytic"

    def __init__(self, device: DeviceSpec | None = None, vendor: Mapping[int, VendorSite] | None = None,
                 tf32: bool = False, spec: VendorSpec = VendorSpec()) -> None:
        super().__init__(device)
        self.vendor = dict(vendor or {})
        self.tf32 = tf32
        self.spec = spec

    def prediction_note(self, dtype: str = "float32") -> dict[str, str]:
        note = super().prediction_note(dtype)
        if self.vendor:
            note = {**note, "known_error": f"{note['known_error']}; {KNOWN_ERROR}"}
        return note

    def vendor_time(self, graph: OpGraph, node: int, site: VendorSite) -> tuple[float, float]:
        """``(t_k, w_k)`` of ``node`` run by the vendor kernel ``site``."""
        n = graph.nodes[node]
        d, sp = self.device, self.spec
        dtype = kernel_dtype(n.inputs, n.outputs)
        fp16_peak = dict(d.dtype_peaks).get("float16")
        if dtype == "float16" and fp16_peak:
            peak = fp16_peak * sp.tensor_core_efficiency
        elif dtype == "float32" and self.tf32 and fp16_peak:
            peak = fp16_peak * sp.tf32_fraction * sp.tensor_core_efficiency
        else:
            peak = d.peak_flops * (sp.conv_efficiency if site.kind == "conv2d" else sp.matmul_efficiency)
        work = max(n.flops / peak, n.bytes / d.bandwidth)
        return sp.launch_overhead + work, work

    def node_kernel_time(self, graph: OpGraph, node: int) -> tuple[float, float]:
        site = self.vendor.get(node)
        return super().node_kernel_time(graph, node) if site is None else self.vendor_time(graph, node, site)


class VendorMeasuredCostModel(CostModel):
    """A :class:`~ios_tvm.cost.measure.MeasuredCostModel` (``base``) whose ``vendor`` nodes call
    their vendor kernels: the same built model, timer and stage cache, stage keys marked for the
    vendor nodes, and each such node timed as the build will call it (its tensors, the integer
    attributes, its own workspace)."""

    name = "measure"
    supports_merge = True

    def __init__(self, base: MeasuredCostModel, vendor: Mapping[int, VendorSite], tf32: bool = False) -> None:
        if base.config.rpc is not None:
            raise NotImplementedError("vendor kernels are timed on this machine's GPU, not over RPC: measure on the GPU "
                                      "machine, or use kernels='tvm'")
        self.base = base
        self.vendor = dict(vendor)
        self.tf32 = tf32
        self._calls: dict[int, tuple[Any, list[Any]]] = {}

    @property
    def measures_here(self) -> bool:  # type: ignore[override]
        return self.base.measures_here

    def measurement(self) -> dict[str, Any]:
        return self.base.measurement()

    def prediction_note(self, dtype: str = "float32") -> dict[str, str]:
        return self.base.prediction_note(dtype)

    def _key(self, groups: Groups) -> str:
        keys = self.base._keys
        return content_key([[keys[v] + ([["vendor", self.vendor[v].func, int(self.tf32)]] if v in self.vendor else [])
                             for v in g] for g in groups])

    def _replacements(self, nodes: Iterable[int]) -> dict[int, tuple[Any, list[Any]]]:
        """``(function, arguments)`` of each vendor node among ``nodes``, made on first use."""
        import tvm

        timer = self.base.timer
        out = {}
        for v in nodes:
            site = self.vendor.get(v)
            if site is None:
                continue
            if v not in self._calls:
                args = timer.args[v]
                n_in = len(self.base._graph.nodes[v].inputs)
                tensors = [args[r] for r in site.roles if r >= 0]
                ws = tvm.runtime.empty((site.workspace,), "uint8", timer.device)
                self._calls[v] = (tvm_ffi.get_global_func(site.func),
                                  [*tensors, *site.ints, int(self.tf32), args[n_in], ws])
            out[v] = self._calls[v]
        return out

    def _time(self, groups: Groups) -> list[float]:
        base = self.base
        base._load()
        samples = base.timer.time(groups, 0, self._replacements(v for g in groups for v in g))
        base.measured += 1
        return samples

    def prepare(self, graph: OpGraph, stages: Iterable[Groups]) -> None:
        """Time every stage not in the stage cache (one worker: the local GPU)."""
        self.base._setup(graph)
        cache = self.base.cache
        assert cache is not None
        todo, seen = [], set()
        for groups in stages:
            key = self._key(groups)
            if key not in seen and cache.get(key) is None:
                todo.append((key, groups))
            seen.add(key)
        bar = None
        if self.base.config.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="measuring stages (vendor kernels)", unit="stage", file=sys.stderr,
                       disable=None)
        try:
            for key, groups in todo:
                cache.put(key, self._time(groups))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            cache.save()

    def stage_latency(self, graph: OpGraph, groups: Groups) -> float:
        self.base._setup(graph)
        cache = self.base.cache
        assert cache is not None
        key = self._key(groups)
        samples = cache.get(key)
        if samples is None:
            samples = self._time(groups)
            cache.put(key, samples)
        return summarize(samples, self.base.config.statistic)

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        return self.base.merge_latency(graph, nodes)  # merged convolutions are TVM's


def with_vendor(model: CostModel, vendor: Mapping[int, VendorSite], tf32: bool = False) -> CostModel:
    """``model`` costing the nodes of ``vendor`` with their vendor kernels: the analytic and the
    measured models know how; another cost model is returned as it is, with a warning."""
    if isinstance(model, VendorMeasuredCostModel):
        model = model.base
    if isinstance(model, AnalyticCostModel):
        return VendorAnalyticCostModel(model.device, vendor, tf32)
    if isinstance(model, MeasuredCostModel):
        if model.measures_here:
            from ..runtime.vendor import require_gpu_libraries

            require_gpu_libraries("measuring vendor kernels (kernels='vendor' or 'auto')")
        return VendorMeasuredCostModel(model, vendor, tf32)
    logger.warning("ios_tvm: cost model %r does not know vendor kernels; it costs their nodes as TVM's kernels",
                   model.name)
    return model
