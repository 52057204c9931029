"""ios_tvm.optimize on the zoo: valid schedules within the limits, baselines, settings."""

from __future__ import annotations

import pytest

import ios_tvm
from ios_tvm import SearchConfig, models
from ios_tvm.core.schedule import Schedule
from ios_tvm.cost import AnalyticCostModel
from ios_tvm.errors import ScheduleMismatchError

CUDA = {"kind": "cuda", "arch": "sm_90"}


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("r, s", [(3, 8), (1, 1), (2, 3)])
def test_small_zoo_schedules_validate(name, r, s, small_graphs):
    graph = small_graphs[name]
    sched = ios_tvm.optimize(graph.source, CUDA, graph=graph, max_group_size=r, max_num_groups=s)
    sched.validate(graph, r, s)
    assert all(len(st.groups) <= s and all(len(g) <= r for g in st.groups) for st in sched.stages)
    # the sequential schedule is in the search space: IOS is never predicted slower
    assert sched.latency <= sched.meta["baselines_s"]["sequential"] * (1 + 1e-9)
    if (r, s) == (1, 1):
        assert len(sched.stages) == len(graph.nodes)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "randwire", "squeezenet"])
def test_unsplit_ios_beats_greedy_and_sequential(name, small_graphs):
    # (NASNet's unsplit cells are too wide for a quick exact search.)
    graph = small_graphs[name]
    sched = ios_tvm.optimize(graph.source, CUDA, graph=graph, search=SearchConfig(3, 8, None))
    base = sched.meta["baselines_s"]
    assert sched.latency <= base["sequential"] * (1 + 1e-9)
    assert sched.latency <= base["greedy"] * (1 + 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_full_size_zoo_schedules_validate(name):
    mod = models.get(name)
    # a mixture-of-experts layer fans 19 matmuls out of one input: blocks of 16 independent kernels
    # are the DP's worst case (minutes per layer); 10 takes seconds for the 24 layers
    sched = ios_tvm.optimize(mod, CUDA, search=SearchConfig(max_block_size=10) if name == "moe" else None)
    graph = ios_tvm.extract_graph(mod, CUDA)
    sched.validate(graph, 3, 8)
    assert sched.meta["stats"]["states"] > 0
    assert sched.latency < sched.meta["baselines_s"]["sequential"]  # small-batch GPU: concurrency pays


def test_schedule_for_other_model_is_refused(small_graphs):
    sched = ios_tvm.optimize(small_graphs["squeezenet"].source, CUDA, graph=small_graphs["squeezenet"])
    with pytest.raises(ScheduleMismatchError, match="made for another model"):
        sched.validate(small_graphs["googlenet"])
    with pytest.raises(ScheduleMismatchError, match="made for another model"):
        Schedule.from_json(sched.to_json(), small_graphs["googlenet"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_group_size=0), "max_group_size"),
    (dict(max_num_groups=0), "max_num_groups"),
    (dict(max_num_groups=-3), "max_num_groups"),
])
def test_bad_limits(kwargs, match, small_graphs):
    with pytest.raises(ValueError, match=match):
        ios_tvm.optimize(small_graphs["squeezenet"].source, CUDA, graph=small_graphs["squeezenet"], **kwargs)


def test_search_config_validates():
    with pytest.raises(ValueError, match="max_block_size"):
        SearchConfig(max_block_size=0)
    with pytest.raises(ValueError, match="max_group_size"):
        SearchConfig(max_group_size=True)


def test_custom_cost_model_and_prepare(small_graphs):
    graph = small_graphs["squeezenet"]

    class Counting:
        name = "counting"

        def __init__(self):
            self.prepared = None
            self.asked = set()

        def prepare(self, graph, stages):
            self.prepared = set(stages)

        def stage_latency(self, graph, groups):
            self.asked.add(groups)
            return 1.0  # every stage costs the same: fewest stages wins

    cm = Counting()
    sched = ios_tvm.optimize(graph.source, CUDA, graph=graph, cost_model=cm)
    assert cm.prepared and cm.asked <= cm.prepared
    assert sched.meta["cost_model"] == "counting"
    seq = ios_tvm.optimize(graph.source, CUDA, graph=graph, cost_model=AnalyticCostModel.for_target(CUDA))
    assert len(sched.stages) <= len(seq.stages)


def test_cpu_target_prefers_few_streams(small_graphs):
    """On a CPU the runtime runs a stage's groups one after another (plus a join), so the
    analytic model sees no gain in streams: the schedule has no stage of several groups, and
    greedy (every ready kernel on a stream of its own) is predicted slower than sequential."""
    graph = small_graphs["inception_v3"]
    sched = ios_tvm.optimize(graph.source, {"kind": "llvm", "num-cores": 2}, graph=graph)
    assert sched.max_streams == 1
    base = sched.meta["baselines_s"]
    assert sched.latency <= base["sequential"] * (1 + 1e-9) < base["greedy"]


def test_search_settings_are_given_once(small_graphs):
    """``search=`` and the flat ``max_group_size`` / ``max_num_groups`` together: one of them would
    be ignored, so it is an error that says how to write it."""
    from ios_tvm.errors import InvalidArgumentError

    graph = small_graphs["squeezenet"]
    with pytest.raises(InvalidArgumentError, match=r"max_group_size as keywords or in search=SearchConfig\(\.\.\.\), "
                                                   r"not both \(e\.g\. search=SearchConfig\(max_group_size=2, "
                                                   r"max_num_groups=8, strategy='concurrent'\)\)"):
        ios_tvm.optimize(graph.source, CUDA, graph=graph, max_group_size=2, search=SearchConfig(strategy="concurrent"))
    flat = ios_tvm.optimize(graph.source, CUDA, graph=graph, max_group_size=2, max_num_groups=3)
    assert flat.meta["search"]["max_group_size"] == 2 and flat.meta["search"]["max_num_groups"] == 3


def test_the_cost_package_is_reachable_after_import_ios_tvm():
    import subprocess
    import sys

    code = "import ios_tvm; print(ios_tvm.cost.cost_model_names(), ios_tvm.transform.LowerSchedule.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["['analytic',", "'measure']", "LowerSchedule"], out.stderr


def test_what_a_cost_model_can_do_decides_not_its_name(small_graphs):
    """A custom model that happens to be called "measure" is no measured model (no end-to-end check,
    no record of how it timed); one that says it measured on this machine gets its measurement
    recorded and is trusted with the device by default."""
    from ios_tvm.cost import CostModel

    graph = small_graphs["squeezenet"]

    class NamedLikeMeasure(CostModel):
        name = "measure"

        def stage_latency(self, graph, groups):
            return float(len(groups))

    sched = ios_tvm.optimize(graph.source, CUDA, graph=graph, cost_model=NamedLikeMeasure())
    assert "measure" not in sched.meta and "end_to_end" not in sched.meta
    assert sched.meta["prediction"]["known_error"] == "unknown (a custom cost model)"

    class Timed(NamedLikeMeasure):
        name = "timed"
        measures_here = True

        def measurement(self):
            return {"cache_state": "hot", "launch": "kernels", "warmup": 1, "repeat": 2}

    sched = ios_tvm.optimize(graph.source, CUDA, graph=graph, cost_model=Timed(), end_to_end=False)
    assert sched.meta["measure"] == Timed().measurement() and "end_to_end" not in sched.meta
