"""IOS-Merge, the plan: which convolutions of a model can become one convolution, and the module
that computes them merged (the rewrite that splices it into a build is
:mod:`ios_tvm.transform.merge`).

A *conv unit* is ``conv2d(x, W)`` optionally followed by ``astype(., half)`` (the cast back to
half precision of a float32-accumulating convolution, as :func:`ios_tvm.precision.convert` and
TVM's ``ToMixedPrecision`` make it), ``add(., b)`` (a per-channel bias), ``relu`` and another
``astype`` (a converted model casting up for an operator kept in float32, such as PyTorch's
batch norm), each intermediate used only by the next. Units are *mergeable* when they read the same
``x`` with the same strides, dilation, layout (NCHW/OIHW), dtypes and epilogue, ``groups == 1``,
their weights and biases are constants (so the concatenation happens here, once, not per run),
and their outputs align once every kernel is zero-padded, centred, to the largest kernel size:
``pad_i + (K - k_i) / 2`` is the same for every unit on every side (a 1x1 with pad 0 merges with
a 3x3 with pad 1; a 1x3 with a 3x1; a 3x3 with pad 0 and a 3x3 with pad 1 do not).

One path, plan then rewrite:

1. *plan*, on the model as given (``ios_tvm.optimize``, ``ios_tvm.build``): :func:`find_units`
   reads the conv units of ``main``; :func:`node_merges` maps each to the kernel of the fused
   graph that computes exactly it (the only kernel taking the unit's weight constant, the same
   object: TVM's passes keep constants they do not fold) and groups the kernels into families;
   :meth:`NodeMerges.candidates` lists the subsets that merge, which the search may choose as
   merge stages;
2. *rewrite*, at lowering (:func:`ios_tvm.transform.LowerSchedule`, in the build pipeline right
   after fusion): :func:`splice_merges` lowers :func:`merged_module` (one ``conv2d`` over the
   concatenated output channels, + casts, + bias, + relu, then ``split``; the weights concatenated
   in the model's dtype, so a half model merges half weights) of each merge stage with the
   passes the model went through, and splices its kernels in place of the merged ones.

The bias of a unit is recognised in the forms model builders and TVM's importers give it:

* ``add(conv, c)`` with a constant ``c`` shaped ``(1, C, 1, 1)`` or ``(C, 1, 1)`` (on either
  side of the ``add``): :mod:`ios_tvm.models` with bound weights, hand-written models;
* ``add(conv, reshape(c, [1, C, 1, 1]))``, ``c`` a constant ``(C,)``: the ONNX importer
  (``relax.frontend.onnx.from_onnx``, ``Conv`` with a bias input) and the PyTorch importer
  (``from_exported_program``, with weights as constants or bound by
  :func:`ios_tvm.models.bind_params`); more generally any chain of ``reshape`` / ``expand_dims``
  of a constant, through bindings.

The model is not constant-folded first: ``FoldConstant`` compiles every op it folds (it takes as
long as lowering the whole model), and the views above are all the importers put between a bias
and its ``add``. A ``conv2d`` followed by ``batch_norm`` (PyTorch's ``BatchNorm2d``, which the
importer keeps) is a unit on its own, without bias: TVM's fusion leaves ``batch_norm`` out of the
convolution's kernel, so such convolutions merge and their normalizations run as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from .graph import OpGraph, call_args

#: ops that change a tensor's shape, not its elements (a bias may reach its ``add`` through them)
_VIEW_OPS = ("relax.reshape", "relax.expand_dims")


@dataclass(frozen=True)
class ConvUnit:
    """One conv (+ cast) (+ bias) (+ relu) (+ cast) chain of the model."""

    index: int  #: position of the conv binding in the dataflow block
    conv: Any  #: the conv binding's var
    output: Any  #: the var of the unit's last binding
    bindings: tuple[Any, ...]  #: vars of the chain, conv first
    data: Any  #: the input var
    weight: np.ndarray
    bias: np.ndarray | None
    relu: bool
    padding: tuple[int, int, int, int]  #: top, left, bottom, right
    key: tuple  #: what must be equal for units to merge (besides alignment)
    weight_expr: Any = None  #: the weight constant (identifies the unit's kernel after fusion)
    attrs: Any = None  #: the conv2d attributes
    cast: str | None = None  #: the dtype the conv's result is cast to (half models), if any
    out_cast: str | None = None  #: the dtype the unit's result is cast to at its end, if any

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])


def _const(expr: Any) -> np.ndarray | None:
    value = getattr(expr, "value", None)
    if isinstance(expr, tvm.ir.expr.GenericConst) and isinstance(value, tvm.runtime.Tensor):
        return value.numpy()
    return None


def _op_name(value: Any) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def _shape(expr: Any) -> tuple[int, ...] | None:
    """The static shape of a tensor expression, ``None`` if it has none."""
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    return tuple(int(d) for d in dims) if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def _constant_through_views(expr: Any, defs: dict[Any, Any]) -> np.ndarray | None:
    """The values of ``expr`` when it is a constant, or a chain of ``reshape`` / ``expand_dims``
    of one (through the bindings ``defs``: var -> value). Both keep the order of the elements."""
    while True:
        value = _const(expr)
        if value is not None:
            return value
        if isinstance(expr, relax.Var) and expr in defs:
            expr = defs[expr]
        elif _op_name(expr) in _VIEW_OPS:
            expr = expr.args[0]
        else:
            return None


def _channel_bias(expr: Any, defs: dict[Any, Any], channels: int) -> np.ndarray | None:
    """Per-channel bias values of an ``add`` operand of an NCHW conv output: shaped
    ``(1, C, 1, 1)`` or ``(C, 1, 1)``, with constant values (see :func:`_constant_through_views`)."""
    if _shape(expr) not in ((1, channels, 1, 1), (channels, 1, 1)):
        return None
    values = _constant_through_views(expr, defs)
    return None if values is None or values.size != channels else values.reshape(-1)


@dataclass
class _Uses:
    """How the bindings of a dataflow block use each other."""

    count: dict[Any, int]  #: var -> number of bindings (and the block's result) using it
    user: dict[Any, Any]  #: var -> a binding using it (the only one when ``count`` is 1)
    defs: dict[Any, Any]  #: var -> the value bound to it

    @classmethod
    def of(cls, bindings: Sequence[Any], result: Any) -> _Uses:
        count: dict[Any, int] = {}
        user: dict[Any, Any] = {}
        for b in bindings:
            for v in relax.analysis.free_vars(b.value):
                count[v] = count.get(v, 0) + 1
                user[v] = b
        for v in relax.analysis.free_vars(result):
            count[v] = count.get(v, 0) + 1
        return cls(count, user, {b.var: b.value for b in bindings})

    def only_user(self, var: Any, op: str) -> Any:
        """The binding that is ``var``'s only use, if it calls ``op``; else ``None``."""
        nxt = self.user.get(var)
        if self.count.get(var) == 1 and nxt is not None and _op_name(nxt.value) == op:
            return nxt
        return None


def _bias_of(add: relax.Call, out: Any, uses: _Uses, channels: int) -> np.ndarray | None:
    """The bias ``add`` adds to ``out`` (on either side), if it is a per-channel constant."""
    lhs, rhs = add.args
    other = rhs if lhs.same_as(out) else lhs if rhs.same_as(out) else None
    return None if other is None else _channel_bias(other, uses.defs, channels)


def _unit_at(index: int, binding: Any, uses: _Uses) -> ConvUnit | None:
    """The conv unit starting at ``binding`` (a ``conv2d``), if it can take part in a merge."""
    call = binding.value
    a = call.attrs
    x, w = call.args
    weight = _const(w)
    if (weight is None or int(a.groups) != 1 or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW"
            or not isinstance(x, relax.Var) or _shape(binding.var) is None):
        return None
    chain = [binding.var]
    cast = None
    nxt = uses.only_user(chain[-1], "relax.astype")
    if nxt is not None:  # conv2d(out_dtype=float32) -> astype(half): a converted model's conv
        cast = str(nxt.value.attrs.dtype)
        chain.append(nxt.var)
    bias = None
    nxt = uses.only_user(chain[-1], "relax.add")
    if nxt is not None:
        bias = _bias_of(nxt.value, chain[-1], uses, weight.shape[0])
        if bias is not None:
            chain.append(nxt.var)
    nxt = uses.only_user(chain[-1], "relax.nn.relu")
    relu = nxt is not None
    if relu:
        chain.append(nxt.var)
    out_cast = None
    nxt = uses.only_user(chain[-1], "relax.astype") if cast is not None else None
    if nxt is not None:  # a half model casting up for an op kept in float32 (batch norm)
        out_cast = str(nxt.value.attrs.dtype)
        chain.append(nxt.var)
    shape = _shape(binding.var)
    key = (x, tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation), str(binding.var.ty.dtype),
           str(a.out_dtype), shape[0], shape[2:], cast, bias is not None, relu, out_cast)
    pad = tuple(int(p) for p in a.padding)
    return ConvUnit(index, binding.var, chain[-1], tuple(chain), x, weight, bias, relu, pad, key,  # type: ignore[arg-type]
                    w, a, cast, out_cast)


def find_units(fn: relax.Function) -> list[ConvUnit]:
    """Every conv unit of ``fn``'s dataflow block that could take part in a merge."""
    block = next((b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock)), None)
    if block is None:
        return []
    bindings = list(block.bindings)
    uses = _Uses.of(bindings, fn.body.body)
    units = []
    for i, b in enumerate(bindings):
        if _op_name(b.value) == "relax.nn.conv2d":
            unit = _unit_at(i, b, uses)
            if unit is not None:
                units.append(unit)
    return units


def _aligned_padding(units: Sequence[ConvUnit]) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
    kh = max(u.kernel[0] for u in units)
    kw = max(u.kernel[1] for u in units)
    pads = set()
    for u in units:
        dh, dw = kh - u.kernel[0], kw - u.kernel[1]
        if dh % 2 or dw % 2:
            return None
        t, l, bo, r = u.padding
        pads.add((t + dh // 2, l + dw // 2, bo + dh // 2, r + dw // 2))
    if len(pads) != 1:
        return None
    return (kh, kw), pads.pop()


def mergeable(units: Sequence[ConvUnit]) -> bool:
    """Whether these units can become one convolution."""
    return (len(units) >= 2 and len({u.key for u in units}) == 1
            and len({id(u) for u in units}) == len(units) and _aligned_padding(units) is not None)


def merged_weights(units: Sequence[ConvUnit]) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """Concatenated, centred zero-padded weights (and biases), and the merged padding."""
    aligned = _aligned_padding(units)
    if aligned is None:
        raise ValueError("these convolutions do not align after padding their kernels")
    (kh, kw), padding = aligned
    ws = []
    for u in units:
        dh, dw = (kh - u.kernel[0]) // 2, (kw - u.kernel[1]) // 2
        ws.append(np.pad(u.weight, ((0, 0), (0, 0), (dh, dh), (dw, dw))))
    bias = np.concatenate([u.bias for u in units]) if units[0].bias is not None else None
    return np.concatenate(ws, axis=0), bias, padding


def _out_dtype(attrs: Any) -> str | None:
    dt = attrs.out_dtype
    return None if dt is None or str(dt) in ("", "void") else str(dt)


# -- merges at the level of the kernel graph --------------------------------------------------------

@dataclass
class NodeMerges:
    """Which kernels of a graph are conv units, and which sets of them may merge.

    ``units[node]`` is the conv unit a kernel computes (exactly: its inputs are the unit's input,
    weight and bias, its output the unit's output); ``families`` group nodes that could merge.
    """

    units: dict[int, ConvUnit]
    families: list[list[int]]

    def can_merge(self, nodes: Sequence[int]) -> bool:
        """Whether the kernels ``nodes`` compute conv units that merge into one convolution
        (what :meth:`ios_tvm.core.schedule.Schedule.validate` asks of a merge stage)."""
        return all(v in self.units for v in nodes) and mergeable([self.units[v] for v in nodes])

    def candidates(self, max_family: int = 8) -> list[tuple[int, ...]]:
        """Every subset (>= 2 nodes) of a family that merges, from the first ``max_family``
        members of each family."""
        from itertools import combinations

        out = []
        for fam in self.families:
            fam = fam[:max_family]
            for k in range(2, len(fam) + 1):
                for sub in combinations(fam, k):
                    if mergeable([self.units[v] for v in sub]):
                        out.append(tuple(sub))
        return out


def _kernel_of(unit: ConvUnit, graph: Any) -> int | None:
    """The node of ``graph`` computing exactly ``unit``: the only kernel with the unit's weight
    constant among its arguments, called as ``(input, weight[, bias])`` with the unit's output."""
    nodes = [i for i, b in enumerate(graph.bindings) if any(a.same_as(unit.weight_expr) for a in call_args(b.value))]
    if len(nodes) != 1:
        return None
    n = graph.nodes[nodes[0]]
    args = call_args(graph.bindings[nodes[0]].value)
    want_inputs = 2 + (unit.bias is not None)
    if (len(args) != want_inputs or len(n.inputs) != want_inputs or not args[1].same_as(unit.weight_expr)
            or _const(args[0]) is not None):
        return None  # the kernel does more (or less) than the unit, or takes its input elsewhere
    if len(n.outputs) != 1 or n.outputs[0][0] != _shape(unit.output) or not re.fullmatch(_kernel_name(unit), n.kernel):
        return None
    return nodes[0]


def _kernel_name(unit: ConvUnit) -> str:
    """A pattern of the name of the kernel fusion makes of exactly ``unit``'s ops: FuseOps names
    a fused kernel ``fused_`` + the names of the legalized ops (``conv2d``, ``cast``, ``add``, ``relu``, ``cast``, each
    with a number when taken). A kernel also computing what follows the unit (a ``tanh`` after
    the bias, ``add(y, y)`` after a bare conv) has other arguments or another name."""
    ops = (["conv2d"] + ["cast"] * (unit.cast is not None) + ["add"] * (unit.bias is not None) + ["relu"] * unit.relu
           + ["cast"] * (unit.out_cast is not None))
    name = "_".join(rf"{op}\d*" for op in ops)
    return name if len(ops) == 1 else "fused_" + name


def node_merges(mod: tvm.IRModule, graph: OpGraph, func: str = "main") -> NodeMerges:
    """Map the conv units of ``mod`` (before lowering) to the kernels of its ``graph``
    (``extract_graph(mod, target)``) and group them into families that could merge."""
    node_of: dict[int, ConvUnit] = {}
    for u in find_units(mod[func]):
        node = _kernel_of(u, graph)
        if node is not None:
            node_of[node] = u
    fams: dict[tuple, list[int]] = {}
    for node, u in sorted(node_of.items()):
        fams.setdefault(u.key, []).append(node)
    return NodeMerges(node_of, [f for f in fams.values() if len(f) >= 2])


def merged_module(units: Sequence[ConvUnit], zero_weights: bool = False) -> tvm.IRModule:
    """A module ``main(x)`` computing the merged kernel of ``units``: conv (+ cast) (+ bias) (+ relu) (+ cast),
    then ``split`` into a tuple, one tensor per unit (in ``units`` order)."""
    units = list(units)
    weight, bias, padding = merged_weights(units)
    if zero_weights:
        weight = np.zeros_like(weight)
        bias = None if bias is None else np.zeros_like(bias)
    x_ty = units[0].data.ty
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([int(d) for d in x_ty.shape], str(x_ty.dtype)))
    a = units[0].attrs
    dtype = str(units[0].weight.dtype)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(weight, dtype), strides=list(a.strides), padding=list(padding),
                                    dilation=list(a.dilation), out_dtype=_out_dtype(a)))
            if units[0].cast is not None:
                y = bb.emit(R.astype(y, units[0].cast))
            if bias is not None:
                y = bb.emit(R.add(y, relax.const(bias.reshape(1, -1, 1, 1), str(bias.dtype))))
            if units[0].relu:
                y = bb.emit(R.nn.relu(y))
            if units[0].out_cast is not None:
                y = bb.emit(R.astype(y, units[0].out_cast))
            bounds = [int(b) for b in np.cumsum([u.channels for u in units])[:-1]]
            out = bb.emit_output(bb.emit(R.split(y, bounds, axis=1)))
        bb.emit_func_output(out)
    return bb.get()
