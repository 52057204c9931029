"""IR-to-IR steps of ios_tvm, Before/Expected in TVMScript (as TVM tests its own passes):
schedule lowering (:func:`ios_tvm.transform.LowerSchedule`: ``plan`` + ``rewrite``) and the
redirection of a call site to its kernel variant (:func:`ios_tvm.transform.ApplyKernelSchedules`).
The kernels and the model are the shared fixtures of ``ir_fixtures.py``."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import relax as R
from tvm.script import tirx as T

from ios_tvm.core.schedule import Schedule
from ios_tvm.ir.graph import extract_graph
from ios_tvm.ir.target import CUDA
from ios_tvm.transform.kernel_schedules import VARIANT_ATTR, _redirect
from ios_tvm.transform.lower import LowerSchedule, plan, rewrite

from ir_fixtures import F32, Branches, add, double, inc, module  # noqa: E402 - the shared kernels

#: two branches reading ``x`` (a view of one of them in between), joined by an add
Before = Branches


def _lowered(stages, keep_alive=True):
    graph = extract_graph(Before, lowered=True)
    out = rewrite(Before, plan(Before, Schedule.from_stages(graph, stages)), CUDA, 0, keep_alive)
    relax.analysis.well_formed(out)  # raises when it is not
    return out


def test_concurrent_stage_gets_fork_switch_join_and_keep_alive():
    """Stage 0 runs ``inc`` (stream 0) beside ``double`` (stream 1); its join keeps both results
    alive. The view ``add`` needs is placed right before ``add``'s stage, still inside stage 0
    (a view launches nothing, so it needs no stream)."""

    @R.function(pure=False)
    def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
        s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
        b = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
        s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
        a = R.call_tir(double, (x,), out_ty=R.Tensor((1, 4), F32))
        v = R.reshape(b, (1, 4))
        join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, b, a, ty_args=(R.Object,))  # noqa: F841
        y = R.call_tir(add, (a, v), out_ty=R.Tensor((1, 4), F32))
        return y

    tvm.ir.assert_structural_equal(_lowered([[[1], [0]], [[2]]]), module(main))


def test_without_keep_alive_the_join_takes_no_tensors():
    got = _lowered([[[0], [1]], [[2]]], keep_alive=False)
    joins = [b.value for b in got["main"].body.blocks[0].bindings
             if isinstance(b.value.op, relax.ExternFunc) and b.value.op.global_symbol == "ios_tvm.runtime.stage_join"]
    assert len(joins) == 1 and len(joins[0].args) == 2  # device type and id only


def test_sequential_stages_only_reorder():
    """Stages of one group each get no runtime calls: the kernels in stage order, views placed
    right before the first kernel that needs them."""

    @R.function(pure=False)
    def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        b = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
        a = R.call_tir(double, (x,), out_ty=R.Tensor((1, 4), F32))
        v = R.reshape(b, (1, 4))
        y = R.call_tir(add, (a, v), out_ty=R.Tensor((1, 4), F32))
        return y

    tvm.ir.assert_structural_equal(_lowered([[[1]], [[0]], [[2]]]), module(main))


def test_no_schedule_leaves_the_module_alone():
    tvm.ir.assert_structural_equal(LowerSchedule(None, CUDA)(Before), Before)


def test_a_variant_gets_a_private_copy_of_its_kernel():
    """Call site ``a`` runs a copy of ``double`` (marked as its variant); the kernel itself stays
    for its other callers."""

    @T.prim_func(private=True)
    def another_schedule(x: T.Buffer((1, 4), F32), y: T.Buffer((1, 4), F32)):
        for i in range(4):
            y[0, i] = x[0, i] * T.float32(2)

    copy = another_schedule.with_attr(VARIANT_ATTR, "double")

    variant = relax.BlockBuilder().add_func(copy, "double_ios_variant")  # a global variable with the kernel's type

    @R.function
    def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        with R.dataflow():
            a = R.call_tir(variant, (x,), out_ty=R.Tensor((1, 4), F32))
            b = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
            v = R.reshape(b, (1, 4))
            y = R.call_tir(add, (a, v), out_ty=R.Tensor((1, 4), F32))
            R.output(y)
        return y

    expected = module(main, {variant: copy, Before.get_global_var("double"): Before["double"]})
    tvm.ir.assert_structural_equal(_redirect(Before, {"a": copy}), expected)
