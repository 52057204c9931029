"""TVM's kernels or the vendor's, per call: what ``optimize(kernels=...)`` decides before the
search, and records in the schedule (``schedule.meta["kernels"]``), which builds then follow.

* ``"tvm"``: TVM's kernels (tuned where a database has them), nothing else;
* ``"vendor"``: every node computing a vendor unit (:mod:`ios_tvm.ir.vendor`) calls cuDNN or
  cuBLASLt;
* ``"auto"``: each such node runs whichever of the two its cost model says is faster alone
  (measured on the GPU with ``cost_model="measure"``: both kernels timed on the same tensors, in
  the conditions of the search's stages), and the search then schedules that mix; the times are
  recorded (``meta["kernels"]["alone_s"]``: node -> ``[tvm, vendor]`` seconds).

Either way the search costs every stage with the kernels the build will run
(:func:`ios_tvm.cost.vendor.with_vendor`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import tvm

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
