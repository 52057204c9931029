"""Targets and devices: the one place that turns what a user wrote into a TVM target, and a target
into the device its kernels run on.

* :func:`as_target` converts (``"llvm"``, ``"cuda"``, a tag, a JSON dict, a ``Target``) and
  completes CUDA targets with the device limits TVM's schedulers read
  (``max_shared_memory_per_block`` and friends): from the GPU itself when one of that
  architecture is present (``Target.from_device``), else the values every NVIDIA GPU since
  Kepler shares. Without them dlight warns on every build and assumes 48 KB anyway.
* :func:`resolve_target` also takes ``"auto"`` / ``None``: :func:`local_target`, this machine's
  GPU if the driver sees one, else its CPU.
* :func:`device_type_of`, :func:`device_of`, :func:`require_device`: the DLPack device of a
  target (what the runtime's stage calls take), with a typed error when it is absent.
* :func:`arch_of`, :func:`target_key`, :func:`tuning_target`: names of a target for tuning
  databases and kernel variants, and the target MetaSchedule tunes for.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from typing import Any, Union

import tvm

from ..errors import DeviceNotFoundError, TargetError

logger = logging.getLogger("ios_tvm")

TargetLike = Union[str, dict, "tvm.target.Target"]

#: DLPack device types (``kDLCPU``, ``kDLCUDA``)
CPU = 1
CUDA = 2
DEVICE_TYPES = {"llvm": CPU, "c": CPU, "cuda": CUDA}

# Limits of every NVIDIA GPU from Kepler on (TVM's nvidia/* tags carry the same values); what a
# CUDA target gets when no GPU of its architecture is present to ask.
_CUDA_LIMITS = {"max_shared_memory_per_block": 49152, "max_threads_per_block": 1024,
                "thread_warp_size": 32, "registers_per_block": 65536}


def _parse(target: TargetLike) -> tvm.target.Target:
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and target.strip().startswith("{"):
        try:
            target = json.loads(target)
        except json.JSONDecodeError as err:
            raise TargetError(f"target {target!r} looks like JSON but does not parse: {err}") from None
    try:
        return tvm.target.Target(target)
    except Exception as err:  # noqa: BLE001 - TVM raises several error types here
        raise TargetError(f"not a valid TVM target: {target!r} ({str(err).splitlines()[-1]})") from None


@functools.lru_cache(maxsize=8)
def _device_limits(device_id: int) -> tuple[str, dict[str, Any]] | None:
    """``(arch, limits)`` of CUDA GPU ``device_id`` asked through TVM, or ``None`` without one."""
    dev = tvm.cuda(device_id)
    if not dev.exist:
        return None
    major, minor = str(dev.compute_version).split(".")
    limits = dict(_CUDA_LIMITS)
    try:
        found = tvm.target.Target.from_device(dev).attrs
        limits.update({k: int(found[k]) for k in _CUDA_LIMITS if k in found})
    except Exception:  # noqa: BLE001 - no CUDA detector registered: ask the device directly
        limits["max_shared_memory_per_block"] = int(dev.max_shared_memory_per_block)
        limits["max_threads_per_block"] = int(dev.max_threads_per_block)
        limits["thread_warp_size"] = int(dev.warp_size)
    return f"sm_{major}{minor}", limits


def _complete_cuda(target: tvm.target.Target) -> tvm.target.Target:
    if all(k in target.attrs for k in _CUDA_LIMITS):
        return target
    arch = str(target.attrs.get("arch", ""))
    present = _device_limits(0)
    limits = present[1] if present is not None and present[0] == arch else _CUDA_LIMITS
    config = {k: v for k, v in dict(target.export()).items() if k != "tag"}
    for key, value in limits.items():
        config.setdefault(key, value)
    if target.host is not None:
        config["host"] = target.host
    return tvm.target.Target(config)


#: CUDA compute capabilities NVIDIA has shipped (``sm_XY``; ``a`` / ``f`` suffixed variants too)
CUDA_ARCHS = (30, 32, 35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 110, 120, 121)


def _check_arch(target: tvm.target.Target) -> None:
    """Refuse an ``arch`` no NVIDIA GPU has (``sm_999``, ``sm_1``, ``sm_77``); one newer than every
    architecture known here (up to compute capability 19.x) passes, with a warning."""
    arch = str(target.attrs.get("arch", ""))
    found = re.fullmatch(r"sm_(\d+)[af]?", arch)
    number = int(found.group(1)) if found else None
    if arch and number is not None and max(CUDA_ARCHS) < number < 200:
        _warn_new_arch(arch)
    elif arch and (number is None or number not in CUDA_ARCHS):
        raise TargetError(f"CUDA target with arch {arch!r}: not a CUDA architecture (they are sm_XY, compute "
                          f"capability X.Y: {', '.join(f'sm_{n}' for n in CUDA_ARCHS if n >= 50)}); name your GPU's, "
                          "e.g. sm_90 (H100, H200), sm_89 (L4), sm_80 (A100), sm_70 (V100)")


@functools.lru_cache(maxsize=None)
def _warn_new_arch(arch: str) -> None:  # once per process and architecture
    logger.warning("ios_tvm: CUDA architecture %s is newer than those ios_tvm knows (up to sm_%d): TVM may not "
                   "compile for it yet", arch, max(CUDA_ARCHS))


def as_target(target: TargetLike) -> tvm.target.Target:
    """A ``tvm.target.Target`` from a target, a target string (``"llvm"``, ``"cuda"``, a tag), a
    JSON dict (``{"kind": "cuda", "arch": "sm_90"}``) or its JSON text; CUDA targets completed
    with the device's limits (see the module docstring).

    Raises
    ------
    TargetError
        Not a target TVM knows (a ``ValueError``), or a CUDA architecture NVIDIA never made.
    """
    tgt = _parse(target)
    if tgt.kind.name != "cuda":
        return tgt
    _check_arch(tgt)
    if not _names_arch(target) and not has_gpu():
        _warn_default_arch(str(tgt.attrs.get("arch", "")))
    return _complete_cuda(tgt)


def _names_arch(target: TargetLike) -> bool:
    """Whether the user's target says its architecture (else TVM asks the GPU, or guesses)."""
    if isinstance(target, tvm.target.Target):
        return True
    if isinstance(target, dict):
        return "arch" in target
    text = str(target).strip()
    return '"arch"' in text if text.startswith("{") else text != "cuda"  # a tag ("nvidia/...") names one


@functools.lru_cache(maxsize=None)
def _warn_default_arch(arch: str) -> None:  # once per process and architecture
    logger.warning("ios_tvm: the target names no CUDA architecture and no GPU is here to ask, so TVM compiles "
                   "for %s; name the GPU you deploy on, e.g. --target '{\"kind\": \"cuda\", \"arch\": "
                   "\"sm_90\"}' (H100 / H200)", arch or "its default")


def local_target(device_id: int = 0) -> tvm.target.Target:
    """This machine: its CUDA GPU ``device_id`` as the driver describes it, else its CPU (with
    ``num-cores``)."""
    present = _device_limits(device_id)
    if present is not None:
        return tvm.target.Target({"kind": "cuda", "arch": present[0], **present[1]})
    return tvm.target.Target({"kind": "llvm", "num-cores": os.cpu_count() or 1})


def resolve_target(target: TargetLike | None) -> tvm.target.Target:
    """:func:`as_target`, with ``None`` or ``"auto"`` meaning :func:`local_target`."""
    if target is None or (isinstance(target, str) and target.strip() == "auto"):
        return local_target()
    return as_target(target)


def device_type_of(target: TargetLike) -> int:
    """DLPack device type the target's kernels run on (:data:`CPU` or :data:`CUDA`).

    Raises
    ------
    TargetError
        A target kind ios_tvm has no runtime for (a ``ValueError``).
    """
    kind = as_target(target).kind.name
    if kind not in DEVICE_TYPES:
        raise TargetError(f"ios_tvm builds for and runs on cuda and llvm targets, not {kind!r}")
    return DEVICE_TYPES[kind]


def device_of(target: TargetLike, device_id: int = 0) -> tvm.runtime.Device:
    """The ``tvm.runtime.Device`` the target's kernels run on (present or not)."""
    return tvm.cuda(device_id) if device_type_of(target) == CUDA else tvm.cpu(0)


_WITHOUT_DEVICE = "use the analytic cost model (cost_model='analytic', --cost-model analytic) to schedule without one"


def require_device(target: TargetLike, device_id: int = 0, purpose: str = "this", instead: str = _WITHOUT_DEVICE,
                   there: str = "") -> Any:
    """:func:`device_of`, or :class:`~ios_tvm.errors.DeviceNotFoundError` saying what to do when
    the device is absent. ``purpose`` names what needs it (``"measuring stage costs"``),
    ``instead`` the way to do without it, ``there`` a hint for the machine with the GPU."""
    dev = device_of(target, device_id)
    if not dev.exist:
        what = f"CUDA GPU {device_id}" if dev.dlpack_device_type() == CUDA else str(dev)
        raise DeviceNotFoundError(
            f"{purpose} needs the target's device, and {what} is not present on this machine (no GPU, or "
            f"no NVIDIA driver): run it on a machine with that GPU{there}, or {instead}")
    return dev


def has_gpu(device_id: int = 0) -> bool:
    """Whether the CUDA driver sees GPU ``device_id``."""
    return _device_limits(device_id) is not None


@functools.lru_cache(maxsize=8)
def gpu_name(device_id: int = 0) -> tuple[str, str] | None:
    """``(arch, name)`` of CUDA GPU ``device_id`` as the driver names it (``("sm_90", "NVIDIA
    H200")``), or ``None`` without one."""
    present = _device_limits(device_id)
    if present is None:
        return None
    try:
        return present[0], str(tvm.cuda(device_id).device_name)
    except Exception:  # noqa: BLE001 - a driver that does not say: the architecture still does
        return present[0], ""


def compute_capability(device_id: int = 0) -> str | None:
    """``"9.0"`` for an H100, or ``None`` without a GPU."""
    present = _device_limits(device_id)
    return None if present is None else f"{present[0][3:-1]}.{present[0][-1]}"


def arch_of(target: TargetLike) -> str:
    """Directory name for a target's tuning databases: ``sm_90``, or the CPU's ``mcpu``
    (``generic`` when unset)."""
    tgt = as_target(target)
    if tgt.kind.name == "cuda":
        return str(tgt.attrs.get("arch", "cuda"))
    return str(tgt.attrs.get("mcpu", "generic")) or "generic"


def target_key(target: TargetLike) -> str:
    """What kernel schedules are made for: the target kind and architecture (``cuda:sm_90``)."""
    return f"{as_target(target).kind.name}:{arch_of(target)}"


def tuning_target(target: TargetLike) -> tvm.target.Target:
    """``target`` with what MetaSchedule needs: CPU targets get ``num-cores`` (all cores)."""
    tgt = as_target(target)
    if tgt.kind.name == "llvm" and "num-cores" not in tgt.attrs:
        cfg = {k: v for k, v in dict(tgt.export()).items() if k not in ("tag", "keys")}
        cfg["num-cores"] = os.cpu_count() or 1
        tgt = tvm.target.Target(cfg)
    return tgt
