"""IOS-Merge, the rewrite: the kernels of each merge stage replaced by one merged kernel and a
split, in a fused module, at lowering (the plan, which operators merge and the module that
computes them merged, is :mod:`ios_tvm.ir.merge_plan`)."""

from __future__ import annotations

from typing import Any, Callable

import tvm
from tvm import relax

from ..core.schedule import Schedule
from ..ir.bindings import dataflow_index, replace_block
from ..ir.graph import call_args, extract_graph, is_kernel_call
from ..ir.merge_plan import MergeUnit, NodeMerges, merged_module
from ..ir.tvm_private import var_key


def splice_merges(mod: tvm.IRModule, schedule: Schedule, merges: NodeMerges,
                  lower_mini: Callable[[tvm.IRModule], tvm.IRModule]) -> tuple[tvm.IRModule, Schedule]:
    """Replace the kernels of each merge stage of ``schedule`` by one merged kernel (+ split), in
    the fused module ``mod``, and translate the schedule to the new module's kernels.

    Parameters
    ----------
    mod
        The model after fusion (where :func:`ios_tvm.transform.LowerSchedule` runs), ``main`` in
        dataflow form.
    schedule
        A :class:`ios_tvm.core.schedule.Schedule` of ``mod``'s graph with merge stages.
    merges
        Which unit each kernel computes (:func:`node_merges`).
    lower_mini
        Lowers :func:`merged_module` with the very passes the model went through.

    Returns
    -------
    tuple
        ``(module, schedule)``. The merged kernels come first where the first merged kernel was;
        the split's parts are bound to the *same* variables the old kernels defined, so nothing
        else in the module changes. Their PrimFuncs are added as ``ios_merge{j}_{name}`` (``j``:
        the merge stage's rank among the merge stages).
    """
    graph = extract_graph(mod, lowered=True)
    schedule.validate(graph)
    di = dataflow_index(mod)
    bindings = list(mod["main"].body.blocks[di].bindings)
    kernel_pos = [i for i, b in enumerate(bindings) if is_kernel_call(b.value)]
    adder = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs))
    insert: dict[int, list[relax.Binding]] = {}
    merged_kernels: list[list[relax.Var]] = []
    for j, nodes in enumerate(schedule.merges):
        nodes = sorted(nodes)
        replaced = [bindings[kernel_pos[v]] for v in nodes]
        out, kernels = _merged_bindings(j, [merges.units[v] for v in nodes], replaced, lower_mini, adder)
        insert[kernel_pos[nodes[0]]] = out
        insert.update({kernel_pos[v]: [] for v in nodes[1:]})
        merged_kernels.append(kernels)
    new_bindings: list[relax.Binding] = []
    for i, b in enumerate(bindings):
        new_bindings.extend(insert.get(i, [b]))
    new_mod = relax.transform.Normalize()(replace_block(adder.get(), di, new_bindings))
    return new_mod, _translate_schedule(schedule, graph, new_mod, merged_kernels)


def _merged_bindings(j: int, units: list[MergeUnit], replaced: list[relax.VarBinding],
                     lower_mini: Callable[[tvm.IRModule], tvm.IRModule], adder: relax.BlockBuilder
                     ) -> tuple[list[relax.Binding], list[relax.Var]]:
    """The bindings of merge stage ``j`` (the lowered :func:`merged_module` of ``units``, its
    PrimFuncs added to ``adder``, then the ``replaced`` kernels' variables bound to the split's
    parts), and the variables of its kernels."""
    mini = lower_mini(merged_module(units))
    gvs = {gv.name_hint: adder.add_func(f, f"ios_merge{j}_{gv.name_hint}")
           for gv, f in mini.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    remap: dict[Any, Any] = {mini["main"].params[0]: call_args(replaced[0].value)[0]}
    block = mini["main"].body.blocks[dataflow_index(mini)]
    out: list[relax.Binding] = []
    kernels = []
    for b in block.bindings:
        var = relax.DataflowVar(f"ios_m{j}_{b.var.name}", b.var.ty)
        value = b.value
        if is_kernel_call(value):
            args = [remap.get(a, a) for a in call_args(value)]
            out_ty = list(b.var.ty.fields) if isinstance(b.var.ty, relax.TupleType) else b.var.ty
            value = relax.op.call_tir(gvs[value.args[0].name_hint], relax.Tuple(args), out_ty)
            kernels.append(var)
        else:  # the merged module is head (+ casts) (+ bias) (+ activation) + split: kernels, then variables
            assert isinstance(value, relax.Var), f"unexpected binding in a merged kernel: {value}"
            value = remap[value]
        remap[b.var] = var
        out.append(relax.VarBinding(var, value))
    split = remap[mini["main"].body.body]
    out += [relax.VarBinding(old.var, relax.TupleGetItem(split, i)) for i, old in enumerate(replaced)]
    return out, kernels


def _translate_schedule(schedule: Any, graph: Any, new_mod: tvm.IRModule, merged_kernels: list[list[relax.Var]]
                        ) -> Any:
    """``schedule`` (of ``graph``) in the node ids of ``new_mod``: kept kernels found by their
    variables, each merge stage becomes one group of its merged kernels."""
    new_graph = extract_graph(new_mod, lowered=True)
    where = {var_key(b.var): i for i, b in enumerate(new_graph.bindings)}
    old_to_new = {v: where[var_key(b.var)] for v, b in enumerate(graph.bindings) if var_key(b.var) in where}
    stages = []
    merge_iter = iter(merged_kernels)
    for st in schedule.stages:
        if st.kind == "merge":
            stages.append([[where[var_key(v)] for v in next(merge_iter)]])
        else:
            stages.append([[old_to_new[v] for v in g] for g in st.groups])
    return Schedule.from_stages(new_graph, stages, [st.latency for st in schedule.stages],
                                {**schedule.meta, "merged_from": schedule.fingerprint})


def SpliceMerges(schedule: Schedule, merges: NodeMerges,
                 lower_merged: Callable[[tvm.IRModule], tvm.IRModule]) -> tvm.transform.Pass:
    """The kernels of each merge stage of ``schedule`` replaced by one merged kernel and a split
    (:func:`splice_merges`, keeping the module; :class:`~ios_tvm.transform.LowerSchedule` runs it
    itself and lowers the translated schedule).

    Parameters
    ----------
    schedule
        A schedule of the fused module's kernel graph with merge stages.
    merges
        The model's merge plan (:func:`ios_tvm.ir.merge_plan.node_merges`).
    lower_merged
        Lowers :func:`~ios_tvm.ir.merge_plan.merged_module` with the passes the model went
        through (fusion, kernel schedules), so the merged kernel is built as the others are.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.SpliceMerges``.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.SpliceMerges")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return splice_merges(mod, schedule, merges, lower_merged)[0]

    return _pass
