"""IOS-Merge: several convolutions reading the same input become one convolution.

A *conv unit* is ``conv2d(x, W)`` optionally followed by ``add(., b)`` (a per-channel bias) and
``relu``, each intermediate used only by the next. Units are *mergeable* when they read the same
``x`` with the same strides, dilation, layout (NCHW/OIHW), dtype and epilogue, ``groups == 1``,
their weights and biases are constants (so the concatenation happens here, once, not per run),
and their outputs align once every kernel is zero-padded, centred, to the largest kernel size:
``pad_i + (K - k_i) / 2`` is the same for every unit on every side (a 1x1 with pad 0 merges with
a 3x3 with pad 1; a 1x3 with a 3x1; a 3x3 with pad 0 and a 3x3 with pad 1 do not).

:func:`find_families` plans (which units could merge with which), :func:`merge_units` rewrites:
one ``conv2d`` over the concatenated output channels (+ bias, + relu), then ``split`` hands each
former consumer its channels. This runs *before* legalization, on the model as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R
from tvm.relax.expr_functor import PyExprMutator, mutator

from .graph import call_args


@dataclass(frozen=True)
class ConvUnit:
    """One conv (+ bias) (+ relu) chain of the model."""

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


def find_units(fn: relax.Function) -> list[ConvUnit]:
    """Every conv unit of ``fn``'s dataflow block that could take part in a merge."""
    block = next((b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock)), None)
    if block is None:
        return []
    bindings = list(block.bindings)
    uses: dict[Any, int] = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            uses[v] = uses.get(v, 0) + 1
    for v in relax.analysis.free_vars(fn.body.body):
        uses[v] = uses.get(v, 0) + 1
    user: dict[Any, Any] = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            user[v] = b
    units = []
    for i, b in enumerate(bindings):
        if _op_name(b.value) != "relax.nn.conv2d":
            continue
        call = b.value
        a = call.attrs
        x, w = call.args
        weight = _const(w)
        if weight is None or int(a.groups) != 1 or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
            continue
        if not isinstance(x, relax.Var) or not isinstance(b.var.ty, relax.TensorType):
            continue
        chain = [b.var]
        out = b.var
        bias = None
        relu = False
        nxt = user.get(out)
        if uses.get(out) == 1 and nxt is not None and _op_name(nxt.value) == "relax.add" and nxt.value.args[0].same_as(out):
            bvals = _const(nxt.value.args[1])
            if bvals is not None and bvals.size == weight.shape[0] and bvals.shape in (
                    (1, weight.shape[0], 1, 1), (weight.shape[0], 1, 1)):
                bias = bvals.reshape(-1)
                out = nxt.var
                chain.append(out)
                nxt = user.get(out)
        if uses.get(out) == 1 and nxt is not None and _op_name(nxt.value) == "relax.nn.relu":
            relu = True
            out = nxt.var
            chain.append(out)
        shape = tuple(int(d) for d in b.var.ty.shape)
        key = (x, tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation), str(b.var.ty.dtype),
               str(a.out_dtype), shape[0], shape[2:], bias is not None, relu)
        pad = tuple(int(p) for p in a.padding)
        units.append(ConvUnit(i, b.var, out, tuple(chain), x, weight, bias, relu, pad, key,  # type: ignore[arg-type]
                              w, a))
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


def find_families(fn: relax.Function) -> list[list[ConvUnit]]:
    """Units grouped by what must be equal to merge (same input, strides, ...); families of one
    are dropped. Any subset of a family whose paddings align can merge."""
    groups: dict[tuple, list[ConvUnit]] = {}
    for u in find_units(fn):
        groups.setdefault(u.key, []).append(u)
    return [g for g in groups.values() if len(g) >= 2]


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


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, sets: list[list[ConvUnit]], mod: tvm.IRModule, attrs: dict) -> None:
        super().__init__(mod)
        self._attrs = attrs
        self.first = {s[0].conv: s for s in sets}
        self.drop = {v for s in sets for u in s for v in u.bindings}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var = binding.var
        if var in self.first:
            units = self.first[var]
            weight, bias, padding = merged_weights(units)
            a = self._attrs[var]  # strides / dilation / out_dtype are shared by the family
            x = self.visit_expr(units[0].data)
            dtype = str(units[0].weight.dtype)
            y = self.builder_.emit(R.nn.conv2d(x, relax.const(weight, dtype), strides=list(a.strides), padding=list(padding),
                                               dilation=list(a.dilation), out_dtype=_out_dtype(a)), "ios_merged")
            if bias is not None:
                y = self.builder_.emit(R.add(y, relax.const(bias.reshape(1, -1, 1, 1), dtype)))
            if units[0].relu:
                y = self.builder_.emit(R.nn.relu(y))
            bounds = list(np.cumsum([u.channels for u in units])[:-1])
            parts = self.builder_.emit(R.split(y, [int(b) for b in bounds], axis=1), "ios_split")
            for k, u in enumerate(units):
                part = self.builder_.emit(relax.TupleGetItem(parts, k))
                self.set_var_remap(u.output, part)
            return
        if var in self.drop:
            return
        super().visit_var_binding_(binding)


def merge_units(mod: tvm.IRModule, sets: Sequence[Sequence[ConvUnit]], func: str = "main") -> tvm.IRModule:
    """Rewrite ``mod[func]``: each set of mergeable units becomes one conv + split.

    ``sets`` must come from :func:`find_units` / :func:`find_families` on this same module, be
    pairwise disjoint and each :func:`mergeable`.
    """
    sets = [sorted(s, key=lambda u: u.index) for s in sets if s]
    seen: set[int] = set()
    for s in sets:
        if not mergeable(s):
            raise ValueError(f"units {[u.conv.name for u in s]} cannot be merged")
        for u in s:
            if u.index in seen:
                raise ValueError(f"unit {u.conv.name} is in two merge sets")
            seen.add(u.index)
    if not sets:
        return mod
    fn = mod[func]
    block = next(b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock))
    attrs = {b.var: b.value.attrs for b in block.bindings if _op_name(b.value) == "relax.nn.conv2d"}
    rw = _Rewriter([list(s) for s in sets], mod, attrs)
    new_fn = rw.visit_expr(fn)
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out[func] = new_fn
    return relax.transform.Normalize()(out)


def merge_all(mod: tvm.IRModule, func: str = "main") -> tvm.IRModule:
    """Merge every family whose members all align (a test and demo helper)."""
    sets = [f for f in find_families(mod[func]) if mergeable(f)]
    return merge_units(mod, sets, func)


# -- merges at the level of the kernel graph --------------------------------------------------------

@dataclass
class NodeMerges:
    """Which kernels of a graph are conv units, and which sets of them may merge.

    ``units[node]`` is the conv unit a kernel computes (exactly: its inputs are the unit's input,
    weight and bias, its output the unit's output); ``families`` group nodes that could merge.
    """

    units: dict[int, ConvUnit]
    families: list[list[int]]

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


def node_merges(mod: tvm.IRModule, graph: Any, func: str = "main") -> NodeMerges:
    """Map the conv units of ``mod`` (before lowering) to the kernels of its ``graph``."""
    units = find_units(mod[func])
    if not units:
        return NodeMerges({}, [])
    node_of: dict[int, ConvUnit] = {}
    for u in units:
        nodes = [i for i, b in enumerate(graph.bindings)
                 if any(a.same_as(u.weight_expr) for a in call_args(b.value))]
        if len(nodes) != 1:
            continue
        n = graph.nodes[nodes[0]]
        want_inputs = 2 + (u.bias is not None)
        out_shape = tuple(int(d) for d in u.output.ty.shape)
        if len(n.inputs) != want_inputs or len(n.outputs) != 1 or n.outputs[0][0] != out_shape:
            continue  # the kernel does more (or less) than the unit: leave it alone
        node_of[nodes[0]] = u
    fams: dict[tuple, list[int]] = {}
    for node, u in sorted(node_of.items()):
        fams.setdefault(u.key, []).append(node)
    return NodeMerges(node_of, [f for f in fams.values() if len(f) >= 2])


def merged_module(units: Sequence[ConvUnit], zero_weights: bool = False) -> tvm.IRModule:
    """A module ``main(x)`` computing the merged kernel of ``units``: conv (+ bias) (+ relu),
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
            if bias is not None:
                y = bb.emit(R.add(y, relax.const(bias.reshape(1, -1, 1, 1), dtype)))
            if units[0].relu:
                y = bb.emit(R.nn.relu(y))
            bounds = [int(b) for b in np.cumsum([u.channels for u in units])[:-1]]
            out = bb.emit_output(bb.emit(R.split(y, bounds, axis=1)))
        bb.emit_func_output(out)
    return bb.get()
