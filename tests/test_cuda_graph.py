"""CUDA-graph capture of scheduled runs (:mod:`ios_tvm.cuda_graph`), checked without a GPU:
Before/Expected in TVMScript for each step (prepare, memory plan, capture), the check that
refuses a cut stage, every zoo model and an ONNX model compiled for sm_90 with one capture
region holding every stage, and the prepared module's numerics on the CPU. What needs a GPU
(capture, replay) is in test_gpu.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import ios_tvm
from ios_tvm import models
from ios_tvm.compiler.pipeline import (
    build,
    kernel_passes,
    passes,
    pipeline,
    plan_memory,
)
from ios_tvm.core.schedule import Schedule
from ios_tvm.errors import CUDAGraphError, CUDAGraphWarning
from ios_tvm.ir.backend import back_passes
from ios_tvm.ir.graph import extract_graph
from ios_tvm.ir.merge_plan import node_merges
from ios_tvm.models import NetBuilder
from ios_tvm.runtime import FORK, JOIN
from ios_tvm.transform import cuda_graph as cg
from ios_tvm.transform.lower import LowerSchedule, plan, rewrite
from ios_tvm.transform.memory import VerifyMemory, verify_memory

from ir_fixtures import (  # noqa: E402
    BRANCHES_STAGES,
    F32,
    Branches,
    Planned,
    TwoOutputs,
    add,
    copy,
    double,
    inc,
    module,
    typed_allocs,
)

SM90 = {"kind": "cuda", "arch": "sm_90"}


# -- prepare: Before/Expected ----------------------------------------------------------------------

def _lowered(mod, stages):
    graph = extract_graph(mod, lowered=True)
    return rewrite(mod, plan(mod, Schedule.from_stages(graph, stages)), 2, 0)


def test_prepare_reads_inputs_of_a_stage_through_a_static_copy():
    """Both groups of stage 0 read ``x``: the caller's ``x`` is copied first thing (outside the
    graph, into planned storage) and every binding reads the copy."""

    @R.function(pure=False)
    def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        xs = R.call_tir(copy, (x,), out_ty=R.Tensor((1, 4), F32))
        fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
        s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
        b = R.call_tir(inc, (xs,), out_ty=R.Tensor((1, 4), F32))
        s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
        a = R.call_tir(double, (xs,), out_ty=R.Tensor((1, 4), F32))
        v = R.reshape(b, (1, 4))
        join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, b, a, ty_args=(R.Object,))  # noqa: F841
        y = R.call_tir(add, (a, v), out_ty=R.Tensor((1, 4), F32))
        return y

    lowered = _lowered(Branches, BRANCHES_STAGES)
    cp = cg.plan(lowered)
    assert [v.name for v in cp.inputs] == ["x"] and cp.outputs == []
    tvm.ir.assert_structural_equal(cg.prepare(lowered, cp), module(main))


def test_prepare_copies_out_outputs_written_inside_a_stage():
    """``a`` and ``b`` (returned) are written by stage 1: copied after its join and returned in
    their place. ``x`` is read only before the first fork: not copied."""

    @R.function(pure=False)
    def main(x: R.Tensor((1, 4), F32)) -> R.Tuple(R.Tensor((1, 4), F32), R.Tensor((1, 4), F32)):
        c = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
        fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
        s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
        a = R.call_tir(double, (c,), out_ty=R.Tensor((1, 4), F32))
        s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
        b = R.call_tir(inc, (c,), out_ty=R.Tensor((1, 4), F32))
        join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, c, a, b, ty_args=(R.Object,))  # noqa: F841
        y = (a, b)  # noqa: F841  (dead now, removed later)
        a_out = R.call_tir(copy, (a,), out_ty=R.Tensor((1, 4), F32))
        b_out = R.call_tir(copy, (b,), out_ty=R.Tensor((1, 4), F32))
        y_out = (a_out, b_out)
        return y_out

    lowered = _lowered(TwoOutputs, [[[0]], [[1], [2]]])
    cp = cg.plan(lowered)
    assert cp.inputs == [] and [v.name for v in cp.outputs] == ["a", "b"]
    tvm.ir.assert_structural_equal(cg.prepare(lowered, cp), module(main))


def test_prepare_leaves_runs_without_concurrent_stages_alone():
    lowered = _lowered(Branches, [[[1]], [[0]], [[2]]])
    assert not cg.plan(lowered)
    tvm.ir.assert_structural_equal(cg.prepare(lowered, cg.plan(lowered)), lowered)


# -- memory plan and capture: Before/Expected ----------------------------------------------------




def test_plan_of_prepared_module():
    """Lowering, prepare and TVM's planning for CUDA give :class:`Planned`: the copy and both
    groups in storage of their own (the keep-alive at the join), the output left unplanned."""
    sched = Schedule.from_stages(extract_graph(Branches, lowered=True), BRANCHES_STAGES)
    tgt = tvm.target.Target(SM90)
    with tgt:
        got = tvm.transform.Sequential([LowerSchedule(sched, 2, 0), cg.PrepareCUDAGraph(None)]
                                       + back_passes(tgt, stop_after_planning=True))(Branches)
    tvm.ir.assert_structural_equal(got, Planned)
    assert verify_memory(got) == []


def test_capture_hoists_storage_and_captures_the_stage_whole():
    """The capture pass on :class:`Planned`: the storage comes from TVM's cached allocation,
    launched first; the copy of ``x`` runs in ``main``; one capture function holds the stage
    (fork, both switches, both kernels, the join with its keep-alive); ``add`` writes the
    output (not static) after it."""

    @R.function(private=True)
    def cuda_graph_alloc() -> R.Tuple(R.Object, R.Object, R.Object):
        R.func_attr({"relax.force_pure": True})
        storage = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
        storage1 = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
        storage2 = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
        gv = (storage, storage1, storage2)
        return gv

    @R.function(private=True)
    def capture(storage1: R.Object, xs: R.Tensor((1, 4), F32), storage2: R.Object
                ) -> R.Tuple(R.Tensor((1, 4), F32), R.Tensor((1, 4), F32)):
        R.func_attr({"relax.force_pure": True})
        fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
        s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
        alloc1 = R.memory.alloc_tensor(storage1, 0, R.shape([1, 4]), R.dtype(F32), 0)
        inc(xs, alloc1)
        b = alloc1
        s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
        alloc2 = R.memory.alloc_tensor(storage2, 0, R.shape([1, 4]), R.dtype(F32), 0)
        double(xs, alloc2)
        a = alloc2
        v = R.reshape(b, R.shape([1, 4]))
        join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, b, a, ty_args=(R.Object,))  # noqa: F841
        gv = (a, v)
        return gv

    bb = relax.BlockBuilder()  # typed global variables for the two functions main calls
    alloc_gv = bb.add_func(cuda_graph_alloc, "cuda_graph_alloc")
    capture_gv = bb.add_func(capture, "main_cuda_graph_capture")

    @R.function(pure=False)
    def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
        gv = R.call_builtin_with_ctx("vm.builtin.cuda_graph.get_cached_alloc", (alloc_gv, 0),
                                     ty_args=(R.Tuple(R.Object, R.Object, R.Object),))
        storage = gv[0]
        storage1 = gv[1]
        storage2 = gv[2]
        alloc = R.memory.alloc_tensor(storage, 0, R.shape([1, 4]), R.dtype(F32), 0)
        copy(x, alloc)
        xs = alloc
        gv1 = R.call_builtin_with_ctx(
            "vm.builtin.cuda_graph.run_or_capture", (capture_gv, (storage1, xs, storage2), 0),
            ty_args=(R.Tuple(R.Tensor((1, 4), F32), R.Tensor((1, 4), F32)),))
        a = gv1[0]
        v = gv1[1]
        alloc3 = R.builtin.alloc_tensor(R.shape([1, 4]), R.dtype(F32), 0, R.str("global"))
        add(a, v, alloc3)
        y = alloc3
        return y

    Expected = module(main, {alloc_gv: cuda_graph_alloc, capture_gv: capture, copy: Planned["ios_graph_copy"],
                             inc: Planned["inc"], double: Planned["double"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CUDAGraphWarning)
        got = cg.CaptureCUDAGraph()(Planned)
    tvm.ir.assert_structural_equal(got, typed_allocs(Expected))
    assert cg.summarize(got) == cg.CaptureSummary(["main_cuda_graph_capture"], {"main_cuda_graph_capture": 1}, [])


def _stage_on_a_constant(planned: tvm.IRModule) -> tvm.IRModule:
    """:class:`Planned` with its stage reading a constant instead of the copy of ``x``: the fork
    is the first binding, before any storage is allocated."""
    fn = planned["main"]
    bindings = list(fn.body.blocks[0].bindings)
    xs = bindings[3].var
    const = relax.const(np.ones((1, 4), F32))
    body = [relax.VarBinding(b.var, relax.Call(b.value.op, [const if a.same_as(xs) else a for a in b.value.args],
                                               b.value.attrs, b.value.ty_args))
            if isinstance(b.value, relax.Call) and any(a.same_as(xs) for a in b.value.args) else b
            for b in bindings[4:]]
    out = tvm.IRModule(dict(planned.functions), attrs=planned.attrs)
    out["main"] = relax.Function(fn.params, relax.SeqExpr([relax.BindingBlock(body)], fn.body.body),
                                 fn.ret_ty, fn.is_pure, fn.attrs)
    return relax.transform.Normalize()(out)


def test_storage_is_hoisted_above_a_fork_that_comes_first():
    """TVM alone launches the capture function where the fork stands, before the cached
    allocation (where the first storage stood), and reads storage not yet defined; hoisted, the
    stage is captured whole."""
    late = _stage_on_a_constant(Planned)
    problems = cg.summarize(cg.rewrite_cuda_graph(late)).problems
    assert len(problems) == 1 and "not well formed" in problems[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CUDAGraphWarning)
        got = cg.CaptureCUDAGraph()(late)
    assert cg.summarize(got) == cg.CaptureSummary(["main_cuda_graph_capture"], {"main_cuda_graph_capture": 1}, [])


def test_a_stage_cut_by_the_capture_falls_back_without_a_graph():
    """Unprepared, both groups read the input ``x`` (not static): TVM cuts the stage; the
    capture pass says so and leaves the module uncaptured, stage calls in ``main``."""
    sched = Schedule.from_stages(extract_graph(Branches, lowered=True), BRANCHES_STAGES)
    tgt = tvm.target.Target(SM90)
    with tgt:
        planned = tvm.transform.Sequential([LowerSchedule(sched, 2, 0)]
                                           + back_passes(tgt, stop_after_planning=True))(Branches)
        with pytest.warns(CUDAGraphWarning, match="stage_fork without its stage_join|stage_join without"):
            got = cg.CaptureCUDAGraph()(planned)
    assert cg.summarize(got) == cg.CaptureSummary([], {"main": 1}, [])
    assert "run_or_capture" not in got.script()


def test_summarize_checks_every_group_is_switched_to_in_order():
    @I.ir_module
    class Swapped:
        @R.function(pure=False)
        def main(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
            fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
            s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
            s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
            join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, ty_args=(R.Object,))  # noqa: F841
            return x

    assert cg.summarize(Swapped).problems == ["main: join: a stage of 2 groups switched to groups [1, 0]"]


# -- whole pipelines for sm_90 (code generation, no GPU) --------------------------------------------

def _extern_name(value):
    return str(value.op.global_symbol) if isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc) else None


def _calls_builtin(value, name):
    """Whether ``value`` is ``R.call_builtin_with_ctx(name, ...)``."""
    return (isinstance(value, relax.Call) and len(value.args) > 0 and isinstance(value.args[0], relax.ExternFunc)
            and str(value.args[0].global_symbol) == name)


def _compile_recording(mod, target, sched):
    """``tvm.compile`` with ``cuda_graph=True`` (as :func:`ios_tvm.build`, untuned), keeping the
    module right after the capture pass. A :class:`CUDAGraphWarning` fails the test."""
    tgt = tvm.target.Target(target)
    merges = node_merges(mod, extract_graph(mod, tgt)) if sched.merges else None
    seq = passes(tgt, sched, merges=merges, verify=True, cuda_graph=True)
    seen = {}

    @tvm.transform.module_pass(opt_level=0, name="record")
    def record(m, _ctx):
        seen["captured"] = m
        return m

    at = [p.info.name for p in seq].index("ios_tvm.CaptureCUDAGraph") + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", CUDAGraphWarning)
        with tgt:
            ex = tvm.compile(mod, tgt, relax_pipeline=tvm.transform.Sequential(seq[:at] + [record] + seq[at:]))
    return ex, seen["captured"]


def _check_captured_whole(captured, sched):
    """One capture region holds every concurrent stage of ``sched``; it allocates nothing (its
    storage comes from TVM's cached allocation, through ``main``); each join still takes every
    tensor its stage writes."""
    concurrent = sum(len(st.groups) > 1 for st in sched.stages)
    summary = cg.summarize(captured)
    assert summary.problems == []
    assert len(summary.regions) == 1 and summary.stages == {summary.regions[0]: concurrent}
    fn = captured[summary.regions[0]]
    main_bindings = [b for blk in captured["main"].body.blocks for b in blk.bindings]
    # storage: parameters of the capture function, fed by items of get_cached_alloc in main
    cached = next(b.var for b in main_bindings if _calls_builtin(b.value, cg.GET_CACHED_ALLOC))
    from_cache = {b.var for b in main_bindings if isinstance(b.value, relax.TupleGetItem) and b.value.tuple_value.same_as(cached)}
    call = next(b.value for b in main_bindings if _calls_builtin(b.value, cg.RUN_OR_CAPTURE))
    passed = dict(zip(fn.params, call.args[1].fields[1].fields))
    bindings = [b for blk in fn.body.blocks for b in blk.bindings]
    alias, written, stage_writes, joins = {}, set(), [], 0
    for b in bindings:
        v = b.value
        assert not (isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op)
                    and v.op.name in ("relax.memory.alloc_storage", "relax.builtin.alloc_tensor")), b.var.name
        if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name == "relax.memory.alloc_tensor":
            assert passed[v.args[0]] in from_cache
            written.add(b.var)
        elif isinstance(v, relax.Var):
            alias[b.var] = alias.get(v, v)
        elif isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.GlobalVar):
            stage_writes += [a for a in v.args if a in written]
        name = _extern_name(v)
        if name == FORK:
            stage_writes = []
        elif name == JOIN:
            kept = {alias.get(a, a) for a in v.args[2:]}
            assert set(stage_writes) <= kept, b.var.name
            joins += 1
    assert joins == concurrent


@pytest.mark.parametrize("name", models.names())
def test_zoo_model_captured_whole_for_sm_90(name):
    mod = models.get(name, small=True)
    sched = ios_tvm.optimize(mod, SM90)
    assert sched.max_streams > 1
    ex, captured = _compile_recording(mod, SM90, sched)
    _check_captured_whole(captured, sched)
    # a CNN's stem alone reads the input, before the first fork; a transformer's residual reads it
    # inside the captured stages (the input is copied once into the graph's static storage)
    assert _copies(captured) == (1 if name in models.TRANSFORMERS else 0)
    assert "vm.builtin.cuda_graph.run_or_capture" in ex.as_text()


def _copies(captured) -> int:
    """Copy kernels ``main`` launches itself."""
    return sum(isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.GlobalVar)
               and b.value.op.name_hint.startswith(cg.COPY_KERNEL)
               for blk in captured["main"].body.blocks for b in blk.bindings)


def _onnx_two_outputs() -> bytes:
    """conv-relu | maxpool, both of the input and both returned: the input is read inside a
    stage and both outputs are written inside it."""
    pytest.importorskip("onnx", reason="the test extra installs onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y1"]),
             helper.make_node("MaxPool", ["x"], ["y2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])]
    graph = helper.make_graph(nodes, "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 4, 8, 8]),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 3, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnx_model_captured_whole_for_sm_90():
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load_from_string(_onnx_two_outputs()), keep_params_in_input=False)
    sched = Schedule.greedy(extract_graph(mod, SM90))
    assert sched.stages[0].groups and len(sched.stages[0].groups) == 2
    ex, captured = _compile_recording(mod, SM90, sched)
    _check_captured_whole(captured, sched)
    assert _copies(captured) == 3  # the input copied in, both outputs copied out, outside the graph
    assert "vm.builtin.cuda_graph.run_or_capture" in ex.as_text()


def test_pytorch_model_with_weights_as_inputs_captured_whole_for_sm_90():
    """``torch.export`` with the weights kept as parameters of ``main`` (after ``num_input``,
    TVM's mark of what stays fixed between calls): the weights count as static, the input (read
    by both branches of a stage) is copied."""
    torch = pytest.importorskip("torch", reason="PyTorch import needs torch")
    from tvm.relax.frontend.torch import from_exported_program

    class TwoBranches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 1)
            self.b = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)

    x = torch.randn(1, 3, 8, 8)
    mod = from_exported_program(torch.export.export(TwoBranches().eval(), (x,)), keep_params_as_input=True)
    mod, _ = relax.frontend.detach_params(mod)
    assert int(mod["main"].attrs["num_input"]) == 1 and len(mod["main"].params) > 1
    sched = Schedule.greedy(extract_graph(mod, SM90))
    _, captured = _compile_recording(mod, SM90, sched)
    _check_captured_whole(captured, sched)
    assert _copies(captured) == 1


# -- what the CPU can run: the prepared module's numerics, errors ---------------------------------

def _tiny(case: str):
    nb = NetBuilder(case, (1, 4, 8, 8))
    with nb.scope() as x:
        if case == "input_in_stage":
            nb.output(nb.concat([nb.conv(x, 8, 3), nb.conv(x, 8, 1)]))
        else:  # outputs written inside a stage
            a = nb.conv(x, 8, 3)
            nb.output(relax.Tuple([nb.conv(a, 8, 3), nb.conv(a, 8, 1)]))
    mod = nb.module()
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


@pytest.mark.parametrize("case", ["input_in_stage", "outputs_in_stage"])
def test_prepared_module_computes_what_the_sequential_one_does_on_cpu(case):
    """The copies in and out change no value (run on the CPU with the CPU runtime's stage
    calls; capture itself needs a GPU), and the prepared plan is race-free."""
    mod, data = _tiny(case)
    sched = Schedule.greedy(extract_graph(mod, "llvm"))
    cpu = tvm.target.Target("llvm")
    seq = (kernel_passes(cpu, False) + [LowerSchedule(sched, 1), cg.PrepareCUDAGraph(cpu)]
           + back_passes(cpu, after_planning=[VerifyMemory()]))
    with cpu:
        prepared = tvm.compile(mod, cpu, relax_pipeline=tvm.transform.Sequential(seq))
    assert "ios_graph_copy" in prepared.as_text()

    def run(ex):
        out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data))
        return [o.numpy() for o in out] if isinstance(out, (list, tuple, tvm.ir.Array)) else [out.numpy()]

    for got, want in zip(run(prepared), run(build(mod, "llvm")), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert verify_memory(plan_memory(mod, SM90, sched, cuda_graph=True)) == []


def test_cuda_graph_needs_a_cuda_target():
    mod, _ = _tiny("input_in_stage")
    with pytest.raises(CUDAGraphError, match="needs a CUDA target"):
        build(mod, "llvm", cuda_graph=True)
    with pytest.raises(CUDAGraphError, match="needs a CUDA target"):
        pipeline("llvm", None, cuda_graph=True)


def test_cli_cuda_graph_flag_reaches_the_build(capsys, tmp_path):
    from ios_tvm.cli import main

    out = tmp_path / "m.so"
    assert main(["build", "squeezenet", "--small", "--target", "llvm", "--cuda-graph", "-o", str(out)]) == 2
    assert "needs a CUDA target" in capsys.readouterr().err and not out.exists()
