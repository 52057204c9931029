"""An analytic stage cost: roofline kernels plus a simple concurrency model, calibrated against
kernels TVM actually builds. For dry runs, machines without the target's device, and the
search-time estimate of measured searches; real schedules come from measured costs.

Per kernel ``k`` (FLOPs ``f``, bytes moved ``b``, output elements ``e``, class ``c``: conv,
matmul, pool or other, from its name) on a device with peak ``P`` FLOP/s, efficiency ``eta_c``
of class ``c``, bandwidth ``B`` byte/s and ``U`` parallel lanes:

* ``s_k = 1 + S * b / (b + C)``: a slowdown once the working set outgrows the caches (CPUs:
  untuned loops stream their operands from memory; ``S = 0`` on GPUs);
* ``w_k = max(f * s_k / (eta_c * P_k), b / B)``: time with the whole device, where ``P_k`` is
  ``P`` or, for a convolution or matmul computing in a dtype the device has a peak for
  (``DeviceSpec.dtype_peaks``: the tensor cores' float16 rate on the GPU preset), that peak;
  ``b`` counts the bytes of the kernel's real dtypes (2 per element in half precision);
* ``u_k = min(1, e / U)``: the share of the device one kernel keeps busy (one thread per output
  element, as TVM's default GPU schedules do; 1 for matmul-like kernels, whose GEMV and matmul
  schedules split the reduction over threads too);
* ``t_k = L + w_k / u_k``: time alone (``L`` = launch overhead).

A stage with groups ``G_1..G_m`` takes, on a GPU (groups on concurrent streams),

``max( max_i sum_{k in G_i} t_k,  L + sum_k w_k ) + J * (m - 1)``

the slowest stream, but never less than the device doing all the work at full occupancy, plus a
join cost ``J`` per extra stream: small kernels side by side overlap, large ones do not. On a CPU
(``DeviceSpec.concurrent = False``) the runtime runs the groups one after another:
``sum_i sum_{k in G_i} t_k + J * (m - 1)``.

A *merge* of convolutions ``i`` (kernel ``k_i``, merged kernel ``K``) is one conv kernel with
``f = sum f_i * |K| / |k_i|`` (zero-padded kernels compute too), the input read once, the padded
weights and all outputs, ``e = sum e_i``; plus a ``split`` kernel copying the outputs. A merge of
matmuls (linear layers on one input) is the same with ``|K| / |k_i| = 1``: one matmul kernel of
class matmul.

Calibration (what the presets are fitted to, and how far off they are known to be)
-----------------------------------------------------------------------------------
Both presets model the kernels a default build runs: TVM's own schedules, no tuning records.

* CPU (:data:`CPU_UNTUNED`, every ``llvm`` target): ``benchmarks/calibrate_analytic.py`` timed
  every kernel of the five zoo models at test size and of full-size SqueezeNet, GoogLeNet and
  Inception-v3 alone, and the greedy schedules' multi-group stages, through the runtime's stage
  path on the project's 2-core x86-64 machine (``benchmarks/results/analytic_calibration_cpu.json``:
  785 kernels from 0.1 us to 0.6 s, 179 stages; ``--fit`` re-derives the constants). They
  minimise the squared log error over those kernels. Untuned TVM CPU kernels are single-threaded
  loops: a full-size convolution runs at about 2 GFLOP/s, a small one (operands in cache) at up
  to 20; hence ``U = 1`` and the cache term. Result: the sum of the kernels of each of the eight
  models at 0.68x-1.71x of measured (the uncalibrated model: 0.02x-2.4x, up to 50x too fast on the
  full-size models), 94% of the kernels and 98% of the multi-group stages within 2x (before: 15%
  of the kernels), and the committed untuned SqueezeNet-small end-to-end time
  (``benchmarks/results/tuning_cpu_squeezenet_small.json``: 0.888 ms, predicted 1.14 ms) too;
  MetaSchedule-tuned kernels run faster than predicted (0.452 ms there after 8 trials per task).
  ``tests/test_analytic_calibration.py`` checks all of this against the committed files. Merged
  convolutions were not fitted, yet agree (timed with the measured cost model on the ONNX zoo's
  models at 64x64): GoogLeNet's 1x1 + 1x1 merges run 0.96-1.04x as fast as their kernels apart
  (predicted 0.91-0.98x), SqueezeNet's 1x1 + 3x3 merges 0.51-0.53x (predicted 0.48-0.53x). On
  this CPU merging does not pay, and the model no longer picks merges there (the uncalibrated one
  did).
* GPU (:data:`GPU_SPECS`, every ``cuda`` target; :mod:`ios_tvm.cost.gpus` picks the GPU a
  target means): each GPU's peak FP32 and dense FP16 tensor-core rates, bandwidth, SM count
  (``U`` = SMs x resident threads per SM), L2 and memory are its vendor's published figures.
  What they do not say, how fast TVM's untuned kernels run, was fitted on an H200
  (``../shared/evidence/gpu_e2e_h200_inception_v3_2026-11-27.json``, the team's first GPU run,
  untuned kernels, batch 1): full-size Inception-v3 measured 7.61 ms as the sum of its sequential
  stages (8.76 ms end to end) and its greedy schedule 5.86 ms end to end (1.48x over
  sequential). TVM's default convolution schedule (one thread per output, the reduction in a
  loop) reaches ``eta_conv = 0.107`` of the H200's 67 TFLOP/s FP32 peak, fitted to the 7.61 ms
  (the model gives 7.64 ms; the uncalibrated model gave 2.2 ms, of which 0.74 ms for the final
  2048x1000 GEMV that moves 8 MB, now a few microseconds: matmul-like kernels count as filling
  the device; the launch overhead is 2 us). The greedy schedule is predicted 1.7x faster than
  sequential (measured end to end: 1.48x). Only these totals were measured on a GPU: per-kernel
  GPU predictions are unvalidated, and the other GPUs reuse the H200's efficiency and overheads
  (an assumption until one of them is measured): their predictions differ from the H200's as
  their datasheets do.

Half precision (:mod:`ios_tvm.ir.precision`): bytes come from the real dtypes, so memory-bound kernels
take half the time. Convolutions and matmuls on float16 data run at ``dtype_peaks["float16"]``,
the GPU's dense FP16 tensor-core rate (H200 and H100 SXM: 989.5 TFLOP/s, 14.8x FP32), with the
same efficiency ``eta`` as the FP32 kernels: an assumption, not measured (no GPU has run a half
model of ios_tvm yet). It is what kernels tuned with MetaSchedule's tensor-core rules
(``ios_tvm.tune`` of the converted model; :data:`ios_tvm.ir.precision.TENSOR_CORE_INTRINSICS`) aim at.
Two cases run slower than that: TVM's *untuned* half convolutions (dlight's fallback schedule runs
them on CUDA cores, at about the FP32 rate), and every bfloat16 kernel, which the presets leave at
the FP32 peak because TVM 0.27's MetaSchedule has no bfloat16 tensor-core intrinsics (the bf16
tensor cores are as fast as the fp16 ones). The CPU preset has no half peak: LLVM computes half
precision in float32 registers.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm

from ..core.plan import StageTable
from ..ir.graph import OpGraph, tensor_bytes
from ..ir.target import as_target
from .gpus import DATASHEETS, GpuDatasheet, target_datasheet
from .model import CostModel

KERNEL_CLASSES = ("conv", "matmul", "pool", "other")


def kernel_class(kernel: str) -> str:
    """``"conv"``, ``"matmul"``, ``"pool"`` or ``"other"``: what a kernel mostly does, from the name
    TVM's fusion gives it (``fused_conv2d3_add3_relu3``, ``fused_matmul_add``, ``max_pool2d1``)."""
    name = kernel.lower()
    if "conv" in name:
        return "conv"
    if "matmul" in name or "dense" in name or "gemm" in name:
        return "matmul"
    if "pool" in name:
        return "pool"
    return "other"


@dataclass(frozen=True)
class DeviceSpec:
    """Roofline numbers of a device (defaults: :data:`GPU_H200`, an H200 running TVM's untuned
    kernels in FP32 on CUDA cores, and float16 convolutions and matmuls on its tensor cores).

    Attributes
    ----------
    peak_flops, bandwidth
        ``P`` FLOP/s and ``B`` byte/s.
    lanes
        ``U``: outputs the device computes at once (SMs x resident threads; 1 for a CPU running
        single-threaded kernels).
    launch_overhead, join_overhead
        ``L`` per kernel and ``J`` per extra group of a stage, seconds.
    efficiency
        ``(class, eta)`` pairs: the fraction of ``peak_flops`` kernels of a class reach (1 for
        classes not listed).
    full_occupancy
        Kernel classes that fill the device whatever their output size.
    cache_bytes, cache_slowdown
        ``C`` and ``S`` of the working-set slowdown (0: none).
    concurrent
        Whether the groups of a stage run at once (GPU streams) or one after another (CPU).
    dtype_peaks
        ``(dtype, FLOP/s)`` pairs: the peak of ``tensor_core_classes`` kernels computing in that
        dtype (the dtype of their first input), instead of ``peak_flops``.
    tensor_core_classes
        Kernel classes ``dtype_peaks`` applies to.
    l2_bytes, memory_bytes
        The GPU's L2 cache and memory (0: not known; CPUs).
    """

    name: str = "h200"
    peak_flops: float = 67e12
    bandwidth: float = 4.8e12
    lanes: int = 132 * 2048
    launch_overhead: float = 2e-6
    join_overhead: float = 2e-6
    efficiency: tuple[tuple[str, float], ...] = (("conv", 0.107),)
    full_occupancy: tuple[str, ...] = ("matmul",)
    cache_bytes: float = 0.0
    cache_slowdown: float = 0.0
    concurrent: bool = True
    dtype_peaks: tuple[tuple[str, float], ...] = (("float16", 989.5e12),)
    tensor_core_classes: tuple[str, ...] = ("conv", "matmul")
    l2_bytes: float = 50 * 2**20
    memory_bytes: float = 141e9

    @staticmethod
    def for_target(target: str | dict | tvm.target.Target) -> "DeviceSpec":
        """The preset for a TVM target: CPU -> :data:`CPU_UNTUNED` (named after its
        ``num-cores``; untuned kernels use one); CUDA -> the :data:`GPU_SPECS` entry of the GPU
        the target means (:func:`ios_tvm.cost.gpus.target_datasheet`: the target's ``model``, this
        machine's GPU of the target's architecture, or the architecture's GPU), named
        ``"H200 SXM (sm_90)"``."""
        tgt = as_target(target)
        if tgt.kind.name == "llvm":
            cores = int(tgt.attrs["num-cores"]) if "num-cores" in tgt.attrs else (os.cpu_count() or 1)
            return dataclasses.replace(CPU_UNTUNED, name=f"cpu-{cores}core")
        sheet, how, arch = target_datasheet(tgt)
        label = f"{sheet.name} ({arch})" if how != "unknown" else f"{arch}: no datasheet, {sheet.name} figures"
        return dataclasses.replace(GPU_SPECS[sheet.key], name=label)


def gpu_spec(sheet: GpuDatasheet) -> DeviceSpec:
    """A GPU's roofline: its datasheet's rates, SMs and sizes, with the efficiency and overheads
    of TVM's untuned kernels fitted on the H200 (module docstring)."""
    return DeviceSpec(name=sheet.key, peak_flops=sheet.fp32_flops, bandwidth=sheet.bandwidth,
                      lanes=sheet.sms * sheet.threads_per_sm, dtype_peaks=(("float16", sheet.fp16_flops),),
                      l2_bytes=sheet.l2_bytes, memory_bytes=sheet.memory_bytes)


#: Every GPU of :mod:`ios_tvm.cost.gpus`, by key (``"h200"``, ``"a100"``, ...).
GPU_SPECS = {sheet.key: gpu_spec(sheet) for sheet in DATASHEETS}

#: The H200 running TVM's untuned (dlight default) kernels: the GPU the model is fitted on.
GPU_H200 = GPU_SPECS["h200"]
#: The GPU preset's earlier name.
GPU_H100_CLASS = GPU_H200

#: A CPU running TVM's untuned (single-threaded) kernels, fitted on the project's 2-core x86-64
#: machine; see the module docstring.
CPU_UNTUNED = DeviceSpec(
    name="cpu", peak_flops=95.9e9, bandwidth=94.0e9, lanes=1, launch_overhead=0.2e-6, join_overhead=0.05e-6,
    efficiency=(("conv", 0.312), ("matmul", 0.418), ("other", 0.556)), full_occupancy=(),
    cache_bytes=33.1e3, cache_slowdown=7.84, concurrent=False, dtype_peaks=(), l2_bytes=0.0, memory_bytes=0.0)

#: What each preset is known to get right, for schedule meta and the CLI.
KNOWN_ERROR = {
    "cpu": "calibrated on untuned TVM kernels of 8 zoo models on a 2-core x86-64 CPU: model totals within 2x "
           "of measured, 94% of kernels within 2x; tuned kernels run faster (2.5x for SqueezeNet-small after 8 "
           "trials per task)",
    "h200": "calibrated on untuned TVM kernels of Inception-v3 on an H200 (batch 1): sequential total "
            "within 1% of the measured 7.61 ms, greedy speed-up 1.7x predicted vs 1.48x measured end to "
            "end; per-kernel GPU latencies not yet validated",
    **{sheet.key: f"the {sheet.name}'s datasheet figures with the efficiency of untuned TVM kernels fitted on an "
                  f"H200 (Inception-v3, batch 1, within 1% there); not yet measured on a {sheet.name}"
       for sheet in DATASHEETS if sheet.key != "h200"},
}

#: Added to the known error of a half-precision model's prediction (``schedule.meta["prediction"]``).
HALF_KNOWN_ERROR = {
    "cpu": "half precision not calibrated on CPU (its bytes halve; LLVM computes it in float32 registers)",
    **{sheet.key: f"half precision not yet measured on a GPU: float16 convolutions and matmuls are predicted at "
                  f"the tensor cores' dense peak ({sheet.fp16_flops / 1e12:.0f} TFLOPS, "
                  f"{sheet.fp16_flops / sheet.fp32_flops:.1f}x FP32, datasheet) with FP32's fitted efficiency, as "
                  "tuned kernels (MetaSchedule's tensor-core rules) aim at; untuned float16 kernels and bfloat16 "
                  "kernels (no tensor-core schedules in TVM 0.27) run on CUDA cores"
       for sheet in DATASHEETS},
}

#: Presets :attr:`AnalyticCostModel.known_error` knows (compared without their names).
PRESETS = (CPU_UNTUNED, *GPU_SPECS.values())


def kernel_dtype(inputs: tuple[tuple[tuple[int, ...], str], ...], outputs: tuple = ()) -> str:
    """The dtype a kernel computes in: that of its first floating-point input (its data, for a
    convolution or matmul), else of its first output; ``"float32"`` when it has neither."""
    for _, dtype in list(inputs) + list(outputs):
        if dtype.startswith(("float", "bfloat")):
            return dtype
    return "float32"


class AnalyticCostModel(CostModel):
    """The formula in this module's docstring, over the graph's FLOP and byte estimates."""

    name = "analytic"
    supports_merge = True

    def __init__(self, device: DeviceSpec | None = None) -> None:
        self.device = device or DeviceSpec()
        self._costs: tuple[Any, ...] | None = None  # (graph ref, its nodes, device, t, w, t list, w list)

    @classmethod
    def for_target(cls, target: str | dict | tvm.target.Target) -> "AnalyticCostModel":
        return cls(DeviceSpec.for_target(target))

    @property
    def known_error(self) -> str:
        """How far this model's predictions are known to be off (its calibration), or that the
        device spec is not a calibrated preset."""
        preset = self._preset()
        return KNOWN_ERROR[preset] if preset else "a custom DeviceSpec: accuracy unknown (not calibrated)"

    def known_error_for(self, dtype: str) -> str:
        """:attr:`known_error` of a model computing in ``dtype``: with what is assumed, not
        measured, about half precision (:data:`HALF_KNOWN_ERROR`)."""
        preset = self._preset()
        if dtype == "float32" or preset is None:
            return self.known_error
        return f"{KNOWN_ERROR[preset]}; {HALF_KNOWN_ERROR[preset]}"

    def prediction_note(self, dtype: str = "float32") -> dict[str, str]:
        """The device spec predicted for, and its calibration (:meth:`known_error_for`)."""
        return {"cost_model": self.name, "device": self.device.name, "known_error": self.known_error_for(dtype)}

    def _preset(self) -> str | None:
        for preset in PRESETS:
            if dataclasses.replace(self.device, name=preset.name) == preset:
                return preset.name
        return None

    def peak(self, cls: str, dtype: str) -> float:
        """FLOP/s of a kernel of class ``cls`` computing in ``dtype``: ``peak_flops``, or its
        ``dtype_peaks`` entry for the tensor-core classes."""
        d = self.device
        if cls in d.tensor_core_classes:
            return dict(d.dtype_peaks).get(dtype, d.peak_flops)
        return d.peak_flops

    def kernel_time(self, kernel: str, flops: float, nbytes: float, elements: int,
                    dtype: str = "float32") -> tuple[float, float]:
        """``(t_k, w_k)`` of a kernel named ``kernel`` (see :func:`kernel_class`) computing in
        ``dtype``: time alone and full-device work time."""
        d = self.device
        cls = kernel_class(kernel)
        slowdown = 1.0 + d.cache_slowdown * nbytes / (nbytes + d.cache_bytes) if d.cache_bytes > 0 else 1.0
        efficiency = dict(d.efficiency).get(cls, 1.0)
        work = max(flops * slowdown / (efficiency * self.peak(cls, dtype)), nbytes / d.bandwidth)
        occupancy = 1.0 if cls in d.full_occupancy else min(1.0, max(elements, 1) / d.lanes)
        return d.launch_overhead + work / occupancy, work

    def kernel_costs(self, graph: OpGraph) -> tuple[np.ndarray, np.ndarray]:
        """``(t, w)``: :meth:`kernel_time` of every node of ``graph`` (arrays by node id), computed
        once per graph and device spec (the last graph's are kept)."""
        t, w, _, _ = self._kernel_costs(graph)
        return t, w

    def _kernel_costs(self, graph: OpGraph) -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
        c = self._costs
        if c is not None and c[0]() is graph and c[1] is graph.nodes and c[2] is self.device:
            return c[3], c[4], c[5], c[6]
        pairs = [self.node_kernel_time(graph, v) for v in range(len(graph.nodes))]
        t_list = [p[0] for p in pairs]
        w_list = [p[1] for p in pairs]
        t, w = np.array(t_list, dtype=np.float64), np.array(w_list, dtype=np.float64)
        self._costs = (weakref.ref(graph), graph.nodes, self.device, t, w, t_list, w_list)
        return t, w, t_list, w_list

    def node_kernel_time(self, graph: OpGraph, node: int) -> tuple[float, float]:
        """``(t_k, w_k)`` of node ``node`` computed afresh: the one place subclasses change what a
        node's kernel costs (every latency here reads the per-graph table built from it)."""
        n = graph.nodes[node]
        return self.kernel_time(n.kernel, n.flops, n.bytes, n.out_elements, kernel_dtype(n.inputs, n.outputs))

    def kernel_times(self, graph: OpGraph, node: int) -> tuple[float, float]:
        """``(t_k, w_k)`` of one node: time alone and full-device work time."""
        _, _, t, w = self._kernel_costs(graph)
        return t[node], w[node]

    def stage_latency(self, graph: OpGraph, groups: tuple[tuple[int, ...], ...]) -> float:
        _, _, t, w = self._kernel_costs(graph)
        slowest = 0.0
        total_time = 0.0
        total_work = 0.0
        for group in groups:
            t_group = 0.0
            for v in group:
                t_group += t[v]
                total_work += w[v]
            slowest = max(slowest, t_group)
            total_time += t_group
        d = self.device
        join = d.join_overhead * (len(groups) - 1)
        if not d.concurrent:
            return total_time + join
        return max(slowest, d.launch_overhead + total_work) + join

    def stage_latencies(self, graph: OpGraph, stages: StageTable) -> np.ndarray:
        """:meth:`stage_latency` of every stage at once, from the per-kernel costs
        (:meth:`kernel_costs`): the same additions in the same order, so the same floats.

        Slot by slot along the rows (stages with more kernels first, so that column ``c`` is
        a prefix of the rows): a running sum per group restarts where a group starts (its
        maximum over the row is the slowest group, as the sums only grow), the work adds up
        across groups."""
        t, w = self.kernel_costs(graph)
        k = len(stages)
        size = (stages.nodes >= 0).sum(axis=1)
        order = np.argsort(-size, kind="stable")
        nodes = stages.nodes[order]
        group = stages.group[order]
        rows_with = k - np.searchsorted(size[order][::-1], np.arange(nodes.shape[1]), side="right")
        running = np.zeros(k)
        slowest = np.zeros(k)
        total_work = np.zeros(k)
        total_time = np.zeros(k)  # groups one after another (CPU)
        for c in range(nodes.shape[1]):
            m = int(rows_with[c])
            if m == 0:
                break
            kernels = nodes[:m, c]
            if c:
                new = group[:m, c] != group[:m, c - 1]
                total_time[:m] += np.where(new, running[:m], 0.0)
                running[:m] = np.where(new, 0.0, running[:m])
            running[:m] += t[kernels]
            np.maximum(slowest[:m], running[:m], out=slowest[:m])
            total_work[:m] += w[kernels]
        total_time += running
        d = self.device
        join = d.join_overhead * (stages.num_groups[order] - 1)
        if d.concurrent:
            latency = np.maximum(slowest, d.launch_overhead + total_work) + join
        else:
            latency = total_time + join
        out = np.empty(k)
        out[order] = latency
        return out

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        """The merged kernel plus the split that hands out its channels (see module doc)."""
        units = [graph.merges.units[v] for v in nodes]
        kind = type(units[0])
        flops = 0.0
        nbytes = 0.0
        out_bytes = 0.0
        elements = 0
        for i, (v, u) in enumerate(zip(nodes, units)):
            n = graph.nodes[v]
            ratio = kind.work_ratio(u, units)  # a convolution's kernel zero-padded to the largest
            flops += n.flops * ratio
            if i == 0:
                nbytes += tensor_bytes(*n.inputs[0])
            out = tensor_bytes(*n.outputs[0])
            nbytes += tensor_bytes(*n.inputs[1]) * ratio + out
            out_bytes += out
            elements += n.out_elements
        dtype = kernel_dtype(graph.nodes[nodes[0]].inputs)
        merged, _ = self.kernel_time(f"merged_{kind.kind}", flops, nbytes, elements, dtype)
        split, _ = self.kernel_time("split", 0.0, 2 * out_bytes, elements)
        return merged + split
