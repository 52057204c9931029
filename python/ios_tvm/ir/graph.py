"""The operator graph IOS schedules: kernel launches of a Relax model lowered by TVM's own passes.

:func:`lower_for_graph` runs the fusion part of TVM's default pipeline for the target
(:func:`ios_tvm.ir.backend.fusion_passes`: library dispatch, ``LegalizeOps``, ``AnnotateTIROpPattern``,
``FoldConstant``, ``FuseOps``, ``FuseTIR``, ``RewriteDataflowReshape``), so one node is one
kernel the compiled model launches.
:func:`extract_graph` then reads the dataflow block of ``main``: every ``call_tir`` /
``call_dps_packed`` / ``call_pure_packed`` binding is a node; free bindings (tuples,
tuple-get-item, reshape views, constants) are folded into edges. Each node keeps the name of the
variable it binds, its link back to the binding.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import tvm
from tvm import relax

from ..errors import UnsupportedModelError
from .backend import fusion_passes
from .target import as_target

GRAPH_FORMAT_VERSION = 1

_KERNEL_OPS = ("relax.call_tir", "relax.call_tir_inplace", "relax.call_dps_packed", "relax.call_pure_packed")
# Ops that stay after lowering and launch no kernel (views, metadata).
_FREE_OPS = ("relax.reshape", "relax.memory.view", "relax.memory.ensure_zero_offset", "relax.null_value",
             "relax.shape_of", "relax.hint_on_device", "relax.to_vdevice")


def is_kernel_call(value: Any) -> bool:
    """Whether a binding's value launches a kernel (``call_tir`` and friends)."""
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _KERNEL_OPS


def call_args(value: relax.Call) -> list[Any]:
    """The argument list of a kernel call (the fields of its argument tuple)."""
    args = value.args[1] if len(value.args) > 1 else relax.Tuple([])
    return list(args.fields) if isinstance(args, relax.Tuple) else [args]


def tensor_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of a dense tensor."""
    return math.prod(shape) * tvm.runtime.DataType(dtype).bits // 8


def _static_shape(ty: Any, what: str) -> tuple[int, ...] | None:
    if not isinstance(ty, relax.TensorType):
        return None
    if ty.shape is None:
        raise UnsupportedModelError(
            f"{what} has unknown rank/shape; ios_tvm schedules static-shape models only: give the "
            "input a full static shape")
    dims = []
    for d in ty.shape.values:
        if not isinstance(d, tvm.tirx.IntImm):
            symbols = {str(v.name): 1 for v in tvm.tirx.analysis.undefined_vars(d)} if isinstance(d, tvm.ir.expr.Expr) else {}
            example = ",".join(str(int(x)) if isinstance(x, tvm.tirx.IntImm) else "1" for x in ty.shape.values)
            raise UnsupportedModelError(
                f"{what} has a dynamic shape {ty.shape}; ios_tvm schedules static-shape models "
                f"only: bind the symbolic dimensions first, e.g. relax.transform.BindSymbolicVars("
                f"{symbols or {'n': 1}})(mod) in Python, or give the input a static shape on the command line "
                f"(ios-tvm ... --input-shape NAME={example})")
        dims.append(int(d))
    return tuple(dims)


def check_model(mod: tvm.IRModule, func: str = "main") -> relax.Function:
    """Check that ``mod[func]`` is something ios_tvm can schedule; return the function.

    Raises
    ------
    UnsupportedModelError
        No such Relax function, dynamic input shapes, control flow, or no dataflow block.
    """
    if not isinstance(mod, tvm.IRModule):
        raise TypeError(f"expected a tvm.IRModule, got {type(mod).__name__}")
    names = [gv.name_hint for gv in mod.get_global_vars()]
    if func not in names or not isinstance(mod[func], relax.Function):
        relax_fns = [n for n in names if isinstance(mod[n], relax.Function)]
        raise UnsupportedModelError(f"the module has no Relax function {func!r} (Relax functions: {relax_fns})")
    fn = mod[func]
    for p in fn.params:
        _static_shape(p.ty, f"parameter {p.name!r} of {func}")
    body = fn.body
    if not isinstance(body, relax.SeqExpr):
        raise UnsupportedModelError(f"{func} has no binding blocks to schedule")
    has_dataflow = False
    for block in body.blocks:
        has_dataflow |= isinstance(block, relax.DataflowBlock)
        for b in block.bindings:
            if isinstance(b.value, relax.If):
                raise UnsupportedModelError(
                    f"{func} contains control flow (an if/else binding {b.var.name!r}); ios_tvm "
                    "schedules straight-line dataflow graphs only")
    if isinstance(body.body, relax.If):
        raise UnsupportedModelError(f"{func} returns through control flow (if/else); not supported")
    if not has_dataflow:
        raise UnsupportedModelError(
            f"{func} has no dataflow block: ios_tvm schedules the operators of a dataflow block; "
            "build the model inside `with bb.dataflow():` (BlockBuilder) or `with R.dataflow():` "
            "(TVMScript), as TVM's frontends do")
    return fn


def lower_for_graph(mod: tvm.IRModule, target: str | dict | tvm.target.Target) -> tvm.IRModule:
    """Check ``mod`` and run :func:`ios_tvm.ir.backend.fusion_passes` (the fusion part of the very
    pipeline builds run) under ``target``."""
    check_model(mod)
    tgt = as_target(target)
    with tgt:
        return tvm.transform.Sequential(fusion_passes(tgt))(mod)


@dataclass(frozen=True)
class Node:
    """One kernel launch."""

    id: int
    name: str  #: the Relax variable the binding defines
    kernel: str  #: callee: PrimFunc global name or packed function name
    op: str  #: the Relax call op, e.g. ``relax.call_tir``
    inputs: tuple[tuple[tuple[int, ...], str], ...]  #: (shape, dtype) of tensor arguments
    outputs: tuple[tuple[tuple[int, ...], str], ...]  #: (shape, dtype) of results
    flops: float  #: TVM's estimate (``estimate_tir_flops``), 0 when unknown
    bytes: int  #: bytes read + written (arguments + results)

    @property
    def out_elements(self) -> int:
        return sum(math.prod(shape) for shape, _ in self.outputs)


@dataclass
class OpGraph:
    """Kernel-launch DAG of a lowered model. Node ids follow binding order (a topological order).

    Attributes
    ----------
    nodes, edges
        ``edges`` are ``(u, v)``: ``v`` reads what ``u`` wrote (directly or through free
        bindings).
    mod
        The lowered module the graph was read from (not part of equality or the fingerprint).
    source
        The module before lowering, when :func:`extract_graph` lowered it: what builds of the
        graph's kernels start from (lowering the lowered module again annotates its kernels
        anew, and tuning records no longer match them).
    bindings
        ``bindings[i]`` is the ``relax.VarBinding`` of node ``i``.
    """

    nodes: list[Node]
    edges: list[tuple[int, int]]
    target: str = ""
    mod: tvm.IRModule | None = field(default=None, repr=False, compare=False)
    source: tvm.IRModule | None = field(default=None, repr=False, compare=False)
    bindings: list[Any] = field(default_factory=list, repr=False, compare=False)
    merges: Any = field(default=None, repr=False, compare=False)  #: ios_tvm.ir.merge_plan.NodeMerges

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def fingerprint(self) -> str:
        """Content hash of the graph (kernels, shapes, dtypes, edges): a schedule made for one
        graph carries it and is refused by any other."""
        payload = {
            "version": GRAPH_FORMAT_VERSION,
            "nodes": [[n.kernel, n.op, n.inputs, n.outputs] for n in self.nodes],
            "edges": sorted(self.edges),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:32]

    def preds(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for u, v in self.edges:
            out[v].append(u)
        return out

    def summary(self) -> str:
        return f"{len(self.nodes)} kernels, {len(self.edges)} edges"


def _tensor_infos(expr_or_ty: Any, what: str) -> list[tuple[tuple[int, ...], str]]:
    ty = expr_or_ty if isinstance(expr_or_ty, tvm.ir.Type) else expr_or_ty.ty
    if isinstance(ty, relax.TensorType):
        shape = _static_shape(ty, what)
        return [(shape, str(ty.dtype))] if shape is not None else []
    if isinstance(ty, relax.TupleType):
        out = []
        for field_ty in ty.fields:
            out.extend(_tensor_infos(field_ty, what))
        return out
    return []


def _describe(value: Any) -> str:
    """What a binding computes, for messages: the op, packed function or kernel it calls."""
    if isinstance(value, relax.Call):
        if isinstance(value.op, tvm.ir.Op) and value.op.name in _KERNEL_OPS and value.args:
            callee = value.args[0]
            if isinstance(callee, relax.ExternFunc):
                return str(callee.global_symbol)
            if isinstance(callee, tvm.ir.GlobalVar):
                return callee.name_hint
        if isinstance(value.op, tvm.ir.Op):
            return value.op.name
    return type(value).__name__


def _nbytes(infos: list[tuple[tuple[int, ...], str]]) -> int:
    return sum(tensor_bytes(shape, dtype) for shape, dtype in infos)


def extract_graph(mod: tvm.IRModule, target: str | dict | tvm.target.Target | None = None,
                  *, lowered: bool = False) -> OpGraph:
    """Kernel-launch graph of ``mod``.

    Parameters
    ----------
    mod
        A Relax module with ``main``. Unless ``lowered``, it is first lowered with
        :func:`lower_for_graph` for ``target``.
    target
        Target whose fusion decides the kernels (needed unless ``lowered``).
    lowered
        ``mod`` already went through :func:`ios_tvm.ir.backend.fusion_passes`.
    """
    source = None
    if not lowered:
        if target is None:
            raise ValueError("extract_graph needs a target unless lowered=True")
        source, mod = mod, lower_for_graph(mod, target)
    fn = check_model(mod)
    blocks = [b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock)]
    if len(blocks) != 1:
        raise UnsupportedModelError(
            f"main has {len(blocks)} dataflow blocks after lowering; ios_tvm schedules one "
            "dataflow block: build the model with all its operators in one dataflow block")
    for block in fn.body.blocks:
        if isinstance(block, relax.DataflowBlock):
            continue
        for b in block.bindings:
            if is_kernel_call(b.value):
                raise UnsupportedModelError(
                    f"kernel launch {b.var.name!r} lies outside the dataflow block; ios_tvm only "
                    "schedules the dataflow block")

    flops_cache: dict[str, float] = {}
    producers: dict[Any, frozenset[int]] = {}
    nodes: list[Node] = []
    bindings: list[Any] = []
    edges: set[tuple[int, int]] = set()
    for b in blocks[0].bindings:
        value = b.value
        if isinstance(b, relax.MatchCast):
            raise UnsupportedModelError(
                f"binding {b.var.name!r} gets its shape {getattr(b.ty, 'shape', None) or b.ty} from the "
                f"data at run time (a match_cast of {_describe(value)}): ios_tvm schedules static-shape models "
                "only, and operators whose output shape depends on values (NonZero, Unique, a Reshape or "
                "Expand to a computed shape, ...) make it dynamic; remove such operators or give them a "
                "static output shape")
        used = relax.analysis.free_vars(value)
        srcs: frozenset[int] = frozenset().union(*(producers.get(v, frozenset()) for v in used)) if used else frozenset()
        if not is_kernel_call(value):
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name not in _FREE_OPS:
                raise UnsupportedModelError(
                    f"operator {value.op.name} (binding {b.var.name!r}) has no TVM lowering for "
                    "this target, so it cannot be compiled or scheduled; replace it or register "
                    "a legalization (relax.transform.LegalizeOps customize_legalize_map)")
            if isinstance(value, relax.Call) and not isinstance(value.op, tvm.ir.Op):
                raise UnsupportedModelError(
                    f"binding {b.var.name!r} calls a function ({value.op}); inline it or lower it first")
            producers[b.var] = srcs
            continue
        nid = len(nodes)
        callee = value.args[0]
        if isinstance(callee, tvm.ir.GlobalVar):
            kernel = callee.name_hint
            attrs = getattr(mod[callee], "attrs", None)
            if attrs is not None and "ios_tvm.variant_of" in attrs:  # ios_tvm.transform.kernel_schedules: same node
                kernel = str(attrs["ios_tvm.variant_of"])
        elif isinstance(callee, relax.ExternFunc):
            kernel = str(callee.global_symbol)
        else:
            kernel = str(callee)
        inputs: list[tuple[tuple[int, ...], str]] = []
        for a in call_args(value):
            inputs.extend(_tensor_infos(a, f"argument of {b.var.name!r}"))
        outputs = _tensor_infos(b.var, f"result {b.var.name!r}")
        flops = 0.0
        if isinstance(callee, tvm.ir.GlobalVar):
            if kernel not in flops_cache:
                try:
                    from tvm.s_tir.analysis import estimate_tir_flops

                    flops_cache[kernel] = float(estimate_tir_flops(tvm.IRModule({"main": mod[callee]})))
                except Exception:  # some kernels (extern, opaque) have no estimate
                    flops_cache[kernel] = 0.0
            flops = flops_cache[kernel]
        nodes.append(Node(nid, b.var.name, kernel, value.op.name, tuple(inputs), tuple(outputs),
                          flops, _nbytes(inputs) + _nbytes(outputs)))
        bindings.append(b)
        for u in srcs:
            edges.add((u, nid))
        producers[b.var] = frozenset([nid])
    tgt = str(as_target(target)) if target is not None else ""
    return OpGraph(nodes, sorted(edges), tgt, mod, source, bindings)
