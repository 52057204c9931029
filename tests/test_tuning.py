"""MetaSchedule tuning end to end on the CPU (a tiny model, a few trials): the database is
written, re-used without re-tuning, applied in builds, and the tuned build computes the same."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models
from ios_tvm.compiler import plan_memory
from ios_tvm.models._builder import NetBuilder
from ios_tvm.tuning import arch_of, shipped_database, tuning_target


@pytest.fixture(scope="module")
def tiny():
    nb = NetBuilder("tiny", (1, 4, 8, 8))
    with nb.scope() as x:
        nb.output(nb.conv(nb.conv(x, 8, 3), 8, 1))
    mod = nb.module()
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    report = ios_tvm.tune(tiny[0], "llvm", work, max_trials_per_task=2, num_trials_per_iter=2)
    return work, report


def test_tuning_writes_a_database(tuned):
    work, report = tuned
    assert len(report.tasks) == 2 and sorted(report.tuned) == sorted(report.tasks) and not report.reused
    assert (work / "database_tuning_record.json").stat().st_size > 0
    assert (work / "database_workload.json").stat().st_size > 0


def test_second_call_reuses_without_tuning(tiny, tuned):
    work, _ = tuned
    before = (work / "database_tuning_record.json").read_text()
    again = ios_tvm.tune(tiny[0], "llvm", work, max_trials_per_task=2, num_trials_per_iter=2)
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
