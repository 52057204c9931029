"""What NVIDIA publishes about the GPUs ios_tvm's users deploy on, and which of them a CUDA target
means.

Every figure is the vendor's: the product datasheet for peak rates, memory and bandwidth, the
architecture whitepaper for SM count and L2 size, the CUDA C++ Programming Guide (table
"Technical Specifications per Compute Capability") for resident threads per SM. Tensor-core
rates are *dense* (datasheets print the H100, H200 and L4 rates with 2:4 sparsity, twice these).

The analytic cost model (:meth:`ios_tvm.cost.analytic.DeviceSpec.for_target`) turns a datasheet
into a roofline; the memory check of the command line reads ``memory_bytes``.

Which GPU a target means (:func:`datasheet_for`): the GPU named by the target's ``model``
attribute (``{"kind": "cuda", "arch": "sm_90", "model": "h100"}``), else this machine's GPU when
it has the target's architecture, else the architecture's default (:data:`ARCH_DEFAULT`: sm_90
is the H200, the GPU the analytic model is fitted on). An architecture without a datasheet here
gets the nearest older one's figures, with a warning, once per architecture.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..ir.footprint import host_memory_bytes
from ..ir.target import as_target, gpu_name

logger = logging.getLogger("ios_tvm")

GB = 1e9
MB = 1 << 20


@dataclass(frozen=True)
class GpuDatasheet:
    """Published figures of one GPU.

    Attributes
    ----------
    key
        Short name (``"h200"``), also what a target's ``model`` attribute may say.
    name
        As NVIDIA names the product (the SXM form factor unless said otherwise).
    arch
        CUDA architecture (``sm_90``).
    sms
        Streaming multiprocessors.
    threads_per_sm
        Most resident threads per SM.
    fp32_flops, fp16_flops
        Peak FP32 (CUDA cores) and dense FP16 tensor-core FLOP/s.
    bandwidth
        Memory bandwidth, byte/s.
    l2_bytes, memory_bytes
        L2 cache and device memory, bytes.
    source
        Where the figures are published.
    """

    key: str
    name: str
    arch: str
    sms: int
    threads_per_sm: int
    fp32_flops: float
    fp16_flops: float
    bandwidth: float
    l2_bytes: int
    memory_bytes: float
    source: str


#: The datasheets, oldest architecture first.
DATASHEETS = (
    GpuDatasheet("v100", "Tesla V100 SXM2", "sm_70", sms=80, threads_per_sm=2048, fp32_flops=15.7e12,
                 fp16_flops=125e12, bandwidth=900 * GB, l2_bytes=6 * MB, memory_bytes=32 * GB,
                 source="NVIDIA Tesla V100 datasheet (SXM2: 15.7 TFLOPS FP32, 125 TFLOPS tensor, 32 GB HBM2, "
                        "900 GB/s); Volta (GV100) whitepaper: 80 SMs, 6144 KB L2"),
    GpuDatasheet("a100", "A100 80GB SXM", "sm_80", sms=108, threads_per_sm=2048, fp32_flops=19.5e12,
                 fp16_flops=312e12, bandwidth=2039 * GB, l2_bytes=40 * MB, memory_bytes=80 * GB,
                 source="NVIDIA A100 datasheet (80GB SXM: 19.5 TFLOPS FP32, 312 TFLOPS FP16 tensor, 2,039 GB/s); "
                        "Ampere (GA100) whitepaper: 108 SMs, 40 MB L2"),
    GpuDatasheet("l4", "L4", "sm_89", sms=58, threads_per_sm=1536, fp32_flops=30.3e12, fp16_flops=121e12,
                 bandwidth=300 * GB, l2_bytes=48 * MB, memory_bytes=24 * GB,
                 source="NVIDIA L4 datasheet (30.3 TFLOPS FP32, 242 TFLOPS FP16 tensor with sparsity, 24 GB GDDR6, "
                        "300 GB/s, 7,424 CUDA cores = 58 Ada SMs of 128); Ada whitepaper: AD104, 48 MB L2"),
    GpuDatasheet("h100-pcie", "H100 PCIe", "sm_90", sms=114, threads_per_sm=2048, fp32_flops=51e12,
                 fp16_flops=756.5e12, bandwidth=2000 * GB, l2_bytes=50 * MB, memory_bytes=80 * GB,
                 source="NVIDIA H100 datasheet (PCIe: 51 TFLOPS FP32, 1,513 TFLOPS FP16 tensor with sparsity, "
                        "2 TB/s); Hopper whitepaper: 114 SMs, 50 MB L2"),
    GpuDatasheet("h100", "H100 SXM", "sm_90", sms=132, threads_per_sm=2048, fp32_flops=67e12,
                 fp16_flops=989.5e12, bandwidth=3350 * GB, l2_bytes=50 * MB, memory_bytes=80 * GB,
                 source="NVIDIA H100 datasheet (SXM: 67 TFLOPS FP32, 1,979 TFLOPS FP16 tensor with sparsity, "
                        "80 GB, 3.35 TB/s); Hopper whitepaper: 132 SMs, 50 MB L2"),
    GpuDatasheet("h200", "H200 SXM", "sm_90", sms=132, threads_per_sm=2048, fp32_flops=67e12,
                 fp16_flops=989.5e12, bandwidth=4800 * GB, l2_bytes=50 * MB, memory_bytes=141 * GB,
                 source="NVIDIA H200 datasheet (SXM: 67 TFLOPS FP32, 1,979 TFLOPS FP16 tensor with sparsity, "
                        "141 GB HBM3e, 4.8 TB/s); the H100 SXM's GH100 (Hopper whitepaper: 132 SMs, 50 MB L2)"),
)

BY_KEY = {d.key: d for d in DATASHEETS}

#: The GPU an architecture means when nothing names one.
ARCH_DEFAULT = {"sm_70": "v100", "sm_80": "a100", "sm_89": "l4", "sm_90": "h200"}


def arch_number(arch: str) -> int | None:
    """``90`` for ``sm_90`` / ``sm_90a``, ``None`` for anything else."""
    found = re.fullmatch(r"sm_(\d+)[a-z]?", arch.strip())
    return int(found.group(1)) if found else None


def by_name(name: str) -> GpuDatasheet | None:
    """The datasheet a GPU's name (``"NVIDIA H100 PCIe"``, ``"h200"``, ``"A100-SXM4-80GB"``)
    refers to, or ``None``."""
    text = name.lower().replace("_", "-")
    if text in BY_KEY:
        return BY_KEY[text]
    for key, pattern in (("h100-pcie", r"h100.*pcie"), ("h200", r"h200"), ("h100", r"h100"), ("a100", r"a100"),
                         ("l4", r"(?<![a-z0-9])l4(?![0-9])"), ("v100", r"v100")):
        if re.search(pattern, text):
            return BY_KEY[key]
    return None


def nearest(arch: str) -> GpuDatasheet:
    """The datasheet of ``arch``'s default GPU, else of the newest known architecture older than
    it (the oldest known for older ones)."""
    if arch in ARCH_DEFAULT:
        return BY_KEY[ARCH_DEFAULT[arch]]
    number = arch_number(arch)
    known = sorted((arch_number(a), key) for a, key in ARCH_DEFAULT.items())
    older = [key for n, key in known if number is not None and n <= number]
    return BY_KEY[older[-1] if older else known[0][1]]


def known_gpus() -> str:
    """``"V100 SXM2 (sm_70), A100 80GB SXM (sm_80), ..."``: the GPUs with a datasheet here."""
    return ", ".join(f"{d.name.removeprefix('Tesla ')} ({d.arch}, model \"{d.key}\")" for d in DATASHEETS)


@functools.lru_cache(maxsize=None)
def warn_unknown_arch(arch: str, used: str) -> None:
    """Say once per architecture that the analytic model has no datasheet for it."""
    logger.warning("ios_tvm: the analytic cost model has no datasheet for CUDA architecture %s and predicts with "
                   "the %s's figures; it knows %s: name one with the target's \"model\" to predict for it, or "
                   "measure on the GPU (--cost-model measure)", arch, BY_KEY[used].name, known_gpus())


@functools.lru_cache(maxsize=None)
def warn_unknown_model(model: str) -> None:
    """Say once per name that a target's ``model`` names no GPU the analytic model knows."""
    logger.warning("ios_tvm: the target's model %r is none of the GPUs the analytic cost model has datasheets for "
                   "(%s): it predicts for the target's architecture instead", model, known_gpus())


def datasheet_for(arch: str, model: str | None = None, present_name: str | None = None
                  ) -> tuple[GpuDatasheet, str]:
    """The datasheet a CUDA target means, and how it was chosen.

    Parameters
    ----------
    arch
        The target's architecture (``sm_90``).
    model
        The target's ``model`` attribute, if any (a GPU name: ``h100``, ``"NVIDIA A100"``).
    present_name
        The name of this machine's GPU when it has architecture ``arch``.

    Returns
    -------
    (GpuDatasheet, str)
        The datasheet and ``"model"``, ``"present"``, ``"arch"`` or ``"unknown"`` (no datasheet
        for ``arch``: the nearest older one's, said once by a warning).
    """
    base = arch.strip()[:-1] if arch.strip()[-1:].isalpha() else arch.strip()  # sm_90a -> sm_90
    for name, how in ((model, "model"), (present_name, "present")):
        sheet = by_name(name) if name else None
        if sheet is not None:
            return sheet, how
        if name and how == "model":
            warn_unknown_model(name)
    if base in ARCH_DEFAULT:
        return BY_KEY[ARCH_DEFAULT[base]], "arch"
    sheet = nearest(base)
    warn_unknown_arch(arch, sheet.key)
    return sheet, "unknown"


def target_datasheet(target: Any) -> tuple[GpuDatasheet, str, str]:
    """:func:`datasheet_for` a CUDA target (anything :func:`ios_tvm.ir.target.as_target` takes):
    its ``arch`` and ``model``, and this machine's GPU when it has that architecture. Returns the
    datasheet, how it was chosen and the target's architecture."""
    tgt = as_target(target)
    arch = str(tgt.attrs.get("arch", "sm_50"))
    present = gpu_name()
    model = tgt.attrs.get("model")
    sheet, how = datasheet_for(arch, None if model is None else str(model),
                               present[1] if present is not None and present[0] == arch else None)
    return sheet, how, arch


def device_memory(target: Any) -> tuple[float | None, str]:
    """``(bytes, description)`` of the memory of the device a target runs on: the GPU it means
    (:func:`target_datasheet`), or this machine's memory for a CPU target (``None``: unknown)."""
    tgt = as_target(target)
    if tgt.kind.name != "cuda":
        return host_memory_bytes(), "this machine"
    sheet, _, arch = target_datasheet(tgt)
    return sheet.memory_bytes, f"the {sheet.name} ({arch})"
