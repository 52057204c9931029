"""Shared fixtures. Tests run on CPU; GPU tests are marked ``gpu`` and skip without a GPU."""

from __future__ import annotations

import pytest


def _has_gpu() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with its driver (tvm.cuda(0).exist is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_graphs():
    """Graphs of the reduced zoo models, lowered for llvm (built once per session)."""
    from ios_tvm import models
    from ios_tvm.ir.graph import extract_graph

    return {name: extract_graph(models.get(name, small=True), "llvm") for name in models.names()}


@pytest.fixture(scope="session")
def tiny_branches():
    """Two identical 3x3 convs side by side (one kernel, two call sites) and a concat: a tiny
    model with a concurrent stage, weights bound, and its input."""
    from ios_tvm import models
    from ios_tvm.models import NetBuilder

    nb = NetBuilder("tiny_branches", (1, 4, 8, 8))
    with nb.scope() as x:
        nb.output(nb.concat([nb.conv(x, 8, 3), nb.conv(x, 8, 3)]))
    mod = nb.module()
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


@pytest.fixture(scope="session")
def tiny_tuned(tiny_branches, tmp_path_factory, worker_id):
    """``tiny_branches`` tuned for llvm with a few MetaSchedule trials per task (about a minute
    on two cores): ``(work_dir, TuneReport)``. Tuned once per run: pytest-xdist's workers share
    it (the first to need it tunes under a file lock, the others load its database and report)."""
    import dataclasses
    import fcntl
    import pickle
    import shutil

    import ios_tvm
    from ios_tvm.compiler.databases import open_database

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the workers' temporary folders share this parent
        root = root.parent
    work, saved = root / "tiny_tuned", root / "tiny_tuned.pkl"
    with open(root / "tiny_tuned.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if saved.exists():
            report = dataclasses.replace(pickle.loads(saved.read_bytes()), database=open_database(work))
        else:
            shutil.rmtree(work, ignore_errors=True)  # a run cut short before it saved its report
            report = ios_tvm.tune(tiny_branches[0], "llvm", work, max_trials_per_task=3, num_trials_per_iter=3)
            saved.write_bytes(pickle.dumps(dataclasses.replace(report, database=None)))
    return work, report


@pytest.fixture(scope="session")
def free_merges():
    """The analytic cost model of a 2-core CPU, except that a merged kernel costs what its slowest
    member costs alone (it is never slower than running its kernels side by side), so the search
    chooses merges. The analytic model itself prices a 1x1 convolution zero-padded to 3x3 at nine
    times its work and seldom merges SqueezeNet's expand layers."""
    from ios_tvm.cost.analytic import AnalyticCostModel

    class FreeMerges(AnalyticCostModel):
        name = "analytic-free-merges"

        def merge_latency(self, graph, nodes):
            return max(self.stage_latency(graph, ((v,),)) for v in nodes)

    return FreeMerges.for_target({"kind": "llvm", "num-cores": 2})
