"""Vendor kernels, the rewrite: chosen kernel calls become ``R.call_dps_packed`` calls of the
runtime library's cuDNN / cuBLASLt functions (which calls, and how: :mod:`ios_tvm.ir.vendor`).

Two passes, so the schedule never sees the difference:

1. :func:`MarkVendorKernels`, right before :func:`~ios_tvm.transform.LowerSchedule`: the call of
   each chosen graph node is pointed at a copy of its kernel that carries the vendor call it
   stands for (attribute ``ios_tvm.vendor``) and the name of the kernel it replaces
   (``ios_tvm.variant_of``, as kernel variants do), so the graph, its fingerprint and the
   schedule's validation are those of TVM's kernels;
2. :func:`UseVendorKernels`, right after lowering: each call of a marked kernel becomes::

       lv_vendor = R.call_dps_packed("ios_tvm.vendor.conv2d", (x, w, b, *ints), [out, workspace])
       lv = lv_vendor[0]

   where the workspace is a ``uint8`` tensor the memory planner places like any output: calls
   of one stream reuse one, concurrent groups never share one (inside a stage the workspace is
   handed to the stage's join, the keep-alive of :mod:`ios_tvm.transform.lower`), and a CUDA
   graph replays with the very storage it captured.

The integer attributes (layout, strides, padding, dilation, groups, activation, TF32) follow the
tensors; ``src/vendor.h`` lists them.
"""

from __future__ import annotations

from typing import Any, Mapping

import tvm
from tvm import relax

from ..errors import ScheduleMismatchError
from ..ir.bindings import dataflow_index, replace_block
from ..ir.graph import call_args, is_kernel_call
from ..ir.vendor import VendorSite
from ..runtime import FORK, JOIN
from .kernel_schedules import VARIANT_ATTR

VENDOR_ATTR = "ios_tvm.vendor"


def _spec(site: VendorSite, tf32: bool) -> dict[str, Any]:
    return {"func": site.func, "roles": list(site.roles), "ints": [*site.ints, int(tf32)],
            "workspace": site.workspace}


def MarkVendorKernels(sites: Mapping[int, VendorSite], tf32: bool = False) -> tvm.transform.Pass:
    """Point the kernel call of every site's node at a marked copy of its kernel.

    Parameters
    ----------
    sites
        Node id -> :class:`~ios_tvm.ir.vendor.VendorSite` (from
        :func:`ios_tvm.ir.vendor.plan_sites` on this very model): node ``v`` is the ``v``-th
        kernel call of ``main``'s dataflow block.
    tf32
        Let float32 vendor kernels compute in TF32 (recorded in each call).

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.MarkVendorKernels``; it runs where fusion ends (before
        the schedule is lowered) and leaves the kernel graph as it was.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.MarkVendorKernels")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not sites:
            return mod
        di = dataflow_index(mod)
        bindings = list(mod["main"].body.blocks[di].bindings)
        kernel_at = [i for i, b in enumerate(bindings) if is_kernel_call(b.value)]
        bb = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs))
        copies: dict[tuple, Any] = {}
        for v, site in sorted(sites.items()):
            if v >= len(kernel_at):
                raise ScheduleMismatchError(f"vendor kernel for node {v}, and the model has {len(kernel_at)} kernels: "
                                            "plan the vendor kernels on this model (ios_tvm.ir.vendor.plan_sites)")
            b = bindings[kernel_at[v]]
            callee = b.value.args[0]
            if not isinstance(callee, tvm.ir.GlobalVar) or len(call_args(b.value)) != site.arg_count():
                raise ScheduleMismatchError(f"kernel call {b.var.name!r} (node {v}) is not the {site.kind} its vendor "
                                            "kernel was planned for: plan the vendor kernels on this model")
            func = mod[callee]
            original = str(func.attrs[VARIANT_ATTR]) if func.attrs is not None and VARIANT_ATTR in func.attrs \
                else callee.name_hint
            spec = _spec(site, tf32)
            key = (callee.name_hint, site.func, site.roles, tuple(spec["ints"]))
            if key not in copies:
                marked = func.with_attr(VARIANT_ATTR, original).with_attr(VENDOR_ATTR, spec)
                copies[key] = bb.add_func(marked, f"{original}_ios_vendor")
            call = b.value
            bindings[kernel_at[v]] = relax.VarBinding(
                b.var, relax.Call(call.op, [copies[key], *call.args[1:]], call.attrs, call.ty_args))
        return relax.transform.Normalize()(replace_block(bb.get(), di, bindings))

    return _pass


def _marked(mod: tvm.IRModule, value: Any) -> dict[str, Any] | None:
    if not (is_kernel_call(value) and isinstance(value.args[0], tvm.ir.GlobalVar)):
        return None
    attrs = mod[value.args[0]].attrs
    return attrs[VENDOR_ATTR] if attrs is not None and VENDOR_ATTR in attrs else None


def _extern(value: Any) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
        return str(value.op.global_symbol)
    return None


def _vendor_call(b: relax.VarBinding, spec: Any, dataflow: bool) -> tuple[list[relax.Binding], relax.Var]:
    """The bindings replacing kernel call ``b`` by its vendor call, and the workspace variable."""
    args = call_args(b.value)
    roles = [int(r) for r in spec["roles"]]
    tensors = [args[r] for r in roles if r >= 0]
    ints = [relax.prim_value(int(i)) for i in spec["ints"]]
    out_ty = b.var.ty
    ws_ty = relax.TensorType([int(spec["workspace"])], "uint8")
    call = relax.call_dps_packed(relax.ExternFunc(str(spec["func"])), relax.Tuple(tensors + ints), [out_ty, ws_ty])
    make = relax.DataflowVar if dataflow else relax.Var
    both = make(f"{b.var.name}_vendor", relax.TupleType([out_ty, ws_ty]))
    ws = make(f"{b.var.name}_workspace", ws_ty)
    return [relax.VarBinding(both, call), relax.VarBinding(b.var, relax.TupleGetItem(both, 0)),
            relax.VarBinding(ws, relax.TupleGetItem(both, 1))], ws


def UseVendorKernels() -> tvm.transform.Pass:
    """Replace every call of a kernel :func:`MarkVendorKernels` marked by its vendor call.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.UseVendorKernels``. It runs right after
        :func:`~ios_tvm.transform.LowerSchedule` (``main`` lowered or still in dataflow form),
        hands each workspace written inside a stage to that stage's join, and removes the
        marked kernel copies (and the kernels they stood for, where no other call needs them).
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.UseVendorKernels")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        marked = [gv for gv in mod.get_global_vars()
                  if isinstance(mod[gv], tvm.tirx.PrimFunc) and mod[gv].attrs is not None
                  and VENDOR_ATTR in mod[gv].attrs]
        if not marked:
            return mod
        fn = mod["main"]
        out = mod
        for bi, block in enumerate(fn.body.blocks):
            dataflow = isinstance(block, relax.DataflowBlock)
            new: list[relax.Binding] = []
            pending: list[relax.Var] = []  # workspaces written since the stage's fork
            in_stage = False
            changed = False
            for b in block.bindings:
                name = _extern(b.value)
                if name == FORK:
                    in_stage, pending = True, []
                elif name == JOIN and in_stage:
                    in_stage = False
                    if pending:
                        call = b.value
                        b = relax.VarBinding(b.var, relax.Call(call.op, [*call.args, *pending], call.attrs,
                                                               call.ty_args))
                        pending = []
                spec = _marked(mod, b.value) if isinstance(b, relax.VarBinding) else None
                if spec is None:
                    new.append(b)
                    continue
                replaced, ws = _vendor_call(b, spec, dataflow)
                new.extend(replaced if in_stage else replaced[:2])
                if in_stage:
                    pending.append(ws)
                changed = True
            if changed:
                out = replace_block(out, bi, new)
        # the marked copies are gone from main, and so are the kernels no call needs any more
        replaced = {str(mod[gv].attrs[VARIANT_ATTR]) for gv in marked}
        used = {gv.name_hint for gv in relax.analysis.all_global_vars(out["main"])}
        out = tvm.IRModule({gv: f for gv, f in out.functions.items()
                            if gv not in marked and (gv.name_hint not in replaced or gv.name_hint in used)},
                           attrs=out.attrs)
        return relax.transform.Normalize()(out)

    return _pass
