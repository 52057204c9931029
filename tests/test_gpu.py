"""On an NVIDIA GPU: scheduled models equal sequential ones, repeated runs are identical (a race
check), scheduled runs captured as CUDA graphs replay correctly, and the stage timer agrees with
end-to-end time. Skipped without a GPU. The tests marked ``timing`` compare speeds: run them
alone (``-m "gpu and timing"``), the others may run side by side (``-m "gpu and not timing" -n 8``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models, runtime
from ios_tvm.core.schedule import Schedule
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.errors import CUDAGraphWarning
from ios_tvm.runtime.profiling import median, time_vm

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def compile_once():
    """The builds of one model share their kernels: compile each CUDA source once."""
    from ios_tvm.compiler import cuda_cache

    cuda_cache.enable()
    yield
    cuda_cache.disable()


@pytest.fixture(scope="module")
def target():
    from ios_tvm.ir.target import local_target

    return local_target()  # the GPU as the driver describes it


def _bound(name, **kw):
    mod = models.get(name, small=True, **kw)
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


def _run(ex, data, times=1):
    vm = relax.VirtualMachine(ex, tvm.cuda(0))
    return [vm["main"](tvm.runtime.tensor(data, tvm.cuda(0))).numpy() for _ in range(times)]


@pytest.mark.parametrize("name", models.names())
def test_scheduled_equals_sequential_on_gpu(name, target):
    mod, data = _bound(name)
    graph = ios_tvm.extract_graph(mod, target)
    want = _run(ios_tvm.build(mod, target), data)[0]
    before = runtime.stages_run()
    greedy = Schedule.greedy(graph, max_num_groups=runtime.pool_size())  # MoE: 11 ready matmuls
    for sched in (ios_tvm.optimize(mod, target, graph=graph, cost_model="analytic"), greedy):
        assert sched.max_streams > 1
        outs = _run(ios_tvm.build(mod, target, sched), data, times=5)
        np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
        for again in outs[1:]:  # streams race only if the result changes from run to run
            np.testing.assert_array_equal(again, outs[0])
    assert runtime.stages_run() > before


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "squeezenet"])
def test_captured_schedule_replays_what_sequential_computes(name, target):
    """IOS + CUDA graph (ios_tvm.cuda_graph): the first call runs the scheduled region once
    uncaptured and once while capturing (the host runs every concurrent stage twice), later calls
    replay the graph (the host runs none: stages_run stays put); results equal the sequential
    build, with and without its own CUDA graph, are bitwise identical over replays (no race
    between the branches of the graph), and follow a new input (read through its copy)."""
    mod, data = _bound(name)
    sched = ios_tvm.optimize(mod, target, cost_model="analytic")
    concurrent = sum(len(st.groups) > 1 for st in sched.stages)
    assert concurrent > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", CUDAGraphWarning)  # captured whole, no fallback
        captured = ios_tvm.build(mod, target, sched, database=None, cuda_graph=True)
        seq_graph = ios_tvm.build(mod, target, database=None, cuda_graph=True)
    seq = ios_tvm.build(mod, target, database=None)
    want = _run(seq, data)[0]
    np.testing.assert_allclose(_run(seq_graph, data, times=2)[1], want, rtol=1e-5, atol=1e-5)
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(captured, dev)
    x = tvm.runtime.tensor(data, dev)
    before = runtime.stages_run()
    first = vm["main"](x).numpy()
    assert runtime.stages_run() - before == 2 * concurrent
    replays = [vm["main"](x).numpy() for _ in range(5)]
    assert runtime.stages_run() - before == 2 * concurrent
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)
    for again in replays:
        np.testing.assert_array_equal(again, first)
    other = np.random.default_rng(1).uniform(-1, 1, data.shape).astype(data.dtype)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(other, dev)).numpy(), _run(seq, other)[0],
                               rtol=1e-5, atol=1e-5)


def _tensors(value):
    return [t.numpy() for t in value] if isinstance(value, (list, tuple, tvm.ir.Array)) else [value.numpy()]


def test_captured_inputs_and_outputs_inside_a_stage(target, tiny_branches):
    """Both branches of a stage read the input (``tiny_branches``: copied into static storage),
    or are both returned (copied out): each call with a new input gives the sequential result,
    and results of earlier calls are not overwritten by later replays (outputs are fresh)."""
    from ios_tvm.models import NetBuilder

    nb = NetBuilder("two_outputs", (1, 4, 8, 8))
    with nb.scope() as x:
        a = nb.conv(x, 8, 3)
        nb.output(relax.Tuple([nb.conv(a, 8, 3), nb.conv(a, 8, 1)]))
    two = models.bind_params(nb.module(), models.random_params(nb.module()))
    dev = tvm.cuda(0)
    rng = np.random.default_rng(2)
    for mod, data in (tiny_branches, (two, models.random_input(two))):
        sched = Schedule.greedy(ios_tvm.extract_graph(mod, target))
        assert sched.max_streams > 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", CUDAGraphWarning)
            vm = relax.VirtualMachine(ios_tvm.build(mod, target, sched, database=None, cuda_graph=True), dev)
        seq = relax.VirtualMachine(ios_tvm.build(mod, target, database=None), dev)
        inputs = [data] + [rng.uniform(-1, 1, data.shape).astype(data.dtype) for _ in range(3)]
        kept = [vm["main"](tvm.runtime.tensor(arr, dev)) for arr in inputs]  # capture, then replays
        for arr, got in zip(inputs, kept):
            for g, w in zip(_tensors(got), _tensors(seq["main"](tvm.runtime.tensor(arr, dev))), strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.timing
def test_stage_timer_agrees_with_end_to_end(target, tmp_path):
    mod, data = _bound("inception_v3")
    cm = MeasuredCostModel(target, MeasureConfig(warmup=5, repeat=20, cache_dir=tmp_path, progress=False))
    sched = ios_tvm.optimize(mod, target, cost_model=cm, end_to_end=False)
    e2e = median(time_vm(ios_tvm.build(mod, target, sched), tvm.cuda(0), [data], number=50, repeat=10))
    # the stages leave out the VM's own work between kernels, so e2e is a little above the sum
    assert 0.5 * e2e <= sched.latency <= 1.5 * e2e, (sched.latency, e2e)


@pytest.mark.timing
def test_concurrent_streams_overlap(target, tmp_path):
    """Two independent branches measured alone and side by side: side by side is faster than
    the sum (the whole point), and never faster than the slower branch alone."""
    mod, _ = _bound("googlenet")
    graph = ios_tvm.extract_graph(mod, target)
    cm = MeasuredCostModel(target, MeasureConfig(warmup=5, repeat=20, cache_dir=tmp_path, progress=False))
    cm.load(graph)
    preds = graph.preds()
    pair = next((u, v) for u in range(len(graph)) for v in range(u + 1, len(graph))
                if preds[u] == preds[v] and preds[u])
    a = cm.stage_latency(graph, ((pair[0],),))
    b = cm.stage_latency(graph, ((pair[1],),))
    both = cm.stage_latency(graph, ((pair[0],), (pair[1],)))
    assert both < a + b
    assert both >= 0.8 * max(a, b)


def test_kernel_variants_on_gpu(target, tiny_branches, tmp_path):
    """Tune a two-branch model on the GPU, let select_variants try the runner-ups of the
    concurrent stage, and check the build with its choice against the sequential one."""
    from ios_tvm.driver.variants import select_variants

    mod, data = tiny_branches
    work = tmp_path / "db"
    ios_tvm.tune(mod, target, work, max_trials_per_task=4, num_trials_per_iter=4)
    graph = ios_tvm.extract_graph(mod, target)
    greedy = Schedule.greedy(graph)
    out = select_variants(mod, target, greedy, database=work, min_gain=0.0, graph=graph,
                          config=MeasureConfig(warmup=5, repeat=20, cache_dir=False, progress=False))
    assert out.meta["variants"]["stages_tried"] == 1
    want = _run(ios_tvm.build(mod, target, database=work), data)[0]
    outs = _run(ios_tvm.build(mod, target, out, database=work), data, times=5)
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
    for again in outs[1:]:
        np.testing.assert_array_equal(again, outs[0])


@pytest.mark.timing
def test_measured_search_is_never_slower_than_the_simple_schedules(target, tmp_path):
    """On the GPU a measured search ends by timing sequential, greedy and IOS end to end and keeps
    the fastest; the record says by how much IOS lost when it did."""
    mod, data = _bound("squeezenet")
    cm = MeasuredCostModel(target, MeasureConfig(warmup=3, repeat=10, cache_dir=tmp_path, progress=False))
    sched = ios_tvm.optimize(mod, target, cost_model=cm)
    e2e = sched.meta["end_to_end"]
    assert set(e2e["times_s"]) == {"sequential", "greedy", "ios"}
    assert e2e["times_s"][e2e["chosen"]] == min(e2e["times_s"].values())
    outs = _run(ios_tvm.build(mod, target, sched), data)
    np.testing.assert_allclose(outs[0], _run(ios_tvm.build(mod, target), data)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.timing
def test_stages_timed_as_cuda_graphs(target, tmp_path):
    """launch='graph' times a stage as the captured build runs it: captured once (after one plain
    run), then replayed with no host code (the stage calls run twice in all, whatever the
    repeats); a two-branch stage replayed as a graph is no slower than its kernel launches."""
    mod, _ = _bound("googlenet")
    graph = ios_tvm.extract_graph(mod, target)
    preds = graph.preds()
    pair = next((u, v) for u in range(len(graph)) for v in range(u + 1, len(graph)) if preds[u] == preds[v] and preds[u])
    stage = ((pair[0],), (pair[1],))
    cfg = dict(warmup=5, repeat=20, cache_dir=tmp_path, progress=False, cache_state="hot")
    as_graph = MeasuredCostModel(target, MeasureConfig(launch="graph", **cfg))
    as_launches = MeasuredCostModel(target, MeasureConfig(**cfg))
    as_graph.stage_latency(graph, ((0,),))  # builds and loads the model
    before = runtime.stages_run()
    g = as_graph.stage_latency(graph, stage)
    assert runtime.stages_run() - before == 2
    k = as_launches.stage_latency(graph, stage)
    assert 0 < g <= 1.2 * k, (g, k)
