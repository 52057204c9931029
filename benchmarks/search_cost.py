"""Search cost of the IOS dynamic program on the full-size zoo models and an imported ONNX model
(analytic costs), and what measuring their stages would cost.

    python benchmarks/search_cost.py [--models nasnet_a_large ...] [--onnx googlenet] [-r 3] [-s 8]
                                     [--max-block-size 16] [--reference] [--json out.json]

Prints, per model: kernels, blocks, DP states, transitions (state x ending pairs), candidate
stages (distinct node sets), distinct stages by content (the measured cost model's cache key:
kernel, shapes and dtypes per group; what a GPU would have to time), the predicted GPU time to
time those (analytic latency x (warm-up + repeat) runs + overhead per stage, as
``MeasuredCostModel.estimate_seconds``), and the wall time of graph extraction and of the search.
The search is also timed, from scratch, under a memory budget that binds (halfway between the
least peak of live tensors any schedule reaches and the unbounded schedule's, in the search's
memory model, ``ios_tvm.core.memory``). ``--reference`` also runs the direct search the fast one replaced (``ios_tvm.core.reference``)
on the same graph, right after it, and checks that both return the same stages, latencies and
statistics. Each row records the machine's load average (``os.getloadavg``) around its search:
the machine is shared. The original IOS code's counts at r=3, s=8 (from its authors' runs,
quoted in our issue tracker) are shown for reference; its graphs are not ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import tvm

import ios_tvm
from ios_tvm import models
from ios_tvm.core.memory import schedule_peak
from ios_tvm.core.reference import reference_dynamic_program
from ios_tvm.cost import AnalyticCostModel
from ios_tvm.cost.measure import MeasureConfig, distinct_stages, kernel_keys, measure_seconds
from ios_tvm.driver.optimize import GraphSearch, SearchConfig, search_graph
from ios_tvm.ir.activations import output_bytes, output_nodes

ORIGINAL = {  # states / stages counted by the original IOS code at r=3, s=8
    "squeezenet": (78, 230), "inception_v3": (1206, 5479), "randwire": (14734, 212895),
    "nasnet_a_large": (42966, 240704),
}
ONNX = ("googlenet", "squeezenet")  # tests/onnx_models.py: the ONNX zoo's inception_v1 and squeezenet1.0


def onnx_module(name: str, image_size: int = 224) -> tvm.IRModule:
    """The ONNX zoo model ``name`` as written by ``tests/onnx_models.py``, imported by TVM."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import onnx_models

    build = onnx_models.inception_v1 if name == "googlenet" else onnx_models.squeezenet1_0
    return from_onnx(onnx.load_from_string(build(image_size)), shape_dict={"x": [1, 3, image_size, image_size]},
                     keep_params_in_input=False)


class Reference:
    """``search_graph`` with the direct dynamic program in place of the fast one."""

    def __enter__(self) -> "Reference":
        self.module = sys.modules["ios_tvm.driver.optimize"]
        self.fast = self.module.dynamic_program
        self.module.dynamic_program = (lambda dag, lat, r, s, merges=(), merge_lat=None, **_:
                                       reference_dynamic_program(dag, lat, r, s, merges, merge_lat))
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.dynamic_program = self.fast


def measured_plan(graph: ios_tvm.OpGraph, config: SearchConfig, cost: AnalyticCostModel) -> tuple[int, float]:
    """``(distinct stages by content, predicted seconds to time them on the target's GPU)``."""
    from ios_tvm.core import blocks as blocks_mod
    from ios_tvm.core.dag import Dag
    from ios_tvm.core.plan import PlanCache
    from ios_tvm.core.search import candidate_stages

    plans = PlanCache()
    stages = []
    for block in blocks_mod.partition(len(graph.nodes), graph.edges, config.max_block_size):
        n, edges = blocks_mod.sub_dag(block, graph.edges)
        for groups in candidate_stages(Dag.from_edges(n, edges), config.max_group_size, config.max_num_groups, plans):
            stages.append(tuple(tuple(block[i] for i in g) for g in groups))
    distinct = distinct_stages(kernel_keys(graph), stages)
    runs = MeasureConfig().warmup + MeasureConfig().repeat
    return len(distinct), measure_seconds((cost.stage_latency(graph, g) for g in distinct.values()), runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=models.names())
    ap.add_argument("--onnx", nargs="*", default=["googlenet"], choices=ONNX,
                    help="ONNX zoo models (tests/onnx_models.py, 224x224) to add")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-s", type=int, default=8)
    ap.add_argument("--max-block-size", type=int, default=16)
    ap.add_argument("--strategy", default="concurrent", choices=("concurrent", "merge", "both"))
    ap.add_argument("--target", default='{"kind": "cuda", "arch": "sm_90"}')
    ap.add_argument("--reference", action="store_true", help="also run the direct search and compare")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    target = json.loads(args.target) if args.target.startswith("{") else args.target
    config = SearchConfig(args.r, args.s, args.max_block_size, strategy=args.strategy)
    cost = AnalyticCostModel.for_target(target)
    rows = []
    print(f"r={args.r} s={args.s} max_block_size={args.max_block_size} strategy={args.strategy} cost=analytic "
          f"target={target}")
    print(f"{'model':18}{'kernels':>8}{'blocks':>7}{'states':>9}{'transitions':>13}{'stages':>10}{'distinct':>10}"
          f"{'measure':>9}{'search s':>9}{'budget s':>9}{'direct s':>9}  load   original IOS states/stages")
    jobs = [(name, lambda name=name: models.get(name)) for name in args.models]
    jobs += [(f"onnx_{name}", lambda name=name: onnx_module(name)) for name in args.onnx]
    for name, make in jobs:
        mod = make()
        if args.strategy != "concurrent":
            mod = models.bind_params(mod, models.random_params(mod)) if not name.startswith("onnx_") else mod
        t0 = time.perf_counter()
        graph = ios_tvm.extract_graph(mod, target)
        if args.strategy != "concurrent":
            from ios_tvm.ir.merge_plan import node_merges

            graph.merges = node_merges(mod, graph)
        t1 = time.perf_counter()
        load = os.getloadavg()[0]
        t2 = time.perf_counter()
        stages, lats, stats, nblocks, kinds = search_graph(graph, cost, config)
        search_s = time.perf_counter() - t2
        row = dict(model=name, kernels=len(graph.nodes), blocks=nblocks, states=stats.states,
                   transitions=stats.transitions, stages=stats.stages, graph_s=round(t1 - t0, 3),
                   search_s=round(search_s, 3), predicted_ms=round(sum(lats) * 1e3, 4))
        if args.reference:
            with Reference():
                t3 = time.perf_counter()
                want = search_graph(graph, cost, config)
                row["reference_search_s"] = round(time.perf_counter() - t3, 3)
            row["identical"] = want == (stages, lats, stats, nblocks, kinds)
        # the same search under a memory budget that binds (in the search's model: halfway between the
        # least peak any schedule reaches and the unbounded schedule's), from scratch like the first
        probe = GraphSearch(graph, cost, config)
        top = schedule_peak(len(graph.nodes), graph.edges, output_bytes(graph), output_nodes(graph), stages, kinds)[0]
        budget = (probe.least_budget() + top) // 2
        t4 = time.perf_counter()
        budgeted = GraphSearch(graph, cost, config).solve(budget)
        row["budgeted_search_s"] = round(time.perf_counter() - t4, 3)
        row["budgeted_predicted_ms"] = round(sum(budgeted[1]) * 1e3, 4)
        row["load_avg_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        row["distinct_stages"], estimate = measured_plan(graph, config, cost)
        row["measure_estimate_s"] = round(estimate, 1)
        orig = ORIGINAL.get(name)
        row["original_states"], row["original_stages"] = orig if orig else (None, None)
        rows.append(row)
        ref = f"{row['reference_search_s']:>9.2f}" if args.reference else f"{'-':>9}"
        same = "" if not args.reference else ("  identical" if row["identical"] else "  DIFFERENT")
        o = f"{orig[0]:,} / {orig[1]:,}" if orig else "-"
        print(f"{name:18}{row['kernels']:>8}{nblocks:>7}{stats.states:>9,}{stats.transitions:>13,}"
              f"{stats.stages:>10,}{row['distinct_stages']:>10,}{estimate:>8.0f}s{search_s:>9.2f}"
              f"{row['budgeted_search_s']:>9.2f}{ref}"
              f"  {row['load_avg_1min'][0]:.1f}   {o}{same}", flush=True)
    if args.json:
        env = dict(python=platform.python_version(), tvm=tvm.__version__, ios_tvm=ios_tvm.__version__,
                   machine=platform.machine(), cpus=os.cpu_count(), processor=platform.processor(),
                   date=time.strftime("%Y-%m-%d"))
        with open(args.json, "w") as f:
            json.dump(dict(config=vars(args), environment=env, rows=rows), f, indent=1)
    if args.reference and not all(r["identical"] for r in rows):
        raise SystemExit("the fast search and the direct one disagree")


if __name__ == "__main__":
    main()
