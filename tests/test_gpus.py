"""The analytic model per GPU: each architecture's roofline from its vendor's published figures,
and predictions that differ between GPUs as those figures do."""

from __future__ import annotations

import logging

import pytest

from ios_tvm.cost import gpus
from ios_tvm.cost.analytic import GPU_H200, GPU_SPECS, AnalyticCostModel, DeviceSpec
from ios_tvm.ir.graph import Node, OpGraph

GB, MB = 1e9, 2**20

# The published figures, restated: (SMs, threads per SM, FP32 TFLOP/s, dense FP16 tensor TFLOP/s,
# GB/s, L2 MB, memory GB). Datasheets: Tesla V100 (SXM2), A100 80GB SXM, L4, H100 (SXM, PCIe),
# H200 (SXM); SMs and L2 from the architecture whitepapers; resident threads per SM from the CUDA
# C++ Programming Guide's compute capability table. H100 / H200 / L4 datasheets print FP16 tensor
# rates with sparsity: 1,979 / 1,513 / 242 TFLOP/s, twice the dense ones.
PUBLISHED = {
    "v100": ("sm_70", 80, 2048, 15.7, 125, 900, 6, 32),
    "a100": ("sm_80", 108, 2048, 19.5, 312, 2039, 40, 80),
    "l4": ("sm_89", 58, 1536, 30.3, 242 / 2, 300, 48, 24),
    "h100-pcie": ("sm_90", 114, 2048, 51, 1513 / 2, 2000, 50, 80),
    "h100": ("sm_90", 132, 2048, 67, 1979 / 2, 3350, 50, 80),
    "h200": ("sm_90", 132, 2048, 67, 1979 / 2, 4800, 50, 141),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_specs_hold_the_published_figures(key):
    arch, sms, threads, fp32, fp16, bandwidth, l2, memory = PUBLISHED[key]
    sheet, spec = gpus.BY_KEY[key], GPU_SPECS[key]
    assert sheet.arch == arch and sheet.source  # where the figures come from is said
    assert spec.lanes == sms * threads
    assert spec.peak_flops == pytest.approx(fp32 * 1e12)
    assert dict(spec.dtype_peaks)["float16"] == pytest.approx(fp16 * 1e12)
    assert spec.bandwidth == pytest.approx(bandwidth * GB)
    assert spec.l2_bytes == l2 * MB and spec.memory_bytes == pytest.approx(memory * GB)
    # what the datasheets do not say is the H200 fit, the same for every GPU
    assert (spec.efficiency, spec.launch_overhead, spec.join_overhead) == \
        (GPU_H200.efficiency, GPU_H200.launch_overhead, GPU_H200.join_overhead)


@pytest.mark.parametrize("target, name", [
    ({"kind": "cuda", "arch": "sm_70"}, "Tesla V100 SXM2 (sm_70)"),
    ({"kind": "cuda", "arch": "sm_80"}, "A100 80GB SXM (sm_80)"),
    ({"kind": "cuda", "arch": "sm_89"}, "L4 (sm_89)"),
    ({"kind": "cuda", "arch": "sm_90"}, "H200 SXM (sm_90)"),
    ({"kind": "cuda", "arch": "sm_90a"}, "H200 SXM (sm_90a)"),
    ({"kind": "cuda", "arch": "sm_90", "model": "h100"}, "H100 SXM (sm_90)"),
    ({"kind": "cuda", "arch": "sm_90", "model": "NVIDIA H100 PCIe"}, "H100 PCIe (sm_90)"),
    ({"kind": "cuda", "arch": "sm_80", "model": "A100-SXM4-80GB"}, "A100 80GB SXM (sm_80)"),
])
def test_a_target_means_a_gpu(target, name):
    spec = DeviceSpec.for_target(target)
    assert spec.name == name
    assert AnalyticCostModel(spec)._preset() is not None  # a calibrated preset, not a custom spec


def _kernel(kernel: str, flops: float, nbytes: float, elements: int, dtype: str = "float32") -> OpGraph:
    node = Node(0, "v0", kernel, "relax.call_tir", (((elements,), dtype),), (((elements,), dtype),), flops, nbytes)
    return OpGraph([node], [])


def _time(key: str, graph: OpGraph) -> float:
    """A kernel's time alone on GPU ``key``, less the launch overhead (the same on every GPU)."""
    spec = GPU_SPECS[key]
    return AnalyticCostModel(spec).stage_latency(graph, ((0,),)) - spec.launch_overhead


def test_predictions_differ_as_the_datasheets_do():
    """Between any two GPUs: a memory-bound kernel by their bandwidths, a large convolution by
    their FP32 peaks (by their tensor-core peaks in float16), a small one also by their SM counts
    (it keeps only part of the device busy)."""
    memory = _kernel("fused_matmul_add", 1e6, 1e9, 10**8)  # 1 GB moved, no arithmetic to speak of
    conv = _kernel("fused_conv2d_add_relu", 1e12, 1e6, 10**8)  # fills every GPU, compute-bound
    half = _kernel("fused_conv2d_add_relu", 1e12, 1e6, 10**8, "float16")
    small = _kernel("fused_conv2d_add_relu", 1e9, 1e3, 10_000)  # 10,000 outputs: a small share of the lanes
    keys = sorted(PUBLISHED)
    for a in keys:
        for b in keys:
            A, B = GPU_SPECS[a], GPU_SPECS[b]
            assert _time(a, memory) / _time(b, memory) == pytest.approx(B.bandwidth / A.bandwidth)
            assert _time(a, conv) / _time(b, conv) == pytest.approx(B.peak_flops / A.peak_flops)
            fp16 = dict(B.dtype_peaks)["float16"] / dict(A.dtype_peaks)["float16"]
            assert _time(a, half) / _time(b, half) == pytest.approx(fp16)
            assert _time(a, small) / _time(b, small) == pytest.approx(B.peak_flops / A.peak_flops * A.lanes / B.lanes)


def test_a_model_is_predicted_per_gpu(small_graphs):
    """A whole model: each architecture its own prediction (`cuda` without an architecture,
    TVM's sm_50, included), older GPUs slower, the H200 as fast as the H100 or faster (same
    compute, more bandwidth)."""
    from ios_tvm.core.schedule import Schedule

    graph = small_graphs["inception_v3"]
    seq = {key: Schedule.sequential(graph, AnalyticCostModel(GPU_SPECS[key])).latency for key in PUBLISHED}
    assert len(set(seq.values())) == len(seq)
    assert seq["v100"] > seq["a100"] > seq["h100"] >= seq["h200"] and seq["h100-pcie"] > seq["h100"]
    bare = Schedule.sequential(graph, AnalyticCostModel.for_target("cuda")).latency
    assert bare != seq["h200"]


def test_an_unknown_architecture_is_said_once(caplog):
    gpus.warn_unknown_arch.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ios_tvm"):
        first = DeviceSpec.for_target({"kind": "cuda", "arch": "sm_86"})
        again = DeviceSpec.for_target({"kind": "cuda", "arch": "sm_86"})
    said = [r.getMessage() for r in caplog.records if "no datasheet" in r.getMessage()]
    assert len(said) == 1 and "sm_86" in said[0] and 'model "h100"' in said[0], said
    assert first == again and first.name == "sm_86: no datasheet, A100 80GB SXM figures"  # the nearest older one
    assert "A100" in AnalyticCostModel(first).known_error
    newer = DeviceSpec.for_target({"kind": "cuda", "arch": "sm_120"})
    assert dataclasses_equal(newer, GPU_H200)


def dataclasses_equal(a: DeviceSpec, b: DeviceSpec) -> bool:
    import dataclasses

    return dataclasses.replace(a, name=b.name) == b


def test_device_memory_of_a_target():
    from ios_tvm.ir.footprint import host_memory_bytes

    assert gpus.device_memory({"kind": "cuda", "arch": "sm_89"}) == (24e9, "the L4 (sm_89)")
    assert gpus.device_memory({"kind": "cuda", "arch": "sm_90", "model": "h100"})[0] == 80e9
    assert gpus.device_memory("llvm") == (host_memory_bytes(), "this machine")


@pytest.mark.gpu
def test_the_present_gpu_is_the_datasheet_it_is_taken_for():
    """On the GPU machine: the GPU is recognised by its name, and what the driver reports (SMs,
    L2, memory) is what the datasheet table says (the datasheets do not print the H200's L2; the
    table assumes the H100 SXM's 50 MB, this checks it)."""
    import tvm

    from ios_tvm.ir.target import gpu_name, local_target

    arch, name = gpu_name()
    sheet = gpus.by_name(name)
    if sheet is None:
        pytest.skip(f"{name} ({arch}) has no datasheet in ios_tvm.cost.gpus")
    dev = tvm.cuda(0)
    assert sheet.arch == arch, (name, arch)
    assert DeviceSpec.for_target(local_target()).name == f"{sheet.name} ({arch})"
    found = {"sms": dev.multi_processor_count, "l2_bytes": dev.l2_cache_size_bytes, "memory": dev.total_global_memory}
    assert found["sms"] == sheet.sms, (name, found)
    assert found["l2_bytes"] == sheet.l2_bytes, (name, found)
    assert 0.9 * sheet.memory_bytes <= found["memory"] <= 1.05 * sheet.memory_bytes, (name, found)


def test_cuda_architectures_that_do_not_exist_are_refused(caplog):
    from ios_tvm.errors import TargetError
    from ios_tvm.ir.target import as_target

    for arch in ("sm_999", "sm_1", "sm_77"):
        with pytest.raises(TargetError, match=f"arch '{arch}': not a CUDA architecture"):
            as_target({"kind": "cuda", "arch": arch})
    for arch in ("compute_90", "90"):  # TVM's own check: an arch is sm_XY
        with pytest.raises(TargetError, match="invalid CUDA arch"):
            as_target({"kind": "cuda", "arch": arch})
    for arch in ("sm_70", "sm_90a", "sm_100f", "sm_121"):
        assert as_target({"kind": "cuda", "arch": arch}).attrs["arch"] == arch
    with caplog.at_level(logging.WARNING, logger="ios_tvm"):
        assert as_target({"kind": "cuda", "arch": "sm_130"}).attrs["arch"] == "sm_130"  # a GPU newer than this list
    assert "sm_130 is newer than those ios_tvm knows" in caplog.text
