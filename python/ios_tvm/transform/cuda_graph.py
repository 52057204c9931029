"""CUDA-graph capture of a scheduled run: the whole run replays as one CUDA graph, in which the
stages' fork/join events become edges between parallel branches.

The route: TVM's own capture, with the module shaped so that it captures every stage whole
-------------------------------------------------------------------------------------------
Two routes were open: teach TVM's capture about ios_tvm's stream calls, or capture in ios_tvm's
runtime. Reading TVM 0.27's sources showed that neither is needed, because TVM's capture
already records the stream calls correctly as long as it does not cut a stage apart:

- ``src/relax/transform/rewrite_cuda_graph.cc``, ``CUDAGraphRewritePlanner::VisitBinding_``:
  a call to an ``ExternFunc`` whose name does not start with ``vm.builtin`` and whose arguments
  are static counts as a kernel launch and is lifted into the capture function, in binding
  order. ``stage_fork`` / ``stage_switch`` (constants only) and ``stage_join`` (constants and
  tensors in planned storage) are such calls: they run inside the capture like kernels.
- Same function: a region ends at the first binding that is not static. Bindings reading a
  parameter before ``num_input`` (a runtime input), tensors in an output's storage
  (``OutputStorageCollector``, or outputs left to ``R.builtin.alloc_tensor``, which the planner
  does not place) and ``vm.builtin`` calls are not. A stage holding one of them between its fork
  and its join is cut in two: half of it replayed from the graph, half run by the host, with
  the stage's stream state split between them.
- ``CUDAGraphRewriter::LaunchSubgraph`` / ``VisitBinding_``: the cached allocation function is
  launched where the function's first ``alloc_storage`` stood, each capture function where its
  first lifted binding stood. A region that opens (at a fork) before the first storage
  allocation reads storage that is not yet defined (the module is ill-formed).
- ``src/runtime/vm/cuda/cuda_graph_builtin.cc``, ``CUDAGraphExtensionNode::RunOrCapture``: the
  first call runs the capture function once *uncaptured* (a warm-up: the runtime's stream pool
  and events are created there, outside capture), then again inside ``CUDACaptureStream``: a
  fresh stream made TVM's environment stream, ``cudaStreamBeginCapture`` in *global* mode; the
  instantiated graph is cached per region index and later calls only ``cudaGraphLaunch`` it on
  the environment stream. An error of ``cudaStreamEndCapture`` is cleared, not raised.

Under stream capture, ``stage_fork`` records an event on the capturing stream and makes each
group stream wait on it: the group streams join the capture (CUDA's cross-stream capture), and
their kernels become branches of the graph. ``stage_join`` makes the capturing stream wait on
one event per group stream, which joins every group stream back before the capture ends, and
restores the environment stream that was current at the fork (the capture stream). So the
stage calls need no change for capture; the runtime only refuses to create streams or events
while capturing (``src/cuda_streams.cc``), which TVM's warm-up run makes unnecessary.

Capturing in ios_tvm's runtime instead would mean calling Relax closures through TVM's VM
(``VirtualMachine::GetContextPtr``, C++ API of TVM's runtime library, against which the wheel
gives no build) and duplicating TVM's storage cache; teaching ``RewriteCUDAGraph`` about stage
calls needs a TVM build. Both are larger than the two small rewrites below and a check.

What this module does
---------------------
1. *prepare* (right after the schedule is lowered, before memory planning; :func:`plan`, then
   :func:`prepare`): runtime inputs read between the first fork and the last join are read
   through a copy made at the start of ``main`` (one copy kernel per input, outside the graph:
   everything after it is static); tensors ``main`` returns that a kernel between the first
   fork and the last join writes are copied out after the last join (outputs are not in static
   storage).
2. *capture* (where ``RewriteCUDAGraph`` stands; :func:`CaptureCUDAGraph`): storage allocations
   move to the top of ``main`` (:func:`hoist_storage`), TVM's ``RewriteCUDAGraph`` runs
   whatever the ``PassContext`` says, then :func:`summarize` checks that every function holds
   whole stages (fork, one switch per group, join, in order) and that the module is well
   formed. If not, the build goes on without a graph and says why with a
   :class:`~ios_tvm.errors.CUDAGraphWarning`.

Replays skip host code: the stage calls run only in the warm-up and the capture. Between stage
calls the runtime keeps only the open stage (opened and closed inside one capture function, as
:func:`summarize` checks) and ``stages_run``, which therefore does not advance on replays.
Outputs are fresh tensors each run (copied out or written outside the graph); everything else
lives in TVM's cached static storage. Parameters after ``num_input`` (weights) are static to TVM:
the graph keeps their addresses, so every call must pass the same weight tensors (TVM's own
contract for its sequential graphs).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import tvm
from tvm import relax, te

from ..errors import CUDAGraphWarning
from ..ir.backend import pass_context_with
from ..ir.bindings import num_input
from ..ir.graph import is_kernel_call, tensor_bytes
from ..ir.tvm_private import (
    CUDA_GRAPH_GET_CACHED_ALLOC,
    CUDA_GRAPH_RUN_OR_CAPTURE,
    USE_CUDA_GRAPH,
)
from ..runtime import FORK, JOIN, SWITCH

RUN_OR_CAPTURE = CUDA_GRAPH_RUN_OR_CAPTURE
GET_CACHED_ALLOC = CUDA_GRAPH_GET_CACHED_ALLOC
COPY_KERNEL = "ios_graph_copy"

log = logging.getLogger(__name__)


def _extern(value: Any) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
        return str(value.op.global_symbol)
    return None


def _bindings(fn: relax.Function) -> list[relax.Binding]:
    return [b for block in fn.body.blocks for b in block.bindings]


# -- 1. prepare: plan ---------------------------------------------------------------------------

@dataclass
class CapturePlan:
    """What :func:`prepare` copies so that the scheduled span of ``main`` (first fork to last
    join) is static: ``inputs`` (runtime inputs read in the span) and ``outputs`` (tensors
    ``main`` returns that a kernel in the span writes)."""

    inputs: list[relax.Var] = field(default_factory=list)
    outputs: list[relax.Var] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)


def _output_leaves(expr: relax.Expr, defs: dict) -> Iterator[relax.Var]:
    """The tensor variables the returned value is made of (through tuples)."""
    value = defs.get(expr) if isinstance(expr, relax.Var) else None
    if isinstance(expr, relax.Tuple) or isinstance(value, relax.Tuple):
        for f in (expr if isinstance(expr, relax.Tuple) else value).fields:
            yield from _output_leaves(f, defs)
    elif isinstance(expr, relax.Var) and isinstance(expr.ty, relax.TensorType):
        yield expr


def _producers(var: relax.Var, defs: dict) -> set:
    """Kernel bindings whose output ``var`` is, or is a view / alias / tuple item of."""
    found, stack, seen = set(), [var], set()
    while stack:
        v = stack.pop()
        if v in seen or v not in defs:
            continue
        seen.add(v)
        if is_kernel_call(defs[v]):
            found.add(v)
        else:
            stack.extend(relax.analysis.free_vars(defs[v]))
    return found


def plan(mod: tvm.IRModule) -> CapturePlan:
    """Read a lowered ``main`` (after :func:`ios_tvm.transform.lower.rewrite`, before memory planning) and
    say what must be copied for its scheduled span to be captured whole."""
    fn = mod["main"]
    bindings = _bindings(fn)
    names = [_extern(b.value) for b in bindings]
    if FORK not in names:
        return CapturePlan()  # no concurrent stage: TVM's capture as it is
    first = names.index(FORK)
    last = len(names) - 1 - names[::-1].index(JOIN)
    span = bindings[first:last + 1]
    read = {v for b in span for v in relax.analysis.free_vars(b.value)}
    inputs = [p for p in fn.params[:num_input(fn)] if isinstance(p.ty, relax.TensorType) and p in read]
    written = {b.var for b in span if is_kernel_call(b.value)}
    defs = {b.var: b.value for b in bindings}
    outputs = [v for v in dict.fromkeys(_output_leaves(fn.body.body, defs)) if _producers(v, defs) & written]
    return CapturePlan(inputs, outputs)


# -- 1. prepare: rewrite ------------------------------------------------------------------------

def copy_kernel(ty: relax.TensorType, target: tvm.target.Target | None) -> tvm.tirx.PrimFunc:
    """A kernel copying a tensor of type ``ty`` (scheduled with dlight's fallback on GPUs)."""
    shape = [int(d) for d in ty.shape.values]
    src = te.placeholder(shape, ty.dtype, name="src")
    dst = te.compute(shape, lambda *i: src(*i), name="dst")
    func = te.create_prim_func([src, dst]).without_attr("global_symbol")
    if target is None or target.kind.name != "cuda":
        return func
    import tvm.s_tir.dlight as dl

    with target:
        scheduled = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(tvm.IRModule({"main": func}))
    return scheduled["main"]


def prepare(mod: tvm.IRModule, cp: CapturePlan, target: tvm.target.Target | None = None) -> tvm.IRModule:
    """Apply a :class:`CapturePlan` to a lowered ``main``: each input in ``cp.inputs`` becomes a
    fresh parameter copied, first thing, into the variable every binding already reads; each
    output in ``cp.outputs`` is copied after the last binding and returned in its place."""
    if not cp:
        return mod
    fn = mod["main"]
    assert not any(isinstance(b, relax.DataflowBlock) for b in fn.body.blocks), "expects main after lowering"
    bb = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs))
    kernels: dict[tuple, tvm.ir.GlobalVar] = {}

    def copy(var: relax.Var) -> relax.Call:
        key = (tuple(int(d) for d in var.ty.shape.values), str(var.ty.dtype))
        if key not in kernels:
            kernels[key] = bb.add_func(copy_kernel(var.ty, target), COPY_KERNEL)
        return relax.op.call_tir(kernels[key], relax.Tuple([var]), var.ty)

    old = list(fn.params)
    params = [relax.Var(p.name, p.ty) if p in cp.inputs else p for p in old]
    head = [relax.VarBinding(p, copy(new)) for p, new in zip(old, params) if not p.same_as(new)]
    defs = {b.var: b.value for b in _bindings(fn)}
    out_of = {v: relax.Var(f"{v.name}_out", v.ty) for v in cp.outputs}
    tail = [relax.VarBinding(new, copy(v)) for v, new in out_of.items()]

    def rebuild(expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Var) and expr in out_of:
            return out_of[expr]
        value = defs.get(expr) if isinstance(expr, relax.Var) else None
        tup = expr if isinstance(expr, relax.Tuple) else value if isinstance(value, relax.Tuple) else None
        if tup is None:
            return expr
        fields = [rebuild(f) for f in tup.fields]
        if all(a.same_as(b) for a, b in zip(fields, tup.fields)):
            return expr
        new = relax.Tuple(fields)
        if isinstance(expr, relax.Tuple):
            return new
        var = relax.Var(f"{expr.name}_out", new.ty)
        tail.append(relax.VarBinding(var, new))
        return var

    ret = rebuild(fn.body.body)
    blocks = list(fn.body.blocks) or [relax.BindingBlock([])]
    blocks[0] = relax.BindingBlock(head + list(blocks[0].bindings))
    blocks[-1] = relax.BindingBlock(list(blocks[-1].bindings) + tail)
    out = bb.get()
    out["main"] = relax.Function(params, relax.SeqExpr(blocks, ret), fn.ret_ty, fn.is_pure, fn.attrs)
    return relax.transform.Normalize()(out)


def PrepareCUDAGraph(target: tvm.target.Target | None = None) -> tvm.transform.Pass:
    """Shape a scheduled module so that TVM's capture cuts no stage: :func:`plan`, then
    :func:`prepare` (inputs read inside a stage copied into static storage first, outputs written
    inside one copied out after it).

    Parameters
    ----------
    target
        What the copy kernels are scheduled for (``None``: left unscheduled, for tests).

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.PrepareCUDAGraph``; it runs right after
        :func:`~ios_tvm.transform.LowerSchedule`.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.PrepareCUDAGraph")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        cp = plan(mod)
        if cp.inputs:
            size = sum(tensor_bytes([int(d) for d in p.ty.shape.values], p.ty.dtype) for p in cp.inputs)
            log.info("CUDA graph: %d input(s) (%.1f KiB) copied into static storage at each run: %s",
                     len(cp.inputs), size / 1024, ", ".join(p.name for p in cp.inputs))
        if cp.outputs:
            log.info("CUDA graph: %d output(s) written inside a stage, copied out after the last join",
                     len(cp.outputs))
        return prepare(mod, cp, target)

    return _pass


# -- 2. capture -----------------------------------------------------------------------------------

def hoist_storage(mod: tvm.IRModule) -> tvm.IRModule:
    """Move ``main``'s storage allocations (constant arguments only) to the top of its first
    block, so that TVM's cached allocation is launched before any capture function."""
    fn = mod["main"]
    blocks = list(fn.body.blocks)
    if not blocks:
        return mod
    alloc = tvm.ir.Op.get("relax.memory.alloc_storage")

    def is_alloc(b: relax.Binding) -> bool:
        return (isinstance(b.value, relax.Call) and b.value.op.same_as(alloc)
                and not relax.analysis.free_vars(b.value))

    hoisted = [b for blk in blocks for b in blk.bindings if is_alloc(b)]
    if not hoisted:
        return mod
    assert not any(isinstance(b, relax.DataflowBlock) for b in blocks), "expects main after memory planning"
    rest = [[b for b in blk.bindings if not is_alloc(b)] for blk in blocks]
    rest[0] = hoisted + rest[0]
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out["main"] = relax.Function(fn.params, relax.SeqExpr([relax.BindingBlock(b) for b in rest], fn.body.body),
                                 fn.ret_ty, fn.is_pure, fn.attrs)
    return relax.transform.Normalize()(out)


def rewrite_cuda_graph(mod: tvm.IRModule) -> tvm.IRModule:
    """TVM's ``RewriteCUDAGraph``, on whatever the current ``PassContext`` says of
    ``relax.backend.use_cuda_graph`` (its other settings kept)."""
    with pass_context_with({USE_CUDA_GRAPH: True}):
        return relax.transform.RewriteCUDAGraph()(mod)


@dataclass
class CaptureSummary:
    """The shape of a module after ``RewriteCUDAGraph``.

    ``regions``: the capture functions ``main`` launches with ``run_or_capture``, in order;
    ``stages``: concurrent stages (fork..join) per Relax function that holds any;
    ``problems``: what makes the module wrong to run (empty: fine).
    """

    regions: list[str]
    stages: dict[str, int]
    problems: list[str]

    @property
    def uncaptured(self) -> int:
        """Concurrent stages ``main`` runs itself, outside any graph."""
        return self.stages.get("main", 0)


def _stage_structure(fn: relax.Function) -> tuple[int, list[str]]:
    """Concurrent stages in ``fn`` and what is wrong with its stage calls: each fork must be
    followed by one switch per group, in order, and its join, all in ``fn``."""
    problems: list[str] = []
    stages = 0
    groups: list[int] | None = None
    num = 0
    for b in _bindings(fn):
        name = _extern(b.value)
        if name == FORK:
            if groups is not None:
                problems.append(f"{b.var.name}: stage_fork inside an open stage")
            groups, num = [], int(b.value.args[2].value)
        elif name == SWITCH:
            if groups is None:
                problems.append(f"{b.var.name}: stage_switch outside a stage (its stage_fork is elsewhere)")
            else:
                groups.append(int(b.value.args[2].value))
        elif name == JOIN:
            if groups is None:
                problems.append(f"{b.var.name}: stage_join without its stage_fork (the stage was cut)")
                continue
            if groups != list(range(num)):
                problems.append(f"{b.var.name}: a stage of {num} groups switched to groups {groups}")
            stages += 1
            groups = None
    if groups is not None:
        problems.append("a stage_fork without its stage_join (the stage was cut)")
    return stages, problems


def summarize(mod: tvm.IRModule) -> CaptureSummary:
    """Check a module after ``RewriteCUDAGraph``: see :class:`CaptureSummary`."""
    stages: dict[str, int] = {}
    problems: list[str] = []
    for gv, fn in mod.functions.items():
        if isinstance(fn, relax.Function):
            n, found = _stage_structure(fn)
            if n:
                stages[gv.name_hint] = n
            problems += [f"{gv.name_hint}: {p}" for p in found]
    regions = []
    for b in _bindings(mod["main"]):
        v = b.value
        if (isinstance(v, relax.Call) and v.args and isinstance(v.args[0], relax.ExternFunc)
                and str(v.args[0].global_symbol) == RUN_OR_CAPTURE):
            regions.append(v.args[1].fields[0].name_hint)
    try:
        relax.analysis.well_formed(mod)
    except (RuntimeError, ValueError) as err:
        problems.append(f"the module is not well formed after RewriteCUDAGraph: {str(err).splitlines()[0]}")
    return CaptureSummary(regions, stages, problems)


def CaptureCUDAGraph() -> tvm.transform.Pass:
    """Capture the scheduled run as one CUDA graph: :func:`hoist_storage`, TVM's
    ``RewriteCUDAGraph`` (:func:`rewrite_cuda_graph`), then :func:`summarize` checks it.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.CaptureCUDAGraph`` standing where ``RewriteCUDAGraph``
        stands; a module it cannot capture without cutting a stage is returned without a graph,
        with a :class:`~ios_tvm.errors.CUDAGraphWarning`.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.CaptureCUDAGraph")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        hoisted = hoist_storage(mod)
        try:
            captured = rewrite_cuda_graph(hoisted)
        except (RuntimeError, ValueError) as err:  # TVM refused the module: run it without a graph
            return _fall_back(hoisted, [f"RewriteCUDAGraph failed: {err}"])
        summary = summarize(captured)
        if summary.problems:
            return _fall_back(hoisted, summary.problems)
        if summary.uncaptured:
            msg = (f"ios_tvm: {summary.uncaptured} of {sum(summary.stages.values())} concurrent stages run "
                   "outside the CUDA graph (a binding between them is not static)")
            log.warning(msg)
            warnings.warn(msg, CUDAGraphWarning, stacklevel=2)
        log.info("CUDA graph: %d capture region(s) %s, concurrent stages per function %s",
                 len(summary.regions), summary.regions, summary.stages)
        return captured

    return _pass


def _fall_back(mod: tvm.IRModule, problems: list[str]) -> tvm.IRModule:
    msg = ("ios_tvm: the scheduled run cannot be captured as a CUDA graph without cutting a stage; "
           "building it without a graph:\n  " + "\n  ".join(problems[:10]))
    log.warning(msg)
    warnings.warn(msg, CUDAGraphWarning, stacklevel=2)
    return mod
