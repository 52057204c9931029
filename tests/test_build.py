"""Scheduled models compile and compute what the sequential model computes (CPU), the lowered
memory plan is race-free, and CUDA builds generate code without a GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

import ios_tvm
from ios_tvm import models, runtime
from ios_tvm.compiler.pipeline import build, pipeline, plan_memory
from ios_tvm.core.schedule import Schedule
from ios_tvm.errors import ScheduleMismatchError
from ios_tvm.runtime import FORK, JOIN, SWITCH
from ios_tvm.transform.memory import verify_memory

CUDA = {"kind": "cuda", "arch": "sm_90"}


def _bound(name):
    mod = models.get(name, small=True)
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


def _run_cpu(ex, data):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(data)).numpy()


def _max_concurrency(graph):
    """A stage costs its longest group: concurrency is free, so stages get as wide as s=8 allows."""
    class PerStage:
        name = "longest-group"

        def stage_latency(self, graph, groups):
            return float(max(len(g) for g in groups))

    return ios_tvm.optimize(graph.source, CUDA, graph=graph, cost_model=PerStage())


@pytest.mark.parametrize("name", models.names())
def test_scheduled_equals_sequential_on_cpu(name):
    mod, data = _bound(name)
    graph = ios_tvm.extract_graph(mod, "llvm")
    want = _run_cpu(build(mod, "llvm"), data)
    assert np.isfinite(want).all() and want.std() > 0
    before = runtime.stages_run()
    schedules = {
        "ios": ios_tvm.optimize(mod, CUDA, graph=graph),
        "greedy": Schedule.greedy(graph, max_num_groups=runtime.pool_size()),  # MoE: 11 ready matmuls
        "max_concurrency": _max_concurrency(graph),
    }
    expected_joins = 0
    for label, sched in schedules.items():
        assert sched.max_streams > 1, label
        got = _run_cpu(build(mod, "llvm", sched), data)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=label)
        expected_joins += sum(len(s.groups) > 1 for s in sched.stages)
    # every concurrent stage went through the runtime's fork/switch/join
    assert runtime.stages_run() - before == expected_joins


def test_verifier_accepts_lowered_and_rejects_racy():
    mod, _ = _bound("googlenet")
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = ios_tvm.optimize(mod, CUDA, graph=graph)
    assert verify_memory(plan_memory(mod, "llvm", sched)) == []
    racy = verify_memory(plan_memory(mod, "llvm", sched, keep_alive=False))
    assert racy and "written by" in racy[0]
    with pytest.raises(RuntimeError, match="not safe to run concurrently"):
        build(mod, "llvm", sched, keep_alive=False)


def test_lowered_main_has_stage_calls_in_order():
    mod, _ = _bound("squeezenet")
    sched = ios_tvm.optimize(mod, CUDA)
    planned = plan_memory(mod, "llvm", sched)
    calls = []
    for block in planned["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, relax.ExternFunc):
                name = str(b.value.op.global_symbol)
                if name.startswith("ios_tvm."):
                    calls.append(name)
    concurrent = [s for s in sched.stages if len(s.groups) > 1]
    assert calls.count(FORK) == calls.count(JOIN) == len(concurrent)
    assert calls.count(SWITCH) == sum(len(s.groups) for s in concurrent)
    depth = 0
    for c in calls:  # properly nested: fork, switch..., join
        depth += {FORK: 1, JOIN: -1}.get(c, 0)
        assert depth in (0, 1) and (c != SWITCH or depth == 1)


def test_build_refuses_foreign_or_invalid_schedules():
    mod, _ = _bound("squeezenet")
    other, _ = _bound("googlenet")
    sched = ios_tvm.optimize(other, CUDA)
    with pytest.raises(ScheduleMismatchError, match="another model"):
        build(mod, "llvm", sched)
    bad = ios_tvm.optimize(mod, CUDA)
    bad.stages.reverse()
    with pytest.raises(ScheduleMismatchError, match="before its input|concurrently"):
        build(mod, "llvm", bad)


def test_pipeline_plugs_into_tvm_compile():
    mod, data = _bound("squeezenet")
    sched = ios_tvm.optimize(mod, CUDA)
    ex = tvm.compile(mod, "llvm", relax_pipeline=ios_tvm.pipeline("llvm", sched))
    np.testing.assert_allclose(_run_cpu(ex, data), _run_cpu(build(mod, "llvm"), data), rtol=1e-5, atol=1e-6)


def test_pipeline_does_what_build_does_for_a_merged_half_schedule(free_merges):
    """``tvm.compile`` with ``ios_tvm.pipeline`` (and ios_tvm's TIR pipeline) is ``ios_tvm.build``:
    the same conversion to float16, the same merges and stages, the same kernels, so the very
    same output; and the pipeline refuses what ``build`` refuses, with the same typed error."""
    from ios_tvm.compiler import TIR_PIPELINE

    mod, data = _bound("squeezenet")
    sched = ios_tvm.optimize(mod, "llvm", dtype="float16", cost_model=free_merges)
    assert sched.merges
    built = _run_cpu(build(mod, "llvm", sched, dtype="float16"), data)
    compiled = _run_cpu(tvm.compile(mod, "llvm", relax_pipeline=ios_tvm.pipeline("llvm", sched, dtype="float16"),
                                    tir_pipeline=TIR_PIPELINE), data)
    np.testing.assert_array_equal(compiled, built)
    with pytest.raises(ScheduleMismatchError, match="in float16 and this one computes in float32"):
        tvm.compile(mod, "llvm", relax_pipeline=ios_tvm.pipeline("llvm", sched))  # dtype forgotten
    other, _ = _bound("googlenet")
    with pytest.raises(ScheduleMismatchError, match="made for another model"):
        tvm.compile(other, "llvm", relax_pipeline=ios_tvm.pipeline("llvm", sched, dtype="float16"))


def test_stream_count_above_pool_is_a_clear_error():
    mod, data = _bound("googlenet")
    sched = ios_tvm.optimize(mod, CUDA)
    assert sched.max_streams >= 3
    with pytest.raises(ValueError, match="pool holds 2"):
        build(mod, "llvm", sched, pool_size=2)
    old = runtime.pool_size()
    ex = build(mod, "llvm", sched)
    try:
        runtime.set_pool_size(2)
        with pytest.raises(ValueError, match="pool holds 2"):
            _run_cpu(ex, data)
    finally:
        runtime.set_pool_size(old)
    with pytest.raises(ValueError, match="pool size"):
        runtime.set_pool_size(0)


def test_runtime_calls_check_their_structure():
    fork = tvm_ffi.get_global_func(FORK)
    switch = tvm_ffi.get_global_func(SWITCH)
    join = tvm_ffi.get_global_func(JOIN)
    with pytest.raises(RuntimeError, match="outside a stage"):
        switch(1, 0, 0)
    with pytest.raises(RuntimeError, match="outside a stage"):
        join(1, 0)
    fork(1, 0, 2)
    try:
        with pytest.raises(IndexError, match="outside 0..1"):
            switch(1, 0, 2)
    finally:
        join(1, 0)
    with pytest.raises(ValueError, match="device type"):
        fork(7, 0, 2)


def test_a_stage_left_open_is_closed_by_the_next_fork():
    """A run that stops between fork and join (an exception, Ctrl-C) leaves its stage open: the
    next fork closes it and counts it, so later runs work; nested stages (a lowering bug) still
    fail, at their second join."""
    fork, switch, join = (tvm_ffi.get_global_func(n) for n in (FORK, SWITCH, JOIN))
    run0, rec0 = runtime.stages_run(), runtime.stages_recovered()
    fork(1, 0, 2)
    switch(1, 0, 1)  # ... and the run stops here
    fork(1, 0, 3)
    assert runtime.stages_recovered() == rec0 + 1
    switch(1, 0, 2)  # the new stage has its own groups
    join(1, 0)
    assert runtime.stages_run() == run0 + 2
    with pytest.raises(RuntimeError, match="outside a stage"):
        join(1, 0)


def test_a_model_runs_again_after_a_run_stopped_inside_a_stage(tiny_branches):
    """End to end on the CPU: the first run of a scheduled model fails inside its concurrent
    stage (a planted error in the second group's kernel), the next run works and is right."""
    mod, data = tiny_branches
    sched = Schedule.greedy(ios_tvm.extract_graph(mod, "llvm"))  # the two convs side by side
    assert sched.max_streams == 2
    ex = build(mod, "llvm", sched)
    want = _run_cpu(build(mod, "llvm"), data)
    fail = {"armed": True}
    real_switch = tvm_ffi.get_global_func(SWITCH)

    def switch(device_type, device_id, group):
        if group == 1 and fail["armed"]:
            fail["armed"] = False
            raise RuntimeError("planted failure inside the stage")
        real_switch(device_type, device_id, group)

    tvm_ffi.register_global_func(SWITCH, switch, override=True)
    try:
        with pytest.raises(RuntimeError, match="planted failure"):
            _run_cpu(ex, data)
        recovered = runtime.stages_recovered()
        np.testing.assert_allclose(_run_cpu(ex, data), want, rtol=1e-5, atol=1e-5)
        assert runtime.stages_recovered() == recovered + 1
    finally:
        tvm_ffi.register_global_func(SWITCH, real_switch, override=True)



def test_a_view_read_by_concurrent_groups_is_no_write():
    """One view of the input (a reshape, as the transformer zoo flattens tokens once for all the
    projections reading them) read by three groups of a stage: a read, not a race (the verifier
    took the view's first kernel for its writer)."""
    from tvm.relax import op as R

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            flat = bb.emit(R.reshape(x, (4, 8)))
            ys = [bb.emit(R.matmul(flat, relax.const(rng.normal(size=(8, 8)).astype("float32")))) for _ in range(3)]
            out = bb.emit_output(R.concat(ys, axis=-1))
        bb.emit_func_output(out)
    mod = bb.get()
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = Schedule.greedy(graph)
    assert [len(st.groups) for st in sched.stages] == [3, 1]
    assert verify_memory(plan_memory(mod, "llvm", sched)) == []
    data = rng.uniform(-1, 1, (1, 4, 8)).astype("float32")
    np.testing.assert_allclose(_run_cpu(build(mod, "llvm", sched), data), _run_cpu(build(mod, "llvm"), data),
                               rtol=1e-6, atol=1e-6)

@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error raised when no GPU is present")
def test_cuda_stage_without_gpu_is_a_clear_error():
    fork = tvm_ffi.get_global_func(FORK)
    with pytest.raises(RuntimeError, match="no CUDA GPU|without CUDA"):
        fork(2, -1, 2)


@pytest.mark.parametrize("name", models.names())
def test_cuda_codegen_without_gpu(name):
    mod = models.get(name, small=True)
    sched = ios_tvm.optimize(mod, CUDA)
    assert sched.max_streams > 1
    ex = build(mod, CUDA, sched)
    text = ex.as_text()
    assert FORK in text and SWITCH in text and JOIN in text

    def find(m, kind):
        if m.kind == kind:
            return m
        for i in m.imports:
            found = find(i, kind)
            if found is not None:
                return found
        return None

    cuda = find(ex.mod, "cuda")
    assert cuda is not None
    src = cuda.inspect_source("cuda")
    assert "__global__" in src
    # every distinct PrimFunc the graph launches is compiled to CUDA kernels of its name
    compiled = set(re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', src))
    kernels = {n.kernel for n in ios_tvm.extract_graph(mod, CUDA).nodes}
    missing = sorted(k for k in kernels if not any(re.fullmatch(rf"{k}_kernel\d*", c) for c in compiled))
    assert kernels and not missing, missing


def test_sequential_cuda_graph_baseline_compiles_without_gpu():
    """The CUDA-graph peer of the benchmarks: the sequential pipeline (same kernels, database
    applied) captured with TVM's CUDA graph rewrite, with no PassContext setting needed; without
    ``cuda_graph`` the rewrite stays out even when the PassContext asks for it. (Scheduled
    runs: tests/test_cuda_graph.py.)"""
    mod, _ = _bound("squeezenet")
    target = tvm.target.Target(CUDA)
    ex = tvm.compile(mod, target, relax_pipeline=pipeline(target, None, database=None, cuda_graph=True))
    with tvm.transform.PassContext(config={"relax.backend.use_cuda_graph": True}):
        plain = tvm.compile(mod, target, relax_pipeline=pipeline(target, None, database=None))
    assert "vm.builtin.cuda_graph.run_or_capture" in ex.as_text()
    assert "cuda_graph" not in plain.as_text()


def test_planned_memory_reports_the_price_of_concurrency():
    """Inception-v3 (small) scheduled with up to 4 streams: its plan is never below the largest
    tensor, and the keep-alives are what make it need more than the sequential plan (without
    them the plan is racy, see test_verifier_accepts_lowered_and_rejects_racy)."""
    from ios_tvm.compiler.pipeline import planned_memory
    from ios_tvm.ir.graph import tensor_bytes
    from ios_tvm.transform.memory import planned_bytes

    mod = models.get("inception_v3", small=True)
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=ios_tvm.cost.AnalyticCostModel.for_target(CUDA),
                             search=ios_tvm.SearchConfig(strategy="concurrent"))
    assert sched.max_streams > 1
    seq, ios = planned_memory(mod, "llvm"), planned_memory(mod, "llvm", sched)
    largest = max(tensor_bytes(shape, dtype) for n in graph.nodes for shape, dtype in n.outputs)
    assert min(seq, ios) >= largest
    racy = planned_bytes(plan_memory(mod, "llvm", sched, keep_alive=False))
    assert ios > racy and ios > seq
