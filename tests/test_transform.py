"""``ios_tvm.transform``: the passes as TVM users look for them (CamelCase factories returning a
``tvm.transform.Pass``), and Before/Expected tests in TVMScript for the two that had none:
the memory-plan check and the half-precision conversion. (The others: ``test_lower_ir.py``
for LowerSchedule and ApplyKernelSchedules, ``test_cuda_graph.py`` for PrepareCUDAGraph and
CaptureCUDAGraph, ``test_merge.py`` for SpliceMerges, ``test_vendor_rewrite.py`` for
MarkVendorKernels and UseVendorKernels.)"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import ios_tvm
from ios_tvm import transform
from ios_tvm.errors import MemoryPlanError, PrecisionError

from ir_fixtures import F32, Planned, add, double, inc, module, typed_allocs  # noqa: E402 - shared kernels


def test_every_pass_is_a_camel_case_factory_of_a_named_pass():
    made = {
        "ConvertPrecision": transform.ConvertPrecision("float16"),
        "ApplyKernelSchedules": transform.ApplyKernelSchedules(tvm.target.Target("llvm"), False),
        "LowerSchedule": transform.LowerSchedule(None, 1),
        "PrepareCUDAGraph": transform.PrepareCUDAGraph(None),
        "VerifyMemory": transform.VerifyMemory(),
        "CaptureCUDAGraph": transform.CaptureCUDAGraph(),
        "MarkVendorKernels": transform.MarkVendorKernels({}),
        "UseVendorKernels": transform.UseVendorKernels(),
    }
    assert set(made) | {"SpliceMerges"} == set(transform.__all__)
    for name, p in made.items():
        assert isinstance(p, tvm.transform.Pass) and p.info.name == f"ios_tvm.{name}", name
    assert ios_tvm.transform is transform  # reachable from the package, like ios_tvm.cost


# -- VerifyMemory ----------------------------------------------------------------------------------

def test_verify_memory_passes_a_safe_plan_through_unchanged():
    """:data:`Planned`: each group of the stage writes storage of its own, kept alive to the join."""
    tvm.ir.assert_structural_equal(transform.VerifyMemory()(Planned), Planned)


def test_verify_memory_refuses_storage_shared_by_concurrent_groups():
    """The plan a memory planner makes without the keep-alive: group 1 (``double``) reuses the
    storage group 0 (``inc``) writes, while group 0 may still run."""

    @R.function(pure=False)
    def racy(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
        s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
        storage1 = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
        alloc1 = R.memory.alloc_tensor(storage1, 0, R.shape([1, 4]), R.dtype(F32), 0)
        inc(x, alloc1)
        b = alloc1
        s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
        alloc2 = R.memory.alloc_tensor(storage1, 0, R.shape([1, 4]), R.dtype(F32), 0)
        double(x, alloc2)
        a = alloc2
        join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, ty_args=(R.Object,))  # noqa: F841
        alloc3 = R.builtin.alloc_tensor(R.shape([1, 4]), R.dtype(F32), 0, R.str("global"))
        add(a, b, alloc3)
        y = alloc3
        return y

    with pytest.raises(MemoryPlanError, match=r"storage storage1 is used by groups \[0, 1\] and written by \[0, 1\]"):
        transform.VerifyMemory()(typed_allocs(module(racy)))


# -- ConvertPrecision -------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
W1 = _rng.uniform(-1, 1, (4, 3, 1, 1)).astype("float32")
W2 = _rng.uniform(-1, 1, (4, 3, 3, 3)).astype("float32")
B2 = _rng.uniform(-1, 1, (1, 4, 1, 1)).astype("float32")
w1, w2, b2 = relax.const(W1), relax.const(W2), relax.const(B2)


@I.ir_module
class TwoConvs:
    """Two convolutions read ``x`` (a 1x1 and a 3x3 with a bias), a softmax (kept in float32 by
    TVM's policy) reads it too, and an add joins the convolutions."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), F32)) -> R.Tuple(R.Tensor((1, 4, 8, 8), F32), R.Tensor((1, 3, 8, 8), F32)):
        with R.dataflow():
            p = R.nn.conv2d(x, w1)
            q = R.nn.conv2d(x, w2, padding=(1, 1))
            r = R.add(q, b2)
            s = R.add(p, r)
            t = R.nn.softmax(x, axis=1)
            out = (s, t)
            R.output(out)
        return out


def _expected(half: str, h1: np.ndarray, h2: np.ndarray, hb: np.ndarray) -> tvm.IRModule:
    """What :func:`ios_tvm.ir.precision.convert` makes of :class:`TwoConvs` in ``half``: ``x`` cast
    once for both convolutions, which take the weights as half constants (rounded once from the
    float32 values) and accumulate in float32, their results cast back to half; the bias and the
    add in half; the softmax on the float32 ``x``; the output cast up to float32."""
    c1, c2, cb = relax.const(h1, half), relax.const(h2, half), relax.const(hb, half)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), F32)) -> R.Tuple(R.Tensor((1, 4, 8, 8), F32), R.Tensor((1, 3, 8, 8), F32)):
            with R.dataflow():
                lv = R.astype(x, half)
                lv1 = R.nn.conv2d(lv, c1, out_dtype=F32)
                p = R.astype(lv1, half)
                lv3 = R.nn.conv2d(lv, c2, padding=(1, 1), out_dtype=F32)
                q = R.astype(lv3, half)
                r = R.add(q, cb)
                s = R.add(p, r)
                t = R.nn.softmax(x, axis=1)
                lv4 = R.astype(s, F32)
                out = (lv4, t)
                R.output(out)
            return out

    return Expected


def test_convert_precision_float16():
    got = transform.ConvertPrecision("float16")(TwoConvs)
    tvm.ir.assert_structural_equal(got, _expected("float16", W1.astype("float16"), W2.astype("float16"),
                                                  B2.astype("float16")))


def test_convert_precision_bfloat16_retargets_the_casts_and_rounds_from_float32():
    got = transform.ConvertPrecision("bfloat16")(TwoConvs)
    bf16 = ml_dtypes.bfloat16
    tvm.ir.assert_structural_equal(got, _expected("bfloat16", W1.astype(bf16), W2.astype(bf16), B2.astype(bf16)))


def test_convert_precision_refuses_an_unknown_dtype_when_made():
    with pytest.raises(PrecisionError, match="float16, bfloat16"):
        transform.ConvertPrecision("int8")
