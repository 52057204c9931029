"""Vendor kernels beside the other features: a memory budget plans every schedule with the
kernels it runs (a vendor call plans a workspace), the end-to-end check judges its baselines with
them, and the CLI's sequential reference runs them too. CPU only: sm_90 builds and plans."""

from __future__ import annotations

import argparse

import pytest

import ios_tvm
from ios_tvm import models
from ios_tvm.compiler.pipeline import planned_memory
from ios_tvm.core.schedule import Schedule
from ios_tvm.driver.guard import keep_fastest
from ios_tvm.ir.graph import extract_graph
from ios_tvm.ir.target import as_target

SM90 = {"kind": "cuda", "arch": "sm_90"}


@pytest.fixture(scope="module")
def squeezenet():
    mod = models.get("squeezenet", small=True)
    return mod, extract_graph(mod, SM90)


def _with_record(s: Schedule, record: dict) -> Schedule:
    s.meta["kernels"] = record
    return s


@pytest.mark.parametrize("budget", ["1.0x", "1.25x"])
def test_a_budget_with_vendor_kernels_is_met_by_the_plan_of_what_runs(squeezenet, budget):
    """The sequential schedule that sets a relative budget, and the schedule returned, are
    planned with the vendor calls they run (each plans a workspace, which TVM-kernel plans and
    the replayed planner know nothing of): the returned one fits by TVM's own plan."""
    mod, graph = squeezenet
    sched = ios_tvm.optimize(mod, SM90, graph=graph, cost_model="analytic", kernels="vendor",
                             search=ios_tvm.SearchConfig(memory_budget=budget))
    record, memory = sched.meta["kernels"], sched.meta["memory"]
    assert record["vendor"] and memory["replayed"] is False
    seq_vendor = planned_memory(mod, SM90, _with_record(Schedule.sequential(graph), record))
    assert memory["sequential_bytes"] == seq_vendor > planned_memory(mod, SM90, Schedule.sequential(graph))
    assert memory["budget_bytes"] == int(float(budget[:-1]) * seq_vendor)
    real = planned_memory(mod, SM90, sched)
    assert real == memory["planned_bytes"] <= memory["budget_bytes"]


def test_end_to_end_baselines_are_judged_with_the_kernels_they_run(squeezenet):
    """``fits`` sees each baseline with the schedule's kernel record, as it will be built."""
    mod, graph = squeezenet
    sched = ios_tvm.optimize(mod, SM90, graph=graph, cost_model="analytic", kernels="vendor")
    seen = {}

    def fits(label, s):
        seen[label] = s.meta.get("kernels")
        return True

    def time_of(label, s):
        return [1e-3 if label == "ios" else 2e-3] * 3

    out = keep_fastest(sched, graph, ios_tvm.cost.get_cost_model("analytic", SM90), 8, time_of, fits=fits)
    assert seen == {"sequential": sched.meta["kernels"], "greedy": sched.meta["kernels"]}
    assert out.meta["end_to_end"]["chosen"] == "ios"


def test_demo_builds_its_sequential_reference_with_the_searched_kernels(squeezenet, monkeypatch):
    """``demo --kernels auto`` (and vendor): the sequential model it checks against runs the
    kernels the search chose, so it is built from a sequential schedule carrying that record
    (``build(kernels='auto')`` without a schedule is refused)."""
    from ios_tvm.cli import steps
    from ios_tvm.ir import target as target_mod

    mod, graph = squeezenet
    sched = ios_tvm.optimize(mod, SM90, graph=graph, cost_model="analytic", kernels="vendor")
    built = []

    class Present:
        exist = True

    def build_model(mod_, target, s, args, label, num_kernels=None):
        built.append((label, s))
        raise StopIteration  # nothing can run here: what was asked for is the point

    monkeypatch.setattr(target_mod, "device_of", lambda target: Present())
    monkeypatch.setattr(steps, "target_of", lambda args: as_target(SM90))
    monkeypatch.setattr(steps, "build_model", build_model)
    with pytest.raises(StopIteration):
        steps.measure_end_to_end(sched, mod, argparse.Namespace(kernels="auto", repeat=1))
    (label, seq), = built
    assert label == "sequential" and seq.max_streams == 1 and len(seq.stages) == len(graph.nodes)
    assert seq.meta["kernels"] == sched.meta["kernels"]


def test_memory_sweep_refuses_vendor_kernels(capfd):
    from ios_tvm.cli import main

    rc = main(["memory", "squeezenet", "--small", "--target", '{"kind": "cuda", "arch": "sm_90"}',
               "--kernels", "vendor"])
    err = capfd.readouterr().err
    assert rc == 2 and "sweeps TVM's kernels only" in err and "--memory-budget" in err
    assert "Traceback" not in err and "lowering" not in err  # refused before any work
