"""MetaSchedule tuning end to end on the CPU (a tiny model, a few trials): the database is
written, re-used without re-tuning, applied in builds, and the tuned build computes the same."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm.compiler.databases import shipped_database
from ios_tvm.compiler.pipeline import plan_memory
from ios_tvm.cost.measure import MeasureConfig
from ios_tvm.ir.target import arch_of, tuning_target


@pytest.fixture(scope="module")
def tiny(tiny_branches):
    return tiny_branches


@pytest.fixture(scope="module")
def tuned(tiny_tuned):
    return tiny_tuned


def test_tuning_writes_a_database(tuned):
    work, report = tuned
    assert len(report.tasks) == 2 and sorted(report.tuned) == sorted(report.tasks) and not report.reused
    assert report.failed == [], "every task should keep a schedule that built and ran"
    assert (work / "database_tuning_record.json").stat().st_size > 0
    assert (work / "database_workload.json").stat().st_size > 0


def test_second_call_continues_without_repeating(tiny, tuned):
    """Tasks with ``max_trials_per_task`` schedules are left alone; a task with fewer (the concat
    has one or two possible schedules) is searched again, finds only what the database has,
    writes nothing and stops."""
    work, first = tuned
    before = (work / "database_tuning_record.json").read_text()
    again = ios_tvm.tune(tiny[0], "llvm", work, max_trials_per_task=3, num_trials_per_iter=3)
    conv = [t for t in again.tasks if t.startswith("fused_conv2d")]
    assert conv and set(conv) <= set(again.reused)
    assert set(again.tuned) <= {t for t in again.tasks if t.startswith("concatenate")}
    assert again.records_added == 0 and again.best_s == first.best_s
    assert again.seconds < 60
    assert (work / "database_tuning_record.json").read_text() == before


def _scheduled_funcs(mod):
    return {gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "tirx.is_scheduled" in f.attrs}


def test_database_is_applied_and_results_match(tiny, tuned):
    mod, data = tiny
    work, _ = tuned
    target = tuning_target("llvm")
    assert _scheduled_funcs(plan_memory(mod, target, database=work))
    assert not _scheduled_funcs(plan_memory(mod, target, database=None))

    def run(ex):
        return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()

    np.testing.assert_allclose(run(ios_tvm.build(mod, target, database=work)),
                               run(ios_tvm.build(mod, target, database=None)), rtol=1e-5, atol=1e-5)


def test_targets_and_shipped_databases():
    assert "num-cores" in tuning_target("llvm").attrs
    assert arch_of({"kind": "cuda", "arch": "sm_90"}) == "sm_90"
    assert shipped_database({"kind": "cuda", "arch": "sm_52"}) is None  # none shipped for a Maxwell GPU


def test_measured_costs_build_the_source_model(tiny, tuned, monkeypatch):
    """Regression: the measured cost model built the *lowered* module, whose kernels, lowered
    again, no longer matched their tuning records (stage costs of untuned kernels)."""
    from ios_tvm.cost.measure import MeasuredCostModel

    mod, work = tiny[0], tuned[0]
    target = tuning_target("llvm")
    graph = ios_tvm.extract_graph(mod, target)
    built = []
    cm = MeasuredCostModel(target, MeasureConfig(warmup=0, repeat=1, cache_dir=False, progress=False), database=work)
    real = cm.build_model
    monkeypatch.setattr(cm, "build_model", lambda m: built.append(m) or real(m))
    assert cm.stage_latency(graph, ((0,),)) > 0
    assert built and built[0] is graph.source is mod


@pytest.mark.timing
def test_time_budget_stops_on_time_and_a_second_call_adds(tmp_path):
    """``tune_models(..., time_budget_s=B)`` on a reduced zoo model (randwire, 23 tasks) ends
    within 10% of B (the whole call: extraction, compilation, search), leaves a database that
    loads, and a second call, with a budget twice as long (the stop holds for a longer run too),
    appends records to it.

    The stop is exact to about half a batch cycle, so small batches and a small search
    population keep a cycle to a few seconds on two cores, and the random cost model keeps
    XGBoost's training (0.1 to 10 s a batch on a busy 2-core machine) out of the joins. What a
    process pays once is paid before the clock starts, as in any process that tuned before: TVM's
    tensor intrinsics imported, the build workers started (10 to 40 s here)."""
    import importlib

    from tvm.s_tir import meta_schedule as ms

    from ios_tvm.compiler.databases import count_records, open_database
    from ios_tvm.tuning.builder import PoolBuilder, fast_tvmscript_parsing

    fast_tvmscript_parsing()
    importlib.import_module("tvm.s_tir.tensor_intrin")
    builder = PoolBuilder(timeout_sec=120)
    builder.wait_ready()

    def call(budget):
        t0 = time.monotonic()
        report = ios_tvm.tune_models(["randwire"], "llvm", tmp_path, small=True, time_budget_s=budget,
                                     num_trials_per_iter=4, builder=builder, cost_model="random",
                                     search_strategy=ms.search_strategy.EvolutionarySearch(
                                         population_size=32, init_min_unmeasured=16))
        took = time.monotonic() - t0
        print(f"budget {budget} s: {took:.1f} s, {report.records_added} records")
        assert report.stopped_by == "time" and abs(took - budget) <= 0.1 * budget, (took, report.summary())
        return report

    try:
        first = call(30)
        work = first.databases["randwire"]
        record_file = tmp_path / "generic" / "randwire" / "database_tuning_record.json"
        lines = count_records(work)
        assert lines == first.records_added > 0
        assert len(open_database(work)) == lines
        text = record_file.read_text()
        second = call(60)
        assert count_records(work) == lines + second.records_added > lines
        assert record_file.read_text().startswith(text)
        assert len(open_database(work)) == count_records(work)
    finally:
        builder.shutdown()
