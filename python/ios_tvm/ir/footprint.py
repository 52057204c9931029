"""Whether a model can fit a device at all: its largest tensor against the device's memory.

A batch size in the trillions lowers, searches and even compiles (shapes are only numbers to
TVM), then fails on the first allocation. :func:`check_fits` says so up front: the model's largest
tensor (an input, a weight or any intermediate result, from the types Relax gives every binding,
no lowering needed) against the memory of the device it is meant for.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import tvm
from tvm import relax

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class TensorSize:
    """One tensor of a model: where it is made, its shape, dtype and bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    def describe(self) -> str:
        return f"{self.name} {list(self.shape)} {self.dtype}"


def _tensors(name: str, ty: object) -> Iterator[TensorSize]:
    if isinstance(ty, relax.TupleType):
        for i, field in enumerate(ty.fields):
            yield from _tensors(f"{name}[{i}]", field)
        return
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not hasattr(ty.shape, "values"):
        return
    try:
        shape = tuple(int(d) for d in ty.shape.values)
    except TypeError:  # a symbolic dimension: no size to check
        return
    dtype = str(ty.dtype)
    yield TensorSize(name, shape, dtype, math.prod(shape) * max(1, tvm.runtime.DataType(dtype).bits // 8))


def tensor_sizes(mod: tvm.IRModule, func: str = "main") -> Iterator[TensorSize]:
    """Every statically shaped tensor of ``mod[func]``: its parameters and each binding's result."""
    fn = mod[func]
    for p in fn.params:
        yield from _tensors(str(p.name), p.ty)
    body = fn.body
    for block in getattr(body, "blocks", ()):
        for binding in block.bindings:
            yield from _tensors(str(binding.var.name), binding.var.ty)


def largest_tensor(mod: tvm.IRModule, func: str = "main") -> TensorSize | None:
    """The largest statically shaped tensor of ``mod[func]`` (``None``: it has none)."""
    return max(tensor_sizes(mod, func), key=lambda t: t.nbytes, default=None)


def host_memory_bytes() -> int | None:
    """This machine's physical memory, or ``None`` when the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``"44.7 TiB"``, ``"512.0 MiB"``, ``"12 B"``."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def check_fits(mod: tvm.IRModule, capacity_bytes: float | None, device: str, fix: str) -> None:
    """Refuse a model whose largest tensor alone outgrows the device's memory.

    Parameters
    ----------
    mod
        The model (Relax; before or after lowering).
    capacity_bytes
        The device's memory (``None`` or 0: unknown, nothing is checked).
    device
        The device, for the message (``"the H200 SXM (sm_90)"``, ``"this machine"``).
    fix
        What to do, for the message (``"lower --batch-size"``).

    Raises
    ------
    InvalidArgumentError
        The largest tensor is larger than ``capacity_bytes``.
    """
    if not capacity_bytes:
        return
    big = largest_tensor(mod)
    if big is not None and big.nbytes > capacity_bytes:
        raise InvalidArgumentError(
            f"the model does not fit in the memory of {device}: its tensor {big.describe()} alone takes "
            f"{format_bytes(big.nbytes)}, and {device} has {format_bytes(capacity_bytes)}; {fix}")
