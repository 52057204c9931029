"""IOS-Merge's units, by kind: the chains of operators of a model that can become one wider
kernel (the plan that groups them is :mod:`ios_tvm.ir.merge_plan`).

A *unit* is a head operator with a constant weight, optionally followed by ``astype(., half)``
(the cast back to half precision of a float32-accumulating head, as
:func:`ios_tvm.ir.precision.convert` and TVM's ``ToMixedPrecision`` make it), ``add(., b)`` (a
constant bias per output channel, on either side), an activation (``relu``, ``gelu``,
``gelu_tanh``, ``silu``: elementwise, so it commutes with a split) and another ``astype`` (a
converted model casting up for an operator kept in float32), each intermediate used only by the
next. Two kinds of head:

* :class:`ConvUnit`: ``conv2d(x, W)``, NCHW/OIHW, ``groups == 1``; its output channels are
  axis 1. Convolutions merge when their outputs align once every kernel is zero-padded, centred,
  to the largest kernel size (``pad_i + (K - k_i) / 2`` equal for every unit on every side);
* :class:`MatmulUnit`: ``matmul(x, W)`` with a 2-D weight ``W`` (``K x N``: a linear layer),
  ``x`` of rank >= 2; its output channels are the last axis. The weight may reach the matmul
  through ``permute_dims`` (PyTorch's ``nn.Linear`` through ``from_exported_program``, ONNX
  ``Gemm`` with ``transB``) or views; the input through ``reshape`` (PyTorch's importer
  reshapes the input of every linear layer on its own: such inputs are the same tensor).

Weights and biases are constants (bound: the concatenation happens once, at planning, not per
run), read through the ``reshape`` / ``expand_dims`` / ``permute_dims`` chains the importers put
before them (:func:`constant_value`). A bias is a constant that broadcasts along the output's
channel axis only: ``(1, C, 1, 1)`` or ``(C, 1, 1)`` for a convolution, ``(C,)`` / ``(1, C)`` /
``(1, 1, C)`` for a matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

#: ops that change a tensor's shape, not its elements
VIEW_OPS = ("relax.reshape", "relax.expand_dims")
#: activations a unit may end with: Relax op -> the name of its legalized kernel
ACTIVATIONS = {"relax.nn.relu": "relu", "relax.nn.gelu": "gelu", "relax.nn.gelu_tanh": "gelu_tanh",
               "relax.nn.silu": "silu"}


def op_name(value: Any) -> str | None:
    """The name of the Relax op ``value`` calls, ``None`` if it calls none."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def static_shape(expr: Any) -> tuple[int, ...] | None:
    """The static shape of a tensor expression, ``None`` if it has none."""
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    return tuple(int(d) for d in dims) if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def const_array(expr: Any) -> np.ndarray | None:
    """The values of a constant, ``None`` for anything else."""
    value = getattr(expr, "value", None)
    if isinstance(expr, tvm.ir.expr.GenericConst) and isinstance(value, tvm.runtime.Tensor):
        return value.numpy()
    return None


def constant_value(expr: Any, defs: dict[Any, Any]) -> np.ndarray | None:
    """The values of ``expr`` when it is a constant, or a chain of ``reshape`` / ``expand_dims``
    / ``permute_dims`` of one (through the bindings ``defs``: var -> value), computed with NumPy;
    ``None`` otherwise."""
    value = const_array(expr)
    if value is not None:
        return value
    if isinstance(expr, relax.Var):
        return constant_value(defs[expr], defs) if expr in defs else None
    name = op_name(expr)
    if name not in (*VIEW_OPS, "relax.permute_dims"):
        return None
    inner = constant_value(expr.args[0], defs)
    shape = static_shape(expr)
    if inner is None or shape is None:
        return None
    if name == "relax.permute_dims":
        axes = expr.attrs.axes
        inner = np.transpose(inner, None if axes is None else [int(a) for a in axes])
    return inner.reshape(shape)


def channel_bias(expr: Any, defs: dict[Any, Any], channels: int, out_rank: int, axis: int) -> np.ndarray | None:
    """The per-channel values of an ``add`` operand, if it is a constant (see
    :func:`constant_value`) that broadcasts along axis ``axis`` of a rank-``out_rank`` output
    only: ``channels`` there, 1 elsewhere, no more dimensions than the output."""
    shape = static_shape(expr)
    if shape is None or len(shape) > out_rank or len(shape) < out_rank - axis:
        return None
    at = axis - (out_rank - len(shape))
    if shape[at] != channels or any(d != 1 for i, d in enumerate(shape) if i != at):
        return None
    values = constant_value(expr, defs)
    return None if values is None else values.reshape(-1)


@dataclass
class Uses:
    """How the bindings of a dataflow block use each other."""

    count: dict[Any, int]  #: var -> number of bindings (and the block's result) using it
    user: dict[Any, Any]  #: var -> a binding using it (the only one when ``count`` is 1)
    defs: dict[Any, Any]  #: var -> the value bound to it

    @classmethod
    def of(cls, bindings: Sequence[Any], result: Any) -> Uses:
        count: dict[Any, int] = {}
        user: dict[Any, Any] = {}
        for b in bindings:
            for v in relax.analysis.free_vars(b.value):
                count[v] = count.get(v, 0) + 1
                user[v] = b
        for v in relax.analysis.free_vars(result):
            count[v] = count.get(v, 0) + 1
        return cls(count, user, {b.var: b.value for b in bindings})

    def only_user(self, var: Any, ops: str | tuple[str, ...]) -> Any:
        """The binding that is ``var``'s only use, if it calls one of ``ops``; else ``None``."""
        ops = (ops,) if isinstance(ops, str) else ops
        nxt = self.user.get(var)
        if self.count.get(var) == 1 and nxt is not None and op_name(nxt.value) in ops:
            return nxt
        return None

    def source(self, var: Any) -> Any:
        """``var``, or the tensor it reshapes (through chains of ``reshape``): what it views."""
        while isinstance(var, relax.Var) and op_name(self.defs.get(var)) == "relax.reshape":
            var = self.defs[var].args[0]
        return var


@dataclass(frozen=True)
class MergeUnit:
    """One head (+ cast) (+ bias) (+ activation) (+ cast) chain of the model; see the module
    docstring. Subclasses are the kinds: what the head is and how heads merge."""

    kind: ClassVar[str]  #: the head's legalized kernel name (``conv2d``, ``matmul``)
    head_op: ClassVar[str]  #: the head's Relax op
    channel_axis: ClassVar[int]  #: the output axis the units' outputs are concatenated along

    index: int  #: position of the head binding in the dataflow block
    head: Any  #: the head binding's var
    output: Any  #: the var of the unit's last binding
    bindings: tuple[Any, ...]  #: vars of the chain, head first
    data: Any  #: the head's input var
    weight: np.ndarray  #: the head's weight (OIHW for a convolution, ``K x N`` for a matmul)
    bias: np.ndarray | None  #: one value per output channel
    activation: str | None  #: the activation's kernel name (:data:`ACTIVATIONS`), if any
    key: tuple  #: what must be equal for units to merge (besides :meth:`aligned`)
    attrs: Any = None  #: the head's attributes
    cast: str | None = None  #: the dtype the head's result is cast to (half models), if any
    out_cast: str | None = None  #: the dtype the unit's result is cast to at its end, if any

    @property
    def relu(self) -> bool:
        return self.activation == "relu"

    @property
    def channels(self) -> int:
        """Output channels (the length of the unit's output along :attr:`channel_axis`)."""
        raise NotImplementedError

    @property
    def out_shape(self) -> tuple[int, ...]:
        return static_shape(self.output)  # type: ignore[return-value]

    @property
    def cost_key(self) -> tuple:
        """What, besides its kernel, a measured merge of this unit depends on."""
        raise NotImplementedError

    @classmethod
    def aligned(cls, units: Sequence[MergeUnit]) -> bool:
        """Whether the heads of ``units`` (with equal keys) compute one head's channels each."""
        return True

    @classmethod
    def work_ratio(cls, unit: MergeUnit, units: Sequence[MergeUnit]) -> float:
        """The merged kernel's work for ``unit``'s channels over ``unit``'s own kernel's."""
        return 1.0

    @classmethod
    def merged_weights(cls, units: Sequence[MergeUnit]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The merged head's weight, the concatenated biases, and what else the merged head
        needs (a convolution's padding)."""
        raise NotImplementedError

    @classmethod
    def emit_head(cls, bb: relax.BlockBuilder, x: relax.Var, weight: relax.Expr, extra: Any,
                  units: Sequence[MergeUnit]) -> relax.Var:
        """Emit the merged head on ``x``."""
        raise NotImplementedError

    @classmethod
    def bias_shape(cls, channels: int, out_rank: int) -> tuple[int, ...]:
        """The shape the merged bias is added in."""
        return tuple(channels if i == cls.channel_axis % out_rank else 1 for i in range(out_rank))

    # -- reading a unit from the model ------------------------------------------------------
    @classmethod
    def read(cls, index: int, binding: Any, uses: Uses) -> MergeUnit | None:
        """The unit whose head is ``binding``, if it can take part in a merge."""
        raise NotImplementedError

    @classmethod
    def _chain(cls, index: int, binding: Any, uses: Uses, data: Any, weight: np.ndarray, channels: int,
               head_key: tuple, **fields: Any) -> MergeUnit | None:
        """The unit of the head ``binding``, its epilogue read from the bindings that follow."""
        shape = static_shape(binding.var)
        if shape is None:
            return None
        chain = [binding.var]
        cast = None
        nxt = uses.only_user(chain[-1], "relax.astype")
        if nxt is not None:  # head(out_dtype=float32) -> astype(half): a converted model's head
            cast = str(nxt.value.attrs.dtype)
            chain.append(nxt.var)
        bias = None
        nxt = uses.only_user(chain[-1], "relax.add")
        if nxt is not None:
            lhs, rhs = nxt.value.args
            other = rhs if lhs.same_as(chain[-1]) else lhs if rhs.same_as(chain[-1]) else None
            if other is not None:
                bias = channel_bias(other, uses.defs, channels, len(shape), cls.channel_axis % len(shape))
            if bias is not None:
                chain.append(nxt.var)
        activation = None
        nxt = uses.only_user(chain[-1], tuple(ACTIVATIONS))
        if nxt is not None:
            activation = ACTIVATIONS[op_name(nxt.value)]  # type: ignore[index]
            chain.append(nxt.var)
        out_cast = None
        nxt = uses.only_user(chain[-1], "relax.astype") if cast is not None else None
        if nxt is not None:  # a half model casting up for an op kept in float32 (batch norm)
            out_cast = str(nxt.value.attrs.dtype)
            chain.append(nxt.var)
        key = (cls.kind, *head_key, str(binding.var.ty.dtype), cast, bias is not None, activation, out_cast)
        return cls(index, binding.var, chain[-1], tuple(chain), data, weight, bias,  # type: ignore[call-arg]
                   activation, key, binding.value.attrs, cast, out_cast, **fields)


def out_dtype(attrs: Any) -> str | None:
    """The ``out_dtype`` attribute of a head, ``None`` when it has none (its input's dtype)."""
    dt = attrs.out_dtype
    return None if dt is None or str(dt) in ("", "void") else str(dt)


@dataclass(frozen=True)
class ConvUnit(MergeUnit):
    """A ``conv2d`` (+ cast) (+ bias) (+ activation) (+ cast) chain."""

    kind: ClassVar[str] = "conv2d"
    head_op: ClassVar[str] = "relax.nn.conv2d"
    channel_axis: ClassVar[int] = 1

    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  #: top, left, bottom, right

    @property
    def conv(self) -> Any:
        return self.head

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def cost_key(self) -> tuple:
        return list(self.kernel), list(self.padding)

    @classmethod
    def read(cls, index: int, binding: Any, uses: Uses) -> ConvUnit | None:
        call = binding.value
        a = call.attrs
        x, w = call.args
        weight = constant_value(w, uses.defs)
        shape = static_shape(binding.var)
        if (weight is None or weight.ndim != 4 or int(a.groups) != 1 or str(a.data_layout) != "NCHW"
                or str(a.kernel_layout) != "OIHW" or not isinstance(x, relax.Var) or shape is None):
            return None
        head_key = (x, tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation), str(a.out_dtype),
                    shape[0], shape[2:])
        return cls._chain(index, binding, uses, x, weight, int(weight.shape[0]), head_key,  # type: ignore[return-value]
                          padding=tuple(int(p) for p in a.padding))

    @staticmethod
    def _alignment(units: Sequence[ConvUnit]) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
        kh = max(u.kernel[0] for u in units)
        kw = max(u.kernel[1] for u in units)
        pads = set()
        for u in units:
            dh, dw = kh - u.kernel[0], kw - u.kernel[1]
            if dh % 2 or dw % 2:
                return None
            top, left, bottom, right = u.padding
            pads.add((top + dh // 2, left + dw // 2, bottom + dh // 2, right + dw // 2))
        if len(pads) != 1:
            return None
        return (kh, kw), pads.pop()

    @classmethod
    def aligned(cls, units: Sequence[MergeUnit]) -> bool:
        return cls._alignment(units) is not None  # type: ignore[arg-type]

    @classmethod
    def work_ratio(cls, unit: MergeUnit, units: Sequence[MergeUnit]) -> float:
        kh = max(u.kernel[0] for u in units)  # type: ignore[attr-defined]
        kw = max(u.kernel[1] for u in units)  # type: ignore[attr-defined]
        return (kh * kw) / (unit.kernel[0] * unit.kernel[1])  # type: ignore[attr-defined]

    @classmethod
    def merged_weights(cls, units: Sequence[MergeUnit]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """Concatenated, centred zero-padded weights (and biases), and the merged padding."""
        aligned = cls._alignment(units)  # type: ignore[arg-type]
        if aligned is None:
            raise ValueError("these convolutions do not align after padding their kernels")
        (kh, kw), padding = aligned
        ws = []
        for u in units:
            dh, dw = (kh - u.kernel[0]) // 2, (kw - u.kernel[1]) // 2  # type: ignore[attr-defined]
            ws.append(np.pad(u.weight, ((0, 0), (0, 0), (dh, dh), (dw, dw))))
        bias = np.concatenate([u.bias for u in units]) if units[0].bias is not None else None  # type: ignore[misc]
        return np.concatenate(ws, axis=0), bias, padding

    @classmethod
    def emit_head(cls, bb: relax.BlockBuilder, x: relax.Var, weight: relax.Expr, extra: Any,
                  units: Sequence[MergeUnit]) -> relax.Var:
        a = units[0].attrs
        return bb.emit(R.nn.conv2d(x, weight, strides=list(a.strides), padding=list(extra),
                                   dilation=list(a.dilation), out_dtype=out_dtype(a)))


@dataclass(frozen=True)
class MatmulUnit(MergeUnit):
    """A ``matmul`` (+ cast) (+ bias) (+ activation) (+ cast) chain: a linear layer."""

    kind: ClassVar[str] = "matmul"
    head_op: ClassVar[str] = "relax.matmul"
    channel_axis: ClassVar[int] = -1

    @property
    def channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def cost_key(self) -> tuple:
        return (list(self.weight.shape),)

    @classmethod
    def read(cls, index: int, binding: Any, uses: Uses) -> MatmulUnit | None:
        x, w = binding.value.args
        x_shape = static_shape(x)
        weight = constant_value(w, uses.defs)
        if (weight is None or weight.ndim != 2 or not isinstance(x, relax.Var) or x_shape is None
                or len(x_shape) < 2 or constant_value(x, uses.defs) is not None):
            return None
        head_key = (uses.source(x), x_shape, str(x.ty.dtype), str(binding.value.attrs.out_dtype),
                    int(weight.shape[0]))
        return cls._chain(index, binding, uses, x, weight, int(weight.shape[1]), head_key)  # type: ignore[return-value]

    @classmethod
    def merged_weights(cls, units: Sequence[MergeUnit]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The weights side by side (``K x sum N``) and the biases concatenated."""
        bias = np.concatenate([u.bias for u in units]) if units[0].bias is not None else None  # type: ignore[misc]
        return np.concatenate([u.weight for u in units], axis=1), bias, None

    @classmethod
    def emit_head(cls, bb: relax.BlockBuilder, x: relax.Var, weight: relax.Expr, extra: Any,
                  units: Sequence[MergeUnit]) -> relax.Var:
        return bb.emit(R.matmul(x, weight, out_dtype=out_dtype(units[0].attrs)))

    @classmethod
    def bias_shape(cls, channels: int, out_rank: int) -> tuple[int, ...]:
        return (channels,)  # as linear layers add it


#: the kinds of unit, by the Relax op of their head
UNIT_KINDS: dict[str, type[MergeUnit]] = {k.head_op: k for k in (ConvUnit, MatmulUnit)}
