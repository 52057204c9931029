"""Lower a schedule into a Relax module: reorder kernels by stage and insert the runtime calls.

Runs where :func:`ios_tvm.ir.backend.fusion_passes` ends (after fusion, while ``main`` still has its
dataflow block), plan first, rewrite second:

1. *plan*: read the kernel graph of the module, check the schedule was made for it
   (fingerprint) and is valid, and compute the new binding order: stage by stage, group by
   group, each kernel preceded by the free bindings (tuples, views) it needs;
2. *rewrite*: reorder the dataflow block, leave dataflow form (``ToNonDataflow``,
   ``RemovePurityChecking``), and around every stage with more than one group insert::

       ios_tvm.runtime.stage_fork(device_type, device_id, num_groups)
       ios_tvm.runtime.stage_switch(device_type, device_id, g)      # before group g's kernels
       ...
       ios_tvm.runtime.stage_join(device_type, device_id, *tensors) # keep-alive of the stage

The join call takes every tensor the stage reads or writes. Relax's static memory planner frees a
tensor after its last use *in binding order*; without the keep-alive, a buffer last read by group
0 could be handed to a kernel of group 1 of the same stage while group 0 still runs;
:mod:`ios_tvm.transform.memory` checks a planned module for exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import relax

from ..core.schedule import Schedule
from ..errors import ScheduleMismatchError
from ..ir.bindings import dataflow_index, replace_block
from ..ir.graph import extract_graph, is_kernel_call
from ..ir.merge_plan import NodeMerges
from ..runtime import FORK, JOIN, SWITCH
from .merge import splice_merges


def _kernel_block_index(fn: relax.Function) -> int:
    idx = [i for i, b in enumerate(fn.body.blocks) if any(is_kernel_call(x.value) for x in b.bindings)]
    assert len(idx) == 1, f"the kernels lie in {len(idx)} binding blocks; extract_graph checked they lie in one"
    return idx[0]


@dataclass
class LoweringPlan:
    """What the rewrite does: ``order`` is the new binding order (indices into the dataflow
    block), ``stages`` the schedule's stages with node ids."""

    order: list[int]
    stages: list[list[list[int]]]


def plan(mod: tvm.IRModule, schedule: Schedule) -> LoweringPlan:
    """Check ``schedule`` against ``mod`` (fused, dataflow form) and compute the new order."""
    graph = extract_graph(mod, lowered=True)
    schedule.validate(graph)
    bindings = list(mod["main"].body.blocks[dataflow_index(mod)].bindings)
    kernel_pos = [i for i, b in enumerate(bindings) if is_kernel_call(b.value)]
    defined_at = {b.var: i for i, b in enumerate(bindings)}
    placed = [False] * len(bindings)
    order: list[int] = []

    def place(i: int) -> None:
        # free bindings and kernels are placed after everything they read
        stack = [(i, False)]
        while stack:
            j, ready = stack.pop()
            if placed[j]:
                continue
            if ready:
                placed[j] = True
                order.append(j)
                continue
            stack.append((j, True))
            for v in relax.analysis.free_vars(bindings[j].value):
                k = defined_at.get(v)
                if k is not None and not placed[k]:
                    # a validated schedule runs every kernel after the kernels it reads
                    assert not is_kernel_call(bindings[k].value), \
                        f"{bindings[j].var.name!r} needs kernel {bindings[k].var.name!r}, which runs later"
                    stack.append((k, False))

    stages = schedule.as_lists()
    for stage in stages:
        for group in stage:
            for node in group:
                place(kernel_pos[node])
    for i in range(len(bindings)):  # what no kernel needs (outputs built from tuples, ...)
        place(i)
    return LoweringPlan(order, stages)


def _runtime_call(name: str, args: list[relax.Expr]) -> relax.Call:
    return relax.Call(relax.ExternFunc(name), args, ty_args=[relax.ObjectType()])


def _tensor_vars(expr: relax.Expr, local: set) -> list[relax.Var]:
    return [v for v in relax.analysis.free_vars(expr) if v in local and isinstance(v.ty, relax.TensorType)]


def rewrite(mod: tvm.IRModule, lp: LoweringPlan, device_type: int, device_id: int = -1,
            keep_alive: bool = True) -> tvm.IRModule:
    """Apply a :class:`LoweringPlan`: reorder, leave dataflow form, insert runtime calls."""
    di = dataflow_index(mod)
    old = list(mod["main"].body.blocks[di].bindings)
    mod = replace_block(mod, di, [old[i] for i in lp.order])
    mod = tvm.transform.Sequential([relax.transform.ToNonDataflow(),
                                    relax.transform.RemovePurityChecking()])(mod)
    bi = _kernel_block_index(mod["main"])
    bindings = list(mod["main"].body.blocks[bi].bindings)
    # node id of each kernel binding, in the new order
    flat = [(si, gi, v) for si, st in enumerate(lp.stages) for gi, g in enumerate(st) for v in g]
    local_vars = {b.var for b in bindings}
    dev = [relax.prim_value(device_type), relax.prim_value(device_id)]
    out: list[relax.Binding] = []
    k = 0
    cur_stage, cur_group = -1, -1
    stage_tensors: list[relax.Var] = []

    def close_stage() -> None:
        nonlocal stage_tensors
        if cur_stage >= 0 and len(lp.stages[cur_stage]) > 1:
            alive = list(dict.fromkeys(stage_tensors)) if keep_alive else []
            out.append(relax.VarBinding(relax.Var(f"ios_join{cur_stage}", relax.ObjectType()),
                                        _runtime_call(JOIN, dev + alive)))
        stage_tensors = []

    for b in bindings:
        if is_kernel_call(b.value):
            si, gi, _ = flat[k]
            k += 1
            if si != cur_stage:
                close_stage()
                cur_stage, cur_group = si, -1
                if len(lp.stages[si]) > 1:
                    out.append(relax.VarBinding(
                        relax.Var(f"ios_fork{si}", relax.ObjectType()),
                        _runtime_call(FORK, dev + [relax.prim_value(len(lp.stages[si]))])))
            if gi != cur_group and len(lp.stages[si]) > 1:
                out.append(relax.VarBinding(relax.Var(f"ios_switch{si}_{gi}", relax.ObjectType()),
                                            _runtime_call(SWITCH, dev + [relax.prim_value(gi)])))
            cur_group = gi
            stage_tensors.extend(_tensor_vars(b.value, local_vars))
            stage_tensors.append(b.var)
            out.append(b)
            continue
        if cur_stage >= 0 and k == len(flat):  # past the last kernel: close before the tail
            close_stage()
            cur_stage = -1
        out.append(b)
    close_stage()
    mod = replace_block(mod, bi, out, is_pure=False)
    # impure now (the stream calls), so not "forced pure" either: a well-formed module
    mod["main"] = mod["main"].without_attr("relax.force_pure")
    return relax.transform.Normalize()(mod)


def LowerSchedule(schedule: Schedule | None, device_type: int, device_id: int = -1, keep_alive: bool = True,
                  merges: NodeMerges | None = None,
                  lower_merged: Callable[[tvm.IRModule], tvm.IRModule] | None = None) -> tvm.transform.Pass:
    """Lower an IOS schedule into a fused module: :func:`plan`, then :func:`rewrite`.

    Parameters
    ----------
    schedule
        A schedule of the module's kernel graph (checked against it: another model's is a
        :class:`~ios_tvm.errors.ScheduleMismatchError`); ``None`` leaves the module as it is
        (the sequential baseline).
    device_type, device_id
        The DLPack device the stage calls name (``ios_tvm.ir.target.CPU`` / ``CUDA``; ``-1``:
        the current one).
    keep_alive
        Pass every tensor a stage touches to its join, so the memory planner cannot share a
        buffer between concurrent groups (off only to show the race the verifier finds).
    merges, lower_merged
        For a schedule with merge stages: the model's merge plan and the function lowering a
        merged kernel with the passes the model went through (:class:`SpliceMerges` runs first).

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.LowerSchedule``; it runs where fusion ends (``main`` in
        dataflow form) and leaves ``main`` impure, in non-dataflow form.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.LowerSchedule")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if schedule is None:
            return mod
        sched = schedule
        if schedule.merges:
            if merges is None or lower_merged is None:
                raise ScheduleMismatchError("this schedule merges kernels: build it with ios_tvm.build or "
                                            "ios_tvm.pipeline, which prepare the merge")
            mod, sched = splice_merges(mod, schedule, merges, lower_merged)
        return rewrite(mod, plan(mod, sched), device_type, device_id, keep_alive)

    return _pass
