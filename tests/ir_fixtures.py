"""TVMScript fixtures the Before/Expected tests of ios_tvm's passes share: three tiny kernels
(``double``, ``inc``, ``add``), the copy kernel a CUDA-graph preparation adds, and two small
models over them. An Expected module is its ``main`` (written in TVMScript, naming the kernels by
the global variables below) plus the kernels it calls: :func:`module`. Also :func:`merging`, the
schedule the merge tests build."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

F32 = "float32"


@I.ir_module
class Kernels:
    @T.prim_func(private=True)
    def double(x: T.Buffer((1, 4), F32), y: T.Buffer((1, 4), F32)):
        for i in range(4):
            y[0, i] = x[0, i] * T.float32(2)

    @T.prim_func(private=True)
    def inc(x: T.Buffer((1, 4), F32), y: T.Buffer((1, 4), F32)):
        for i in range(4):
            y[0, i] = x[0, i] + T.float32(1)

    @T.prim_func(private=True)
    def add(a: T.Buffer((1, 4), F32), b: T.Buffer((1, 4), F32), y: T.Buffer((1, 4), F32)):
        for i in range(4):
            y[0, i] = a[0, i] + b[0, i]

    @T.prim_func(private=True, s_tir=True)
    def ios_graph_copy(src: T.Buffer((1, 4), F32), dst: T.Buffer((1, 4), F32)):
        T.func_attr({"tirx.noalias": True})
        for i0, i1 in T.grid(1, 4):
            with T.sblock("dst"):
                v_i0, v_i1 = T.axis.remap("SS", [i0, i1])
                T.reads(src[v_i0, v_i1])
                T.writes(dst[v_i0, v_i1])
                dst[v_i0, v_i1] = src[v_i0, v_i1]


#: the kernels' global variables, for ``R.call_tir(double, ...)`` in an Expected ``main``
double = Kernels.get_global_var("double")
inc = Kernels.get_global_var("inc")
add = Kernels.get_global_var("add")
copy = Kernels.get_global_var("ios_graph_copy")


def module(main: relax.Function, extra: dict | None = None) -> tvm.IRModule:
    """An IRModule of ``main``, the kernels of :class:`Kernels` it calls (by global variable) and
    ``extra`` functions (global variable -> function)."""
    shared = {g.name_hint for g in Kernels.get_global_vars()}
    called = {gv for gv in relax.analysis.all_global_vars(main) if gv.name_hint in shared}
    funcs = {gv: Kernels[gv] for gv in sorted(called, key=lambda g: g.name_hint)}
    funcs.update(extra or {})
    funcs[relax.GlobalVar("main")] = main.with_attr("global_symbol", "main")
    return tvm.IRModule(funcs)


@R.function
def _branches(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
    with R.dataflow():
        a = R.call_tir(double, (x,), out_ty=R.Tensor((1, 4), F32))
        b = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
        v = R.reshape(b, (1, 4))
        y = R.call_tir(add, (a, v), out_ty=R.Tensor((1, 4), F32))
        R.output(y)
    return y


#: ``double`` and ``inc`` both read the input ``x``; ``add`` joins them through a view
Branches = module(_branches)
#: inc | double, then add
BRANCHES_STAGES = [[[1], [0]], [[2]]]


@R.function
def _two_outputs(x: R.Tensor((1, 4), F32)) -> R.Tuple(R.Tensor((1, 4), F32), R.Tensor((1, 4), F32)):
    with R.dataflow():
        c = R.call_tir(inc, (x,), out_ty=R.Tensor((1, 4), F32))
        a = R.call_tir(double, (c,), out_ty=R.Tensor((1, 4), F32))
        b = R.call_tir(inc, (c,), out_ty=R.Tensor((1, 4), F32))
        y = (a, b)
        R.output(y)
    return y


#: ``inc`` first, then ``double`` and ``inc`` of its result, both returned
TwoOutputs = module(_two_outputs)


def typed_allocs(mod: tvm.IRModule) -> tvm.IRModule:
    """``R.builtin.alloc_tensor`` as TVM's passes make it, with its type in ``ty_args`` (which
    TVMScript prints but does not parse back)."""
    alloc = tvm.ir.Op.get("relax.builtin.alloc_tensor")
    fn = mod["main"]
    blocks = [relax.BindingBlock([
        relax.VarBinding(b.var, relax.Call(alloc, b.value.args, b.value.attrs, [b.var.ty]))
        if isinstance(b.value, relax.Call) and b.value.op.same_as(alloc) else b for b in blk.bindings])
        for blk in fn.body.blocks]
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out["main"] = relax.Function(fn.params, relax.SeqExpr(blocks, fn.body.body), fn.ret_ty, fn.is_pure, fn.attrs)
    return relax.transform.Normalize()(out)


@R.function(pure=False)
def _planned(x: R.Tensor((1, 4), F32)) -> R.Tensor((1, 4), F32):
    storage = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
    alloc = R.memory.alloc_tensor(storage, 0, R.shape([1, 4]), R.dtype(F32), 0)
    copy(x, alloc)
    xs = alloc
    fork = R.call_packed("ios_tvm.runtime.stage_fork", 2, 0, 2, ty_args=(R.Object,))  # noqa: F841
    s0 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 0, ty_args=(R.Object,))  # noqa: F841
    storage1 = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
    alloc1 = R.memory.alloc_tensor(storage1, 0, R.shape([1, 4]), R.dtype(F32), 0)
    inc(xs, alloc1)
    b = alloc1
    s1 = R.call_packed("ios_tvm.runtime.stage_switch", 2, 0, 1, ty_args=(R.Object,))  # noqa: F841
    storage2 = R.memory.alloc_storage(R.shape([16]), 0, R.str("global"), R.dtype(F32))
    alloc2 = R.memory.alloc_tensor(storage2, 0, R.shape([1, 4]), R.dtype(F32), 0)
    double(xs, alloc2)
    a = alloc2
    v = R.reshape(b, R.shape([1, 4]))
    join = R.call_packed("ios_tvm.runtime.stage_join", 2, 0, b, a, ty_args=(R.Object,))  # noqa: F841
    alloc3 = R.builtin.alloc_tensor(R.shape([1, 4]), R.dtype(F32), 0, R.str("global"))
    add(a, v, alloc3)
    y = alloc3
    return y


#: ``Branches`` prepared and memory-planned for CUDA (what :func:`test_plan_of_prepared_module`
#: checks): the storage of each group is allocated inside the stage, after the fork
Planned = typed_allocs(module(_planned))


def merging(graph, sets):
    """A schedule of ``graph``: one merge stage per node set (where its first node was), every
    other kernel alone, in binding order."""
    from ios_tvm.core.schedule import Schedule

    first = {min(s): sorted(s) for s in sets}
    merged = {v for s in sets for v in s}
    stages, kinds = [], []
    for v in range(len(graph.nodes)):
        if v in first:
            stages.append([first[v]])
            kinds.append("merge")
        elif v not in merged:
            stages.append([[v]])
            kinds.append("concurrent")
    return Schedule.from_stages(graph, stages, kinds=kinds)
