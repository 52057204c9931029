"""Measured stage costs on the CPU: the stage timer, the persistent cache, bad caches."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models, runtime
from ios_tvm.cost.cache import StageCache
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel, summarize


@pytest.fixture(scope="module")
def graph():
    return ios_tvm.extract_graph(models.get("squeezenet", small=True), "llvm")


def cfg(tmp_path, **kw):
    return MeasureConfig(warmup=1, repeat=3, cache_dir=tmp_path, progress=False, **kw)


def test_measured_search_is_cached_and_reused(graph, tmp_path):
    cm = MeasuredCostModel("llvm", cfg(tmp_path))
    first = ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=cm, end_to_end=False)
    assert cm.measured > 0 and first.meta["cost_model"] == "measure"
    assert all(s.latency > 0 for s in first.stages)
    files = list(tmp_path.glob("stages-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["context"]["tvm"] == tvm.__version__ and len(data["entries"]) >= cm.measured
    again = MeasuredCostModel("llvm", cfg(tmp_path))
    second = ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=again, end_to_end=False)
    assert again.measured == 0 and not again.loaded  # nothing built, nothing timed
    assert second.as_lists() == first.as_lists()


def test_identical_stages_share_one_measurement(graph, tmp_path):
    cm = MeasuredCostModel("llvm", cfg(tmp_path))
    cm.load(graph)
    same = [i for i in range(len(graph.nodes)) for j in range(i) if graph.nodes[i].kernel == graph.nodes[j].kernel
            and graph.nodes[i].inputs == graph.nodes[j].inputs]
    assert same, "squeezenet repeats kernels"
    i = same[0]
    j = next(j for j in range(i) if graph.nodes[j].kernel == graph.nodes[i].kernel)
    assert cm.stage_key(((i,),)) == cm.stage_key(((j,),))
    assert cm.stage_key(((i,),)) != cm.stage_key(((0,),))


def test_corrupt_cache_is_reported_and_set_aside(graph, tmp_path, caplog):
    cm = MeasuredCostModel("llvm", cfg(tmp_path))
    ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=cm, end_to_end=False)
    path = next(tmp_path.glob("stages-*.json"))
    path.write_text('{"format": "ios_tvm.stage_cache", "version": 1, "entries": {"x": "oops"')
    with caplog.at_level(logging.WARNING, logger="ios_tvm"):
        again = MeasuredCostModel("llvm", cfg(tmp_path))
        ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=again, end_to_end=False)
    assert "ignoring stage cache" in caplog.text
    assert again.measured > 0
    assert list(tmp_path.glob("stages-*.json.corrupt-*"))  # the bad file is kept, not overwritten
    json.loads(path.read_text())  # and a good one written


def test_foreign_cache_content_is_refused(tmp_path, caplog):
    ctx = {"target": "llvm", "device": "cpu"}
    c = StageCache(tmp_path, ctx)
    c.put("k", [1.0])
    c.save()
    data = json.loads(c.path.read_text())
    data["context"] = {"target": "cuda"}
    c.path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="ios_tvm"):
        assert StageCache(tmp_path, ctx).get("k") is None
    assert "another target" in caplog.text


def test_stage_timer_runs_groups_through_fork_join(graph, tmp_path):
    cm = MeasuredCostModel("llvm", cfg(tmp_path))
    cm.load(graph)
    before = runtime.stages_run()
    one = cm.samples(graph, ((0,),))
    two = cm.samples(graph, ((2,), (3,)))
    assert len(one) == len(two) == 3 and min(one + two) > 0
    assert runtime.stages_run() - before == 1 + 3  # warmup + repeats of the two-group stage
    with pytest.raises(ValueError, match="groups but"):
        runtime.time_stage(1, 0, [[cm.timer.funcs[0]]], [], 0, 1)


def test_measured_schedule_builds_and_matches(graph, tmp_path):
    mod = models.get("squeezenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    sched = ios_tvm.optimize(mod, "llvm", cost_model=MeasuredCostModel("llvm", cfg(tmp_path)), end_to_end=False)
    data = models.random_input(mod)

    def run(s):
        return relax.VirtualMachine(ios_tvm.build(mod, "llvm", s), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()

    np.testing.assert_allclose(run(sched), run(None), rtol=1e-5, atol=1e-6)


def test_statistics_and_config():
    assert summarize([3, 1, 2], "median") == 2
    assert summarize([1, 2, 3, 100], "trimmed_mean") == 2.5
    with pytest.raises(ValueError, match="statistic"):
        MeasureConfig(statistic="mode")
    with pytest.raises(ValueError, match="repeat"):
        MeasureConfig(repeat=0)


def test_merged_kernels_are_measured_once(tmp_path):
    from ios_tvm.ir.merge_plan import node_merges

    mod = models.get("squeezenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    graph = ios_tvm.extract_graph(mod, "llvm")
    graph.merges = node_merges(mod, graph)
    cand = graph.merges.candidates()[0]
    cm = MeasuredCostModel("llvm", cfg(tmp_path))
    first = cm.merge_latency(graph, cand)
    assert first > 0 and cm.measured == 1
    assert cm.merge_latency(graph, cand) == first and cm.measured == 1


def test_cache_state_follows_the_model_and_the_device():
    from ios_tvm.cost.measure import resolve_cache_state

    l2 = 50 << 20
    assert resolve_cache_state("auto", l2, 95 << 20) == ("flush", 2 * l2)  # Inception-v3 on an H100
    assert resolve_cache_state("auto", l2, 5 << 20) == ("hot", 0)  # SqueezeNet stays in L2
    assert resolve_cache_state("auto", 0, 1 << 30) == ("hot", 0)  # a CPU
    assert resolve_cache_state("flush", 0, 0) == ("flush", 2 * (64 << 20))
    assert resolve_cache_state("hot", l2, 1 << 30) == ("hot", 0)
    with pytest.raises(ValueError, match="cache_state"):
        MeasureConfig(cache_state="warm")


def test_weight_bytes_counts_parameters_and_constants(graph):
    from ios_tvm.cost.measure import weight_bytes

    mod = models.get("squeezenet", small=True)
    params = models.random_params(mod)
    want = sum(a.nbytes for a in params.values())
    assert weight_bytes(graph) == want  # weights as parameters of main
    bound = ios_tvm.extract_graph(models.bind_params(mod, params), "llvm")
    assert weight_bytes(bound) == want  # the same weights as constants


def test_flushed_samples_start_cold(graph, tmp_path, monkeypatch):
    """With cache_state="flush" every timed sample runs alone, after a flush, and is cached apart
    from hot samples."""
    import ios_tvm.cost.timers as timers

    flushes = []
    real = timers.flush_buffers

    def counting(nbytes, device):
        flush = real(nbytes, device)
        return lambda: flushes.append(nbytes) or flush()

    monkeypatch.setattr(timers, "flush_buffers", counting)
    cold = MeasuredCostModel("llvm", cfg(tmp_path, cache_state="flush"))
    before = runtime.stages_run()
    assert cold.stage_latency(graph, ((2,), (3,))) > 0 and cold.cache_state == "flush"
    assert len(flushes) == 3  # one per timed sample
    assert runtime.stages_run() - before == 1 + 3  # warm-up, then the samples one by one
    hot = MeasuredCostModel("llvm", cfg(tmp_path))
    hot.stage_latency(graph, ((2,), (3,)))
    assert hot.cache_state == "hot" and len(flushes) == 3
    assert hot.cache.path != cold.cache.path  # never mixed in one cache file
