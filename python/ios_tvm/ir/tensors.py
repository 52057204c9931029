"""Deterministic random tensors for running a model: its inputs, and the arguments of its kernels
when they are timed. One generator, so a model's checks, timings and benchmarks feed it the same
data."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tvm

from ..errors import InvalidArgumentError
from .bindings import num_input
from .footprint import format_bytes, host_memory_bytes
from .precision import numpy_dtype


def random_array(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Uniform floats in ``[-1, 1)`` of ``dtype`` (``bfloat16`` too); zeros for integer and
    boolean tensors (they may be indices, and a random index reads out of bounds)."""
    if dtype.startswith(("int", "uint", "bool")):
        return np.zeros(tuple(shape), dtype=dtype)
    return rng.uniform(-1, 1, size=tuple(shape)).astype(numpy_dtype(dtype))


def input_arrays(mod: tvm.IRModule, seed: int = 0, func: str = "main") -> list[np.ndarray]:
    """One array per runtime input of ``mod[func]`` (its first ``num_input`` parameters; all of
    them without that attribute), from ``np.random.default_rng(seed)`` in parameter order.

    Raises
    ------
    InvalidArgumentError
        The inputs would take more than this machine's memory (a batch size in the billions).
    """
    fn = mod[func]
    inputs = fn.params[:num_input(fn)]
    need = sum(math.prod(int(d) for d in p.ty.shape.values) * np.dtype(numpy_dtype(str(p.ty.dtype))).itemsize
               for p in inputs)
    have = host_memory_bytes()
    if have and need > have:
        shapes = ", ".join(f"{p.name} {[int(d) for d in p.ty.shape.values]} {p.ty.dtype}" for p in inputs)
        raise InvalidArgumentError(f"the inputs of {func} ({shapes}) take {format_bytes(need)}, more than this "
                                   f"machine's {format_bytes(have)} of memory: run the model with a smaller batch "
                                   "size or input shape")
    rng = np.random.default_rng(seed)
    return [random_array(rng, [int(d) for d in p.ty.shape.values], str(p.ty.dtype)) for p in fn.params[:num_input(fn)]]
