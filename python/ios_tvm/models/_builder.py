"""A small helper over ``relax.BlockBuilder`` for writing CNNs in Relax.

Weights are *function parameters* of ``main`` (after the input), never constants, so a full-size
model builds in a fraction of a second and costs no memory; :func:`random_params` makes
deterministic values for them. ``main`` carries ``attrs["num_input"] = 1``.

Batch norm is folded into the convolution bias (what inference deployments run), so a
"conv" here is ``conv2d -> add(bias) [-> relu]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from ..ir.tensors import input_arrays

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def scaled(channels: int, width: float) -> int:
    """Channel count times a width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


class NetBuilder:
    """Build ``main(data, *weights)`` of a CNN in NCHW float32, one op at a time.

    Use as::

        nb = NetBuilder("squeezenet", (1, 3, 224, 224))
        with nb.scope() as x:
            y = nb.conv(x, 64, 3)
            nb.output(y)
        mod = nb.module()
    """

    def __init__(self, name: str, input_shape: Sequence[int], dtype: str = "float32") -> None:
        self.name = name
        self.dtype = dtype
        self.bb = relax.BlockBuilder()
        self.data = relax.Var("data", relax.TensorType([int(d) for d in input_shape], dtype))
        self.weights: list[relax.Var] = []
        self._count = 0
        self._mod: tvm.IRModule | None = None

    # -- structure ---------------------------------------------------------------------------
    def scope(self):
        builder = self

        class _Scope:
            def __enter__(self):
                builder._fn = builder.bb.function("main", attrs={"num_input": 1})
                builder._fn.__enter__()
                builder._df = builder.bb.dataflow()
                builder._df.__enter__()
                return builder.data

            def __exit__(self, *exc):
                if exc[0] is not None:
                    return False
                builder._fn.__exit__(None, None, None)
                builder._mod = builder.bb.get()
                return False

        return _Scope()

    def output(self, x: relax.Expr) -> None:
        out = self.bb.emit_output(x)
        self._df.__exit__(None, None, None)
        self.bb.emit_func_output(out, params=[self.data, *self.weights])

    def module(self) -> tvm.IRModule:
        if self._mod is None:
            raise RuntimeError("call output() inside scope() first")
        return self._mod

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def shape(x: relax.Expr) -> tuple[int, ...]:
        return tuple(int(d) for d in x.ty.shape)

    def weight(self, kind: str, shape: Sequence[int]) -> relax.Var:
        self._count += 1
        var = relax.Var(f"p{self._count}_{kind}", relax.TensorType([int(d) for d in shape], self.dtype))
        self.weights.append(var)
        return var

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    # -- layers ------------------------------------------------------------------------------
    def conv(
        self,
        x: relax.Expr,
        out_channels: int,
        kernel: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = "same",
        groups: int = 1,
        relu: bool = True,
        bias: bool = True,
    ) -> relax.Var:
        """``conv2d`` (+ folded-BN bias) (+ ReLU). ``padding="same"`` pads ``k // 2``."""
        kh, kw = _pair(kernel)
        cin = self.shape(x)[1]
        if padding == "same":
            pad = (kh // 2, kw // 2)
        elif padding == "valid":
            pad = (0, 0)
        else:
            pad = _pair(padding)  # type: ignore[arg-type]
        w = self.weight("w", (out_channels, cin // groups, kh, kw))
        y = self.emit(R.nn.conv2d(x, w, strides=_pair(stride), padding=pad, groups=groups))
        if bias:
            y = self.emit(R.add(y, self.weight("b", (1, out_channels, 1, 1))))
        if relu:
            y = self.emit(R.nn.relu(y))
        return y

    def sep_conv(self, x: relax.Expr, out_channels: int, kernel: int, stride: int = 1,
                 relu: bool = False) -> relax.Var:
        """Depthwise ``kernel x kernel`` conv then pointwise 1x1 conv (+ folded-BN bias)."""
        cin = self.shape(x)[1]
        y = self.conv(x, cin, kernel, stride=stride, groups=cin, relu=False, bias=False)
        return self.conv(y, out_channels, 1, relu=relu)

    def relu(self, x: relax.Expr) -> relax.Var:
        return self.emit(R.nn.relu(x))

    def add(self, a: relax.Expr, b: relax.Expr) -> relax.Var:
        return self.emit(R.add(a, b))

    def scale(self, x: relax.Expr, factor: float) -> relax.Var:
        return self.emit(R.multiply(x, relax.const(factor, self.dtype)))

    def max_pool(self, x: relax.Expr, size: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> relax.Var:
        return self.emit(R.nn.max_pool2d(x, (size, size), (stride, stride), (padding, padding), ceil_mode=ceil_mode))

    def avg_pool(self, x: relax.Expr, size: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> relax.Var:
        return self.emit(R.nn.avg_pool2d(x, (size, size), (stride, stride), (padding, padding), ceil_mode=ceil_mode))

    def concat(self, xs: Sequence[relax.Expr]) -> relax.Var:
        return xs[0] if len(xs) == 1 else self.emit(R.concat(list(xs), axis=1))

    def shift_hw(self, x: relax.Expr) -> relax.Var:
        """Shift by one pixel up-left, zero-filling the far edge (the second path of a factorized
        reduction: pad bottom/right by one, drop the first row and column)."""
        _, _, h, w = self.shape(x)
        y = self.emit(R.strided_slice(x, axes=[2, 3], begin=[1, 1], end=[h, w]))
        return self.emit(R.nn.pad(y, [0, 0, 0, 0, 0, 1, 0, 1]))

    def classifier(self, x: relax.Expr, num_classes: int) -> relax.Var:
        """Global average pool, flatten, dense (+ bias)."""
        n, c = self.shape(x)[:2]
        y = self.emit(R.nn.adaptive_avg_pool2d(x, output_size=1))
        y = self.emit(R.reshape(y, (n, c)))
        w = self.weight("fc_w", (c, num_classes))
        y = self.emit(R.matmul(y, w))
        return self.emit(R.add(y, self.weight("fc_b", (num_classes,))))


def random_params(mod: tvm.IRModule, seed: int = 0, func: str = "main") -> dict[str, np.ndarray]:
    """Deterministic random values for the weight parameters of ``mod[func]``.

    The input parameters (the first ``attrs["num_input"]``, default 1) are left out. Weights of
    rank >= 2 are He-normal over their fan-in, so activations keep their scale through deep
    networks; rank-1 and bias-shaped tensors are small uniform values, the gains of norm layers
    (names ending ``_g``) uniform around 1. Same ``seed``, same values.
    """
    fn = mod[func]
    num_input = int(fn.attrs["num_input"]) if fn.attrs is not None and "num_input" in fn.attrs else 1
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for p in list(fn.params)[num_input:]:
        shape = tuple(int(d) for d in p.ty.shape)
        dtype = str(p.ty.dtype)
        nontrivial = [d for d in shape if d != 1]
        if p.name.endswith("_g"):  # the gain of a norm layer
            value = rng.uniform(0.9, 1.1, size=shape)
        elif p.name.endswith("_b") or len(nontrivial) <= 1:
            value = rng.uniform(-0.1, 0.1, size=shape)
        else:
            if p.name.endswith("fc_w"):
                fan_in = shape[0]
            else:
                fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        out[p.name] = value.astype(dtype)
    return out


def random_input(mod: tvm.IRModule, seed: int = 0, func: str = "main") -> np.ndarray:
    """A deterministic random input for the first parameter of ``mod[func]`` (uniform in [-1, 1);
    :func:`ios_tvm.ir.tensors.input_arrays`, the generator of every model input ios_tvm makes)."""
    return input_arrays(mod, seed, func)[0]
