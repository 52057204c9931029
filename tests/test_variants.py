"""Kernel variants (concurrency-aware choice among a tuning database's runner-up schedules):
the pure descent, the database side, per-call-site application in builds, schedule
files, and the measured selection end to end on the CPU."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

import ios_tvm
from ios_tvm.compiler.pipeline import plan_memory
from ios_tvm.core.descent import refine_stage
from ios_tvm.core.schedule import Schedule
from ios_tvm.cost.measure import MeasureConfig
from ios_tvm.driver.variants import _build_variants, select_variants
from ios_tvm.errors import ScheduleFormatError, ScheduleMismatchError
from ios_tvm.ir.target import target_key, tuning_target
from ios_tvm.transform.kernel_schedules import (
    VARIANT_ATTR,
    apply_trace,
    kernel_variants,
)


# -- refine_stage: pure ----------------------------------------------------------------------------
def _separable(costs):
    calls = []

    def measure(choice):
        calls.append(dict(choice))
        return sum(c[choice.get(v, 0)] for v, c in costs.items())

    return measure, calls


@pytest.mark.parametrize("seed", range(20))
def test_descent_finds_the_best_of_a_separable_stage(seed):
    rng = np.random.default_rng(seed)
    costs = {v: list(rng.uniform(1, 2, size=int(rng.integers(1, 4)))) for v in range(int(rng.integers(1, 5)))}
    measure, calls = _separable(costs)
    res = refine_stage({v: len(c) for v, c in costs.items()}, measure, max_moves=len(costs), min_gain=0.0)
    best = min(sum(costs[v][k] for v, k in zip(costs, ks))
               for ks in itertools.product(*(range(len(c)) for c in costs.values())))
    assert res.latency_s == pytest.approx(best)
    assert res.base_s == pytest.approx(sum(c[0] for c in costs.values()))
    assert all(k > 0 for k in res.choice.values())  # only call sites off their default
    assert res.evaluated == len(calls)


def test_descent_keeps_defaults_below_the_gain_threshold():
    measure, _ = _separable({0: [1.0, 0.99], 1: [1.0, 0.995]})
    res = refine_stage({0: 2, 1: 2}, measure, min_gain=0.03)
    assert res.choice == {} and res.latency_s == res.base_s == 2.0


def test_descent_drops_a_win_that_does_not_confirm():
    seen = {"n": 0}

    def noisy(choice):  # variant 1 looks fast once, then measures like the default
        if choice:
            seen["n"] += 1
            return 0.5 if seen["n"] == 1 else 1.0
        return 1.0

    res = refine_stage({3: 2}, noisy, min_gain=0.03)
    assert res.choice == {} and res.latency_s == res.base_s == 1.0


def test_descent_finds_a_pair_that_avoids_contention():
    # two kernels that are fastest alone (rank 0) but slow each other down when both run rank 0
    alone = {0: [1.0, 1.2], 1: [1.0, 1.1]}

    def measure(choice):
        a, b = choice.get(0, 0), choice.get(1, 0)
        t = max(alone[0][a], alone[1][b])
        return t * (1.8 if (a, b) == (0, 0) else 1.0)

    res = refine_stage({0: 2, 1: 2, 2: 1}, measure, min_gain=0.03)
    assert res.base_s == pytest.approx(1.8) and res.latency_s == pytest.approx(1.1)
    assert res.choice == {1: 1}


# -- the database and the build (CPU, a tuned tiny model) ----------------------------------------
@pytest.fixture(scope="module")
def setup(tiny_branches, tiny_tuned):
    mod, data = tiny_branches
    work, _ = tiny_tuned
    target = tuning_target("llvm")
    graph = ios_tvm.extract_graph(mod, target)
    db = ms.database.JSONDatabase(work_dir=str(work))
    variants = kernel_variants(graph, db, top_k=3)
    return mod, data, target, graph, str(work), variants


def _conv_nodes(graph):
    nodes = [n.id for n in graph.nodes if n.kernel.startswith("fused_conv2d")]
    assert len(nodes) == 2 and graph.nodes[nodes[0]].kernel == graph.nodes[nodes[1]].kernel
    return nodes


def test_database_variants_are_distinct_and_ranked(setup):
    mod, _, target, graph, work, variants = setup
    conv = graph.nodes[_conv_nodes(graph)[0]].kernel
    assert set(variants) == {n.kernel for n in graph.nodes}
    vs = variants[conv]
    assert len(vs) >= 2, "three trials should leave at least two distinct schedules of the conv"
    assert [v.rank for v in vs] == list(range(len(vs)))
    assert [v.run_secs for v in vs] == sorted(v.run_secs for v in vs)
    bodies = [apply_trace(graph.mod[conv], v.trace).body for v in vs]
    assert not any(tvm_ffi.structural_equal(a, b) for a, b in itertools.combinations(bodies, 2))
    # rank 0 is what a build with the database runs
    built = plan_memory(mod, target, database=work)[conv]
    assert tvm_ffi.structural_equal(built.body, bodies[0])


def _with_variant(graph, node, var, made_for="llvm:generic"):
    sched = Schedule.greedy(graph)
    sched.variants = {node: {"kernel": graph.nodes[node].kernel, "target": made_for, "rank": var.rank,
                             "run_secs": var.run_secs, "trace": var.trace}}
    return sched


def _run(ex, data):
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()


def test_a_variant_runs_at_its_call_site_only(setup):
    mod, data, target, graph, work, variants = setup
    a, b = _conv_nodes(graph)
    conv = graph.nodes[a].kernel
    var = variants[conv][1]
    sched = _with_variant(graph, b, var)
    planned = plan_memory(mod, target, sched, database=work)
    copy = planned[f"{conv}_ios_variant"]
    assert copy.attrs[VARIANT_ATTR] == conv
    assert tvm_ffi.structural_equal(copy.body, apply_trace(graph.mod[conv], var.trace).body)
    assert not tvm_ffi.structural_equal(copy.body, planned[conv].body)
    callees = _callees(planned)
    assert callees.count(conv) == 1 and callees.count(f"{conv}_ios_variant") == 1
    ref = _run(ios_tvm.build(mod, target, database=work), data)
    np.testing.assert_allclose(_run(ios_tvm.build(mod, target, sched, database=work), data), ref, rtol=1e-5, atol=1e-5)
    # untuned build of the same schedule: the variant still applies (its trace travels with it)
    np.testing.assert_allclose(_run(ios_tvm.build(mod, target, sched, database=None), data), ref, rtol=1e-5, atol=1e-5)


def _callees(planned):
    """Kernels ``main`` calls, once per call (after CallTIRRewrite a call's op is the kernel)."""
    return [bnd.value.op.name_hint for block in planned["main"].body.blocks for bnd in block.bindings
            if isinstance(bnd.value, relax.Call) and isinstance(bnd.value.op, tvm.ir.GlobalVar)]


def test_schedule_files_keep_variants(setup, tmp_path):
    _, _, _, graph, _, variants = setup
    a, _ = _conv_nodes(graph)
    sched = _with_variant(graph, a, variants[graph.nodes[a].kernel][1])
    path = sched.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["version"] == 2 and list(data["variants"]) == [str(a)]
    again = Schedule.load(path, graph)
    assert again.variants == sched.variants
    assert "(variants: " in again.to_text()
    assert json.loads(Schedule.greedy(graph).to_json())["version"] == 1  # readable by older ios_tvm

    def broken(edit):
        d = json.loads(path.read_text())
        edit(d)
        return json.dumps(d)

    with pytest.raises(ScheduleMismatchError, match="names kernel"):
        Schedule.from_json(broken(lambda d: d["variants"][str(a)].update(kernel="other")), graph)
    with pytest.raises(ScheduleMismatchError, match="does not have"):
        Schedule.from_json(broken(lambda d: d.update(variants={"99": d["variants"][str(a)]})), graph)
    with pytest.raises(ScheduleMismatchError, match="trace"):
        Schedule.from_json(broken(lambda d: d["variants"][str(a)].pop("trace")), graph)
    with pytest.raises(ScheduleFormatError, match="corrupt"):
        Schedule.from_json(broken(lambda d: d.update(variants={"x": {}})), graph)
    with pytest.raises(ScheduleFormatError, match="newer ios_tvm"):
        Schedule.from_json(broken(lambda d: d.update(version=3)), graph)
    with pytest.raises(ScheduleFormatError, match="version 1"):
        Schedule.from_json(broken(lambda d: d.update(version=1)), graph)
    with pytest.raises(ScheduleFormatError, match="corrupt"):
        Schedule.from_json(broken(lambda d: d.update(variants=[1, 2])), graph)


def test_variants_for_another_target_or_a_stale_trace_are_refused(setup):
    mod, _, target, graph, work, variants = setup
    a, _ = _conv_nodes(graph)
    var = variants[graph.nodes[a].kernel][1]
    assert target_key(target) == "llvm:generic"
    with pytest.raises(ScheduleMismatchError, match="selected for cuda:sm_90.*re-run ios_tvm.select_variants"):
        ios_tvm.build(mod, target, _with_variant(graph, a, var, made_for="cuda:sm_90"), database=work)
    stale = _with_variant(graph, a, var)
    stale.variants[a]["trace"] = [[["GetSBlock", [], ["no_such_block", "main"], ["b0"]]], []]
    with pytest.raises(ScheduleMismatchError, match="no longer applies"):
        ios_tvm.build(mod, target, stale, database=work)
    with pytest.raises(ScheduleMismatchError, match="no longer applies"):
        plan_memory(mod, target, stale, database=work)


def test_measure_stage_runs_the_replacement(setup):
    """The stage timer calls the replacement kernel in place of the model's, warm-up + repeats."""
    from ios_tvm.cost.measure import MeasuredCostModel

    _, _, target, graph, work, _ = setup
    a, b = _conv_nodes(graph)
    calls = []
    spy = tvm_ffi.convert(lambda *args: calls.append(len(args)))
    cm = MeasuredCostModel(target, MeasureConfig(warmup=2, repeat=3, cache_dir=False, progress=False), database=work)
    assert cm.measure_stage(graph, ((a,), (b,)), {a: spy}) > 0
    n_args = len(graph.nodes[a].inputs) + len(graph.nodes[a].outputs)
    assert calls == [n_args] * 5


def test_built_variants_compute_what_the_kernel_computes(setup):
    """Every runner-up kernel, compiled for timing, gives the model kernel's result."""
    from ios_tvm.cost.measure import MeasuredCostModel

    mod, _, target, graph, work, variants = setup
    a, b = _conv_nodes(graph)
    greedy = Schedule.greedy(graph)
    stage = next(i for i, st in enumerate(greedy.stages) if a in st.nodes)
    cm = MeasuredCostModel(target, MeasureConfig(warmup=0, repeat=1, cache_dir=False, progress=False), database=work)
    cm.measure_stage(graph, ((a,),))  # builds the model, allocates arguments
    built = _build_variants(graph, variants, greedy, [stage], target, cm)
    k = len(variants[graph.nodes[a].kernel])
    assert set(built) == {(v, r) for v in (a, b) for r in range(1, k)}
    args = cm.timer.args[a]
    cm.timer.funcs[a](*args)
    want = args[-1].numpy().copy()
    for r in range(1, k):
        args[-1].copyfrom(np.zeros_like(want))
        built[(a, r)](*args)
        np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-5, atol=1e-5)


def test_select_variants_end_to_end_on_cpu(setup):
    mod, data, target, graph, work, variants = setup
    greedy = Schedule.greedy(graph)
    conc = [i for i, st in enumerate(greedy.stages) if len(st.groups) > 1]
    assert conc, "the two convs run side by side in the greedy schedule"
    config = MeasureConfig(warmup=1, repeat=5, cache_dir=False, progress=False)
    out = select_variants(mod, target, greedy, database=work, config=config, min_gain=0.0, graph=graph)
    meta = out.meta["variants"]
    k = len(variants[graph.nodes[_conv_nodes(graph)[0]].kernel])
    # the defaults, then each conv call site's k - 1 runner-ups in the first move
    assert meta["stages_tried"] == len(conc) and meta["measurements"] >= 1 + 2 * (k - 1)
    assert out.as_lists() == greedy.as_lists()
    for v, var in out.variants.items():
        assert var["rank"] >= 1 and v in greedy.stages[conc[0]].nodes
    assert meta["measured_gain_s"] > 0 if out.variants else meta["measured_gain_s"] == 0
    # the greedy schedule was not costed by measurement: no measured latency is mixed into it
    assert [st.latency for st in out.stages] == [st.latency for st in greedy.stages]
    np.testing.assert_allclose(_run(ios_tvm.build(mod, target, out, database=work), data),
                               _run(ios_tvm.build(mod, target, database=work), data), rtol=1e-5, atol=1e-5)
    # a gain no variant can give keeps every default
    strict = select_variants(mod, target, greedy, database=work, config=config, min_gain=0.9, graph=graph)
    assert strict.variants == {} and strict.meta["variants"]["measured_gain_s"] == 0


def test_select_variants_needs_a_database_and_a_local_device(setup):
    mod, _, target, graph, work, _ = setup
    greedy = Schedule.greedy(graph)
    with pytest.raises(ValueError, match="tuning database"):
        select_variants(mod, target, greedy, database=None)
    from ios_tvm.cost.remote import RPCConfig

    with pytest.raises(NotImplementedError, match="rpc"):
        select_variants(mod, target, greedy, database=work, config=MeasureConfig(rpc=RPCConfig("localhost", 1, "k")))
    with pytest.raises(ValueError, match="top_k"):
        select_variants(mod, target, greedy, database=work, top_k=0)


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error for a missing GPU, and this machine has one")
def test_select_variants_without_the_gpu_says_where_to_run(setup):
    mod, _, _, graph, work, _ = setup
    with pytest.raises(RuntimeError, match="GPU machine"):
        select_variants(mod, {"kind": "cuda", "arch": "sm_90"}, Schedule.greedy(graph), database=work)
