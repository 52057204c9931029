"""Deterministic random tensors for running a model: its inputs, and the arguments of its kernels
when they are timed. One generator, so a model's checks, timings and benchmarks feed it the same
data."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm

from .bindings import num_input
from .precision import numpy_dtype


def random_array(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Uniform floats in ``[-1, 1)`` of ``dtype`` (``bfloat16`` too); zeros for integer and
    boolean tensors (they may be indices, and a random index reads out of bounds)."""
    if dtype.startswith(("int", "uint", "bool")):
        return np.zeros(tuple(shape), dtype=dtype)
    return rng.uniform(-1, 1, size=tuple(shape)).astype(numpy_dtype(dtype))


def input_arrays(mod: tvm.IRModule, seed: int = 0, func: str = "main") -> list[np.ndarray]:
    """One array per runtime input of ``mod[func]`` (its first ``num_input`` parameters; all of
    them without that attribute), from ``np.random.default_rng(seed)`` in parameter order."""
    fn = mod[func]
    rng = np.random.default_rng(seed)
    return [random_array(rng, [int(d) for d in p.ty.shape.values], str(p.ty.dtype)) for p in fn.params[:num_input(fn)]]
