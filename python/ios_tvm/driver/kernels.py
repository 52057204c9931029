"""TVM's kernels or the vendor's, per call: what ``optimize(kernels=...)`` decides before the
search, and records in the schedule (``schedule.meta["kernels"]``), which builds then follow.

* ``"tvm"``: TVM's kernels (tuned where a database has them), nothing else;
* ``"vendor"``: every node computing a vendor unit (:mod:`ios_tvm.ir.vendor`) calls cuDNN or
  cuBLASLt;
* ``"auto"``: each such node runs whichever of the two its cost model says is faster alone
  (measured on the GPU with ``cost_model="measure"``: both kernels timed on the same tensors, in
  the conditions of the search's stages), and the search then schedules that mix; the times are
  recorded (``meta["kernels"]["alone_s"]``: node -> ``[tvm, vendor]`` seconds). Then, inside the
  schedule, each concurrent stage is re-costed with its nodes flipped between the two where that
  wins by more than 3% beside the stage's other groups (:func:`refine_in_stages`;
  ``meta["kernels"]["refined"]``).

Either way the search costs every stage with the kernels the build will run
(:func:`ios_tvm.cost.vendor.with_vendor`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import tvm

from ..core.descent import refine_stage
from ..core.schedule import Schedule, Stage
from ..cost.model import CostModel
from ..cost.vendor import with_vendor
from ..ir.graph import OpGraph
from ..ir.vendor import VendorSite, check_kernels, check_vendor_target, plan_sites

logger = logging.getLogger("ios_tvm")


def choose_alone(graph: OpGraph, sites: Mapping[int, VendorSite], model: CostModel, tf32: bool = False,
                 min_gain: float = 0.0) -> tuple[set[int], dict[str, list[float]]]:
    """The nodes of ``sites`` whose vendor kernel ``model`` costs below TVM's kernel alone (by more
    than ``min_gain``, a fraction), and both costs per node (``{str(node): [tvm_s, vendor_s]}``)."""
    vendor_model = with_vendor(model, sites, tf32)
    if vendor_model is model:
        return set(), {}
    singles = [((v,),) for v in sorted(sites)]
    model.prepare(graph, iter(singles))
    vendor_model.prepare(graph, iter(singles))
    chosen: set[int] = set()
    times: dict[str, list[float]] = {}
    for (group,) in singles:
        v = group[0]
        tvm_s = model.stage_latency(graph, ((v,),))
        vendor_s = vendor_model.stage_latency(graph, ((v,),))
        times[str(v)] = [tvm_s, vendor_s]
        if vendor_s < tvm_s * (1.0 - min_gain):
            chosen.add(v)
    return chosen, times


def plan_kernels(mod: tvm.IRModule, graph: OpGraph, target: Any, model: CostModel, kernels: str,
                 tf32: bool = False) -> tuple[CostModel, dict[str, Any]]:
    """The cost model the search uses for ``kernels`` (``"tvm"``, ``"vendor"`` or ``"auto"``) and
    the record for ``schedule.meta["kernels"]``: ``{"mode", "tf32", "vendor": [node ids],
    "eligible": count}`` (``"auto"``: also ``"alone_s"``).

    Raises
    ------
    InvalidArgumentError
        An unknown ``kernels``.
    TargetError
        Vendor kernels for a target that is not CUDA.
    MissingDependencyError
        A measured cost model on a GPU machine where cuDNN / cuBLASLt are missing.
    """
    mode = check_kernels(kernels)
    record: dict[str, Any] = {"mode": mode, "tf32": bool(tf32), "vendor": []}
    if mode == "tvm":
        return model, record
    tgt = check_vendor_target(target, mode)
    sites = plan_sites(mod, graph, tgt)
    record["eligible"] = len(sites)
    if not sites:
        logger.warning("ios_tvm: no kernel of this model computes a convolution or matmul cuDNN / cuBLASLt can run; "
                       "kernels=%r changes nothing", mode)
        return model, record
    if mode == "vendor":
        chosen = set(sites)
    else:
        chosen, times = choose_alone(graph, sites, model, tf32)
        record["alone_s"] = times
        logger.info("ios_tvm: kernels='auto': the vendor kernel is faster alone at %d of %d nodes", len(chosen),
                    len(sites))
    record["vendor"] = sorted(chosen)
    return (with_vendor(model, {v: sites[v] for v in chosen}, tf32) if chosen else model), record


def refine_in_stages(mod: tvm.IRModule, graph: OpGraph, target: Any, schedule: Schedule, model: CostModel, *,
                     min_gain: float = 0.03, max_moves: int = 4) -> Schedule:
    """``kernels="auto"`` inside the schedule: re-cost each concurrent stage with its vendor-capable
    nodes flipped between TVM's kernel and the vendor's (the steepest descent of
    :func:`ios_tvm.core.descent.refine_stage`, each stage with its own groups, so a kernel that
    is faster alone but slows its neighbours down is traded), and keep the flips that win.

    ``model`` is the search's cost model without vendor kernels (the choice is applied per
    evaluation; a cost model that knows no vendor kernels leaves the schedule as it is). Returns the schedule with the new choice in ``meta["kernels"]["vendor"]``, what
    was tried in ``meta["kernels"]["refined"]``, and the changed stages' latencies.
    """
    rec = dict(schedule.meta["kernels"])
    if rec.get("mode") != "auto" or not rec.get("eligible") or with_vendor(model, {}) is model:
        return schedule
    sites = plan_sites(mod, graph, target)
    chosen = set(rec["vendor"])
    tf32 = bool(rec.get("tf32"))
    stages = [i for i, st in enumerate(schedule.stages)
              if st.kind == "concurrent" and len(st.groups) > 1 and any(v in sites for v in st.nodes)]
    new_stages = [Stage([list(g) for g in st.groups], st.kind, st.latency) for st in schedule.stages]
    flipped: list[int] = []
    gain = 0.0
    evaluated = 0
    for i in stages:
        st = schedule.stages[i]
        groups = tuple(tuple(g) for g in st.groups)

        def measure(flip: Mapping[int, int], groups: tuple = groups) -> float:
            vendor = (chosen - {v for v in flip}) | {v for v in flip if v not in chosen}
            return with_vendor(model, {v: sites[v] for v in vendor}, tf32).stage_latency(graph, groups)

        result = refine_stage({v: 2 for v in st.nodes if v in sites}, measure, max_moves=max_moves,
                              min_gain=min_gain)
        evaluated += result.evaluated
        if result.choice:
            for v in result.choice:
                chosen ^= {v}
                flipped.append(v)
            new_stages[i].latency = result.latency_s
            gain += result.base_s - result.latency_s
    rec["vendor"] = sorted(chosen)
    rec["refined"] = {"stages_tried": len(stages), "flipped": sorted(flipped), "measurements": evaluated,
                      "gain_s": gain, "min_gain": min_gain}
    out = Schedule(new_stages, schedule.fingerprint, list(schedule.node_names), list(schedule.kernels),
                   list(schedule.edges), {**schedule.meta, "kernels": rec}, dict(schedule.variants))
    out.validate(graph)
    return out
