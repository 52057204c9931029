"""The analytic cost model's formula."""

from __future__ import annotations

import pytest

from ios_tvm.cost import AnalyticCostModel, DeviceSpec, get_cost_model
from ios_tvm.ir.graph import Node, OpGraph


def _graph(elements, flops):
    nodes = [Node(i, f"v{i}", f"k{i}", "relax.call_tir", (), (((e,), "float32"),), f, 0)
             for i, (e, f) in enumerate(zip(elements, flops))]
    return OpGraph(nodes, [])


DEV = DeviceSpec(peak_flops=1e12, bandwidth=1e18, lanes=1000, launch_overhead=1e-6, join_overhead=1e-7)


def test_small_kernels_overlap_large_ones_do_not():
    cm = AnalyticCostModel(DEV)
    small = _graph([100, 100], [1e6, 1e6])     # each fills 10% of the device
    seq = cm.stage_latency(small, ((0,),)) + cm.stage_latency(small, ((1,),))
    par = cm.stage_latency(small, ((0,), (1,)))
    assert par < 0.6 * seq
    large = _graph([10**6, 10**6], [1e9, 1e9])  # each fills the device
    seq = cm.stage_latency(large, ((0,),)) + cm.stage_latency(large, ((1,),))
    par = cm.stage_latency(large, ((0,), (1,)))
    assert par >= seq - DEV.launch_overhead


def test_formula():
    cm = AnalyticCostModel(DEV)
    g = _graph([500, 1000], [1e6, 4e6])
    t0 = 1e-6 + (1e6 / 1e12) / 0.5
    t1 = 1e-6 + 4e6 / 1e12
    assert cm.stage_latency(g, ((0,),)) == pytest.approx(t0)
    assert cm.stage_latency(g, ((0, 1),)) == pytest.approx(t0 + t1)
    assert cm.stage_latency(g, ((0,), (1,))) == pytest.approx(max(t0, t1, 1e-6 + 5e-6) + 1e-7)


def test_target_specs_and_names():
    cpu = DeviceSpec.for_target({"kind": "llvm", "num-cores": 4})
    assert cpu.name == "cpu-4core" and cpu.lanes == 1 and not cpu.concurrent  # untuned kernels: one thread
    assert DeviceSpec.for_target({"kind": "cuda", "arch": "sm_90"}).name == "H200 SXM (sm_90)"
    assert isinstance(get_cost_model(None, "llvm"), AnalyticCostModel)
    with pytest.raises(ValueError, match="unknown cost model"):
        get_cost_model("magic", "llvm")
    with pytest.raises(RuntimeError, match="not present|analytic"):
        if not __import__("tvm").cuda(0).exist:
            get_cost_model("measure", {"kind": "cuda", "arch": "sm_90"})
        else:
            raise RuntimeError("not present (skipped: a GPU is here)")
    with pytest.raises(TypeError):
        get_cost_model(42, "llvm")


def test_cost_models_are_found_by_name(monkeypatch):
    from ios_tvm.cost import CostModel, cost_model_names, register_cost_model
    from ios_tvm.cost import model as registry

    made = []

    class Flat(CostModel):
        name = "flat"

        def stage_latency(self, graph, groups):
            return 1.0

    def factory(target, *, database, cuda_graph):
        made.append((target.kind.name, database, cuda_graph))
        return Flat()

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_cost_model("flat", factory)
    assert {"analytic", "measure", "flat"} <= set(cost_model_names())
    assert isinstance(get_cost_model("flat", "llvm", database=None, cuda_graph=True), Flat)
    assert made == [("llvm", None, True)]


def test_plain_objects_become_cost_models():
    from ios_tvm.cost import CostModel, as_cost_model

    class Plain:
        name = "plain"

        def stage_latency(self, graph, groups):
            return 2.0

    wrapped = as_cost_model(Plain(), None)
    assert isinstance(wrapped, CostModel) and wrapped.name == "plain" and not wrapped.supports_merge
    assert wrapped.stage_latency(None, ((0,),)) == 2.0
    wrapped.prepare(None, iter([((0,),)]))  # no prepare of its own: nothing happens
    with pytest.raises(NotImplementedError, match="merged kernels"):
        wrapped.merge_latency(None, (0, 1))


def test_graph_launches_need_a_cuda_target_here():
    from ios_tvm import runtime
    from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
    from ios_tvm.cost.remote import RPCConfig
    from ios_tvm.errors import CUDAGraphError

    with pytest.raises(ValueError, match="launch"):
        MeasureConfig(launch="eager")
    with pytest.raises(CUDAGraphError, match="CUDA target"):
        MeasuredCostModel("llvm", MeasureConfig(launch="graph"))
    with pytest.raises(NotImplementedError, match="RPC"):
        MeasuredCostModel({"kind": "cuda", "arch": "sm_90"}, MeasureConfig(launch="graph", rpc=RPCConfig("h", 1, "k")))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        runtime.time_stage_graph(1, 0, [[runtime.time_stage]], [[[]]], 0, 1)
