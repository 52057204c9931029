"""The latency / memory trade-off of a model: :func:`memory_sweep`, the search under a few memory
budgets (:mod:`ios_tvm.driver.budget`), and what TVM plans for each result. The CLI's form is
``ios-tvm memory MODEL``; ``benchmarks/memory_sweep.py`` makes the committed table."""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..compiler.pipeline import planned_memory
from ..core.memory import schedule_peak
from ..core.schedule import Schedule
from ..cost import get_cost_model
from ..ir.activations import output_bytes, output_nodes
from ..ir.graph import extract_graph
from ..ir.merge_plan import node_merges
from ..ir.target import as_target
from .budget import DEFAULT_SWEEP, MemoryBudget, fit
from .optimize import GraphSearch, SearchConfig


def memory_sweep(mod: Any, target: Any, budgets: Sequence[int | float | str | None] = DEFAULT_SWEEP, *,
                 search: Any = None, cost_model: Any = "analytic", database: Any = "auto",
                 cuda_graph: bool = False, graph: Any = None) -> list[dict[str, Any]]:
    """The latency / memory trade-off of ``mod``: the search under each budget (``None``:
    unbounded), one graph, one search and one sequential plan for all of them.

    Returns
    -------
    list of dict
        Per budget, in order: ``budget`` (as given, ``None`` unbounded), ``budget_bytes``,
        ``latency_s`` (predicted by ``cost_model``), ``planned_bytes`` (TVM's plan of the
        build), ``sequential_bytes``, ``model_peak_bytes``, ``chosen`` (how the schedule was
        found), ``search_s`` and ``time_s``, and ``cost_model``.
    """
    tgt = as_target(target)
    config = search or SearchConfig()
    if graph is None:
        graph = extract_graph(mod, tgt)
    if config.strategy != "concurrent" and graph.merges is None:
        graph.merges = node_merges(mod, graph)
    model = get_cost_model(cost_model, tgt, database, cuda_graph)
    searcher = GraphSearch(graph, model, config)
    planned: dict[tuple, int] = {}

    def plan(s: Schedule | None) -> int:
        key = () if s is None else tuple((st.kind, tuple(map(tuple, st.groups))) for st in s.stages)
        if key not in planned:
            planned[key] = planned_memory(mod, tgt, s, database=database, cuda_graph=cuda_graph)
        return planned[key]

    def make(found: tuple) -> Schedule:
        stages, latencies, _, _, kinds = found
        return Schedule.from_stages(graph, stages, latencies, {"cost_model": model.name}, kinds)

    sizes, outputs = output_bytes(graph), output_nodes(graph)
    points = []
    for b in budgets:
        t = time.perf_counter()
        if b is None:
            sched = make(searcher.solve())
            search_s = round(time.perf_counter() - t, 3)
            meta = {"budget_bytes": None, "planned_bytes": plan(sched), "sequential_bytes": plan(None),
                    "chosen": "unbounded", "search_s": search_s,
                    "model_peak_bytes": schedule_peak(len(graph.nodes), graph.edges, sizes, outputs,
                                                      [[list(g) for g in st.groups] for st in sched.stages],
                                                      [st.kind for st in sched.stages])[0]}
        else:
            sched, meta = fit(searcher, MemoryBudget.parse(b), plan, make)
        points.append({"budget": None if b is None else str(MemoryBudget.parse(b)), "budget_bytes": meta["budget_bytes"],
                       "latency_s": sched.latency, "planned_bytes": meta["planned_bytes"],
                       "sequential_bytes": meta["sequential_bytes"], "model_peak_bytes": meta["model_peak_bytes"],
                       "chosen": meta["chosen"], "search_s": meta["search_s"],
                       "time_s": round(time.perf_counter() - t, 3), "cost_model": model.name})
    return points
