"""MetaSchedule tuning end to end on the CPU (a tiny model, a few trials): the database is
written, re-used without re-tuning, applied in builds, and the tuned build computes the same."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm.compiler import plan_memory
from ios_tvm.cost.measure import MeasureConfig
from ios_tvm.target import arch_of, tuning_target
from ios_tvm.tuning import shipped_database


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


def test_second_call_reuses_without_tuning(tiny, tuned):
    work, _ = tuned
    before = (work / "database_tuning_record.json").read_text()
    again = ios_tvm.tune(tiny[0], "llvm", work, max_trials_per_task=3, num_trials_per_iter=3)
    assert again.tuned == [] and sorted(again.reused) == sorted(again.tasks)
    assert again.seconds < 30
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
    assert shipped_database({"kind": "cuda", "arch": "sm_1"}) is None


def test_measured_costs_build_the_source_model(tiny, tuned, monkeypatch):
    """Regression: the measured cost model built the *lowered* module, whose kernels, lowered
    again, no longer matched their tuning records (stage costs of untuned kernels)."""
    import ios_tvm.compiler as compiler
    from ios_tvm.cost.measure import MeasuredCostModel

    mod, work = tiny[0], tuned[0]
    target = tuning_target("llvm")
    graph = ios_tvm.extract_graph(mod, target)
    built = []
    real = compiler.build
    monkeypatch.setattr(compiler, "build", lambda m, *a, **k: built.append(m) or real(m, *a, **k))
    cm = MeasuredCostModel(target, MeasureConfig(warmup=0, repeat=1, cache_dir=False, progress=False), database=work)
    assert cm.stage_latency(graph, ((0,),)) > 0
    assert built and built[0] is graph.source is mod
