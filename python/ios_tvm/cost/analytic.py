"""An analytic stage cost: roofline kernels plus a simple concurrency model. For tests, dry runs
and search-cost benchmarks; real schedules come from measured costs.

Per kernel ``k`` (FLOPs ``f``, bytes moved ``b``, output elements ``e``) on a device with peak
``P`` FLOP/s, bandwidth ``B`` byte/s and ``U`` parallel lanes (SMs x resident threads, or cores):

* ``w_k = max(f / P, b / B)``: time with the whole device;
* ``u_k = min(1, e / U)``: the share of the device one kernel can keep busy;
* ``t_k = L + w_k / u_k``: time alone (``L`` = launch overhead).

A stage with groups ``G_1..G_m`` takes

``max( max_i sum_{k in G_i} t_k,  L + sum_k w_k ) + J * (m - 1)``

the slowest stream, but never less than the device doing all the work at full occupancy, plus a
join cost ``J`` per extra stream. Small kernels side by side overlap; large ones do not.

A *merge* of convolutions ``i`` (kernel ``k_i``, merged kernel ``K``) is one kernel with
``f = sum f_i * |K| / |k_i|`` (zero-padded kernels compute too), the input read once, the padded
weights and all outputs, ``e = sum e_i``; plus a ``split`` kernel copying the outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tvm

from ..graph import OpGraph, tensor_bytes
from ..target import as_target
from .model import CostModel


@dataclass(frozen=True)
class DeviceSpec:
    """Roofline numbers of a device (defaults: an H100-class GPU, FP32 without tensor cores)."""

    name: str = "generic-gpu"
    peak_flops: float = 50e12
    bandwidth: float = 3.0e12
    lanes: int = 132 * 2048
    launch_overhead: float = 3e-6
    join_overhead: float = 2e-6

    @staticmethod
    def for_target(target: str | dict | tvm.target.Target) -> "DeviceSpec":
        """A rough spec for a TVM target: CUDA -> H100-class GPU; CPU -> ``num-cores`` cores."""
        tgt = as_target(target)
        if tgt.kind.name == "llvm":
            cores = int(tgt.attrs["num-cores"]) if "num-cores" in tgt.attrs else (os.cpu_count() or 1)
            return DeviceSpec(f"cpu-{cores}core", peak_flops=cores * 50e9, bandwidth=20e9,
                              lanes=cores * 64, launch_overhead=1e-6, join_overhead=2e-6)
        return DeviceSpec(f"{tgt.kind.name}-{tgt.attrs.get('arch', 'gpu')}")


class AnalyticCostModel(CostModel):
    """The formula in this module's docstring, over the graph's FLOP and byte estimates."""

    name = "analytic"
    supports_merge = True

    def __init__(self, device: DeviceSpec | None = None) -> None:
        self.device = device or DeviceSpec()

    @classmethod
    def for_target(cls, target: str | dict | tvm.target.Target) -> "AnalyticCostModel":
        return cls(DeviceSpec.for_target(target))

    def _work(self, flops: float, nbytes: float) -> float:
        """``w``: time with the whole device."""
        return max(flops / self.device.peak_flops, nbytes / self.device.bandwidth)

    def _alone(self, work: float, elements: int) -> float:
        """``t = L + w / u``: time of a kernel alone."""
        d = self.device
        return d.launch_overhead + work / min(1.0, max(elements, 1) / d.lanes)

    def kernel_times(self, graph: OpGraph, node: int) -> tuple[float, float]:
        """``(t_k, w_k)`` of one node: time alone and full-device work time."""
        n = graph.nodes[node]
        work = self._work(n.flops, n.bytes)
        return self._alone(work, n.out_elements), work

    def stage_latency(self, graph: OpGraph, groups: tuple[tuple[int, ...], ...]) -> float:
        slowest = 0.0
        total_work = 0.0
        for group in groups:
            t_group = 0.0
            for v in group:
                t, w = self.kernel_times(graph, v)
                t_group += t
                total_work += w
            slowest = max(slowest, t_group)
        d = self.device
        return max(slowest, d.launch_overhead + total_work) + d.join_overhead * (len(groups) - 1)

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        """The merged kernel plus the split that hands out its channels (see module doc)."""
        units = graph.merges.units
        kh = max(units[v].kernel[0] for v in nodes)
        kw = max(units[v].kernel[1] for v in nodes)
        flops = 0.0
        nbytes = 0.0
        out_bytes = 0.0
        elements = 0
        for i, v in enumerate(nodes):
            n = graph.nodes[v]
            ratio = (kh * kw) / (units[v].kernel[0] * units[v].kernel[1])
            flops += n.flops * ratio
            if i == 0:
                nbytes += tensor_bytes(*n.inputs[0])
            out = tensor_bytes(*n.outputs[0])
            nbytes += tensor_bytes(*n.inputs[1]) * ratio + out
            out_bytes += out
            elements += n.out_elements
        merged = self._alone(self._work(flops, nbytes), elements)
        split = self._alone(self._work(0.0, 2 * out_bytes), elements)
        return merged + split
