"""On an NVIDIA GPU: scheduled models equal sequential ones, repeated runs are identical (a race
check), and the stage timer agrees with end-to-end time. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models, runtime
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.profiling import median, time_vm
from ios_tvm.schedule import Schedule

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def target():
    from ios_tvm.target import local_target

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
    for sched in (ios_tvm.optimize(mod, target, graph=graph, cost_model="analytic"), Schedule.greedy(graph)):
        assert sched.max_streams > 1
        outs = _run(ios_tvm.build(mod, target, sched), data, times=5)
        np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
        for again in outs[1:]:  # streams race only if the result changes from run to run
            np.testing.assert_array_equal(again, outs[0])
    assert runtime.stages_run() > before


def test_stage_timer_agrees_with_end_to_end(target, tmp_path):
    mod, data = _bound("inception_v3")
    cm = MeasuredCostModel(target, MeasureConfig(warmup=5, repeat=20, cache_dir=tmp_path, progress=False))
    sched = ios_tvm.optimize(mod, target, cost_model=cm, end_to_end=False)
    e2e = median(time_vm(ios_tvm.build(mod, target, sched), tvm.cuda(0), [data], number=50, repeat=10))
    # the stages leave out the VM's own work between kernels, so e2e is a little above the sum
    assert 0.5 * e2e <= sched.latency <= 1.5 * e2e, (sched.latency, e2e)


def test_concurrent_streams_overlap(target, tmp_path):
    """Two independent branches measured alone and side by side: side by side is faster than
    the sum (the whole point), and never faster than the slower branch alone."""
    mod, _ = _bound("googlenet")
    graph = ios_tvm.extract_graph(mod, target)
    cm = MeasuredCostModel(target, MeasureConfig(warmup=5, repeat=20, cache_dir=tmp_path, progress=False))
    cm._setup(graph)
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
    from ios_tvm.variant_search import select_variants

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
