"""IOS-Merge, the plan: which operators of a model that read the same input can become one wider
kernel, and the module that computes them merged (the rewrite that splices it into a build is
:mod:`ios_tvm.transform.merge`).

The operators that merge are *units* (:mod:`ios_tvm.ir.merge_units`): a head with a constant
weight (a ``conv2d``: :class:`ConvUnit`; a ``matmul`` with a 2-D weight, a linear layer:
:class:`MatmulUnit`) and its epilogue (cast, per-channel bias, activation, cast). Units are
*mergeable* when they have the same kind and key (the same input, attributes, dtypes and
epilogue; their weights and biases constants, so the concatenation happens here, once, not per
run) and their kind aligns them (convolutions: their outputs align once every kernel is
zero-padded, centred, to the largest kernel size; matmuls always do). The merged kernel is one
head over the concatenated output channels, its epilogue, then ``split`` along the channel axis
(axis 1 for convolutions, the last axis for matmuls): every kind goes through the one path below.

One path, plan then rewrite:

1. *plan*, on the model as given (``ios_tvm.optimize``, ``ios_tvm.build``): :func:`find_units`
   reads the units of ``main``; :func:`node_merges` maps each to the kernel of the fused graph
   that computes exactly it (the only kernel taking the unit's weight: the constant with the
   same values, since TVM's ``FoldConstant`` folds the transposes importers put before a linear
   layer's weight into a new constant; its name is that of exactly the unit's ops) and groups the
   kernels into families; :meth:`NodeMerges.candidates` lists the subsets that merge, which the
   search may choose as merge stages;
2. *rewrite*, at lowering (:func:`ios_tvm.transform.LowerSchedule`, in the build pipeline right
   after fusion): :func:`ios_tvm.transform.merge.splice_merges` lowers :func:`merged_module` (the
   merged head, + casts, + bias, + activation, then ``split``; the weights concatenated in the
   model's dtype, so a half model merges half weights) of each merge stage with the passes the
   model went through, and splices its kernels in place of the merged ones.

The bias of a unit is recognised in the forms model builders and TVM's importers give it: a
constant, or a chain of ``reshape`` / ``expand_dims`` of one (the ONNX importer's ``Conv`` with a
bias input and PyTorch's importer reshape a ``(C,)`` bias to ``(1, C, 1, 1)``; linear layers add
a ``(N,)`` bias, PyTorch's importer on the left of the ``add``), through bindings.

The model is not constant-folded first: ``FoldConstant`` compiles every op it folds (it takes as
long as lowering the whole model), and the views above are all the importers put between a weight
or bias and its use (:func:`~ios_tvm.ir.merge_units.constant_value` evaluates them with NumPy). A
``conv2d`` followed by ``batch_norm`` (PyTorch's ``BatchNorm2d``, which the importer keeps) is a
unit on its own, without bias: TVM's fusion leaves ``batch_norm`` out of the convolution's kernel,
so such convolutions merge and their normalizations run as before. A matmul whose weight is not
constant (a module that ``relax.transform.CombineParallelMatmul`` processed before its weights
were bound: ``matmul(x, concat(W1, W2, W3))``) is no unit: nothing is merged twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from .graph import OpGraph, call_args
from .merge_units import UNIT_KINDS, ConvUnit, MatmulUnit, MergeUnit, Uses, const_array, op_name, static_shape

__all__ = ["MergeUnit", "ConvUnit", "MatmulUnit", "find_units", "mergeable", "merged_weights", "NodeMerges",
           "node_merges", "merged_module"]


def find_units(fn: relax.Function) -> list[MergeUnit]:
    """Every unit (of every kind) of ``fn``'s dataflow block that could take part in a merge,
    in binding order."""
    block = next((b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock)), None)
    if block is None:
        return []
    bindings = list(block.bindings)
    uses = Uses.of(bindings, fn.body.body)
    units = []
    for i, b in enumerate(bindings):
        kind = UNIT_KINDS.get(op_name(b.value))  # type: ignore[arg-type]
        unit = kind.read(i, b, uses) if kind is not None else None
        if unit is not None:
            units.append(unit)
    return units


def mergeable(units: Sequence[MergeUnit]) -> bool:
    """Whether these units can become one kernel."""
    return (len(units) >= 2 and len({u.key for u in units}) == 1
            and len({id(u) for u in units}) == len(units) and type(units[0]).aligned(units))


def merged_weights(units: Sequence[MergeUnit]) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """The merged head's weight, the concatenated biases (``None`` without), and what else the
    merged head needs (a convolution's merged padding; ``None`` for matmuls).

    Raises
    ------
    ValueError
        Convolutions that do not align after padding their kernels.
    """
    return type(units[0]).merged_weights(units)


# -- merges at the level of the kernel graph --------------------------------------------------------

@dataclass
class NodeMerges:
    """Which kernels of a graph compute units, and which sets of them may merge.

    ``units[node]`` is the unit a kernel computes (exactly: its inputs are the unit's input,
    weight and bias, its output the unit's output); ``families`` group nodes that could merge.
    """

    units: dict[int, MergeUnit]
    families: list[list[int]]

    def can_merge(self, nodes: Sequence[int]) -> bool:
        """Whether the kernels ``nodes`` compute units that merge into one kernel (what
        :meth:`ios_tvm.core.schedule.Schedule.validate` asks of a merge stage)."""
        return all(v in self.units for v in nodes) and mergeable([self.units[v] for v in nodes])

    def candidates(self, max_family: int = 8) -> list[tuple[int, ...]]:
        """Every subset (>= 2 nodes) of a family that merges, from the first ``max_family``
        members of each family."""
        out = []
        for fam in self.families:
            fam = fam[:max_family]
            for k in range(2, len(fam) + 1):
                for sub in combinations(fam, k):
                    if mergeable([self.units[v] for v in sub]):
                        out.append(tuple(sub))
        return out


def _digest(values: np.ndarray) -> tuple:
    """What identifies a constant by its values: shape, dtype and a hash of its bytes."""
    return values.shape, str(values.dtype), hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _weight_kernels(units: Sequence[MergeUnit], graph: Any) -> dict[tuple, list[int]]:
    """Digest of each units' weight -> the kernels of ``graph`` that take a constant with those
    values as their second argument (only constants shaped like some unit's weight are read)."""
    shapes = {(u.weight.shape, str(u.weight.dtype)) for u in units}
    found: dict[tuple, list[int]] = {}
    for i, b in enumerate(graph.bindings):
        for a in call_args(b.value)[1:2]:
            ty = getattr(a, "ty", None)
            if not isinstance(a, tvm.ir.expr.GenericConst) or not isinstance(ty, relax.TensorType):
                continue
            if (static_shape(a), str(ty.dtype)) in shapes:
                found.setdefault(_digest(const_array(a)), []).append(i)  # type: ignore[arg-type]
    return found


def _kernel_of(unit: MergeUnit, graph: Any, by_weight: dict[tuple, list[int]]) -> int | None:
    """The node of ``graph`` computing exactly ``unit``: the only kernel with the unit's weight
    (by value) as its second argument, called as ``(input, weight[, bias])``, with the unit's
    output and the name fusion gives exactly the unit's ops."""
    nodes = by_weight.get(_digest(unit.weight), [])
    if len(nodes) != 1:
        return None  # none, or several kernels with these very weights: which is the unit's is unknown
    n = graph.nodes[nodes[0]]
    args = call_args(graph.bindings[nodes[0]].value)
    want_inputs = 2 + (unit.bias is not None)
    if len(args) != want_inputs or len(n.inputs) != want_inputs or const_array(args[0]) is not None:
        return None  # the kernel does more (or less) than the unit, or takes its input elsewhere
    if len(n.outputs) != 1 or n.outputs[0][0] != unit.out_shape or not re.fullmatch(_kernel_name(unit), n.kernel):
        return None
    return nodes[0]


def _kernel_name(unit: MergeUnit) -> str:
    """A pattern of the name of the kernel fusion makes of exactly ``unit``'s ops: FuseOps names
    a fused kernel ``fused_`` + the names of the legalized ops (``conv2d`` or ``matmul``,
    ``cast``, ``add``, the activation, ``cast``, each with a number when taken). A kernel also
    computing what follows the unit (a ``tanh`` after the bias, ``add(y, y)`` after a bare conv)
    has other arguments or another name."""
    ops = ([unit.kind] + ["cast"] * (unit.cast is not None) + ["add"] * (unit.bias is not None)
           + [unit.activation] * (unit.activation is not None) + ["cast"] * (unit.out_cast is not None))
    name = "_".join(rf"{op}\d*" for op in ops)
    return name if len(ops) == 1 else "fused_" + name


def node_merges(mod: tvm.IRModule, graph: OpGraph, func: str = "main") -> NodeMerges:
    """Map the units of ``mod`` (before lowering) to the kernels of its ``graph``
    (``extract_graph(mod, target)``) and group them into families that could merge."""
    units = find_units(mod[func])
    by_weight = _weight_kernels(units, graph) if units else {}
    node_of: dict[int, MergeUnit] = {}
    for u in units:
        node = _kernel_of(u, graph, by_weight)
        if node is not None:
            node_of[node] = u
    fams: dict[tuple, list[int]] = {}
    for node, u in sorted(node_of.items()):
        fams.setdefault(u.key, []).append(node)
    return NodeMerges(node_of, [f for f in fams.values() if len(f) >= 2])


def merged_module(units: Sequence[MergeUnit], zero_weights: bool = False) -> tvm.IRModule:
    """A module ``main(x)`` computing the merged kernel of ``units``: the merged head (+ cast)
    (+ bias) (+ activation) (+ cast), then ``split`` along the channel axis into a tuple, one
    tensor per unit (in ``units`` order). ``zero_weights``: zeros in place of the weights (what
    a measurement needs, at the same cost)."""
    units = list(units)
    kind = type(units[0])
    weight, bias, extra = merged_weights(units)
    if zero_weights:
        weight = np.zeros_like(weight)
        bias = None if bias is None else np.zeros_like(bias)
    x_ty = units[0].data.ty
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([int(d) for d in x_ty.shape], str(x_ty.dtype)))
    first = units[0]
    rank = len(first.out_shape)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = kind.emit_head(bb, x, relax.const(weight, str(weight.dtype)), extra, units)
            if first.cast is not None:
                y = bb.emit(R.astype(y, first.cast))
            if bias is not None:
                y = bb.emit(R.add(y, relax.const(bias.reshape(kind.bias_shape(len(bias), rank)), str(bias.dtype))))
            if first.activation is not None:
                y = bb.emit(getattr(R.nn, first.activation)(y))  # relu, gelu, gelu_tanh, silu
            if first.out_cast is not None:
                y = bb.emit(R.astype(y, first.out_cast))
            bounds = [int(b) for b in np.cumsum([u.channels for u in units])[:-1]]
            out = bb.emit_output(bb.emit(R.split(y, bounds, axis=kind.channel_axis % rank)))
        bb.emit_func_output(out)
    return bb.get()

