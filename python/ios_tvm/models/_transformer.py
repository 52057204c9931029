"""Transformer layers in Relax over :class:`~ios_tvm.models._builder.NetBuilder`: linear layers,
layer and RMS norms, multi-head attention (causal, rotary, grouped key/value heads), gated MLPs
and a mixture of experts with dense dispatch.

The input ``data`` is the sequence's hidden states, ``(batch, seq_len, hidden)`` in float32 (the
embedding lookup before them and a head after them are left out: they are no work to schedule).
Weights are parameters of ``main``, as for the CNNs (:func:`~ios_tvm.models.random_params`).

Linear layers are written as PyTorch's importer writes ``nn.Linear`` (``from_exported_program``):
the tokens flattened to a ``(batch * seq_len, features)`` view, ``matmul`` with an
``(in, out)`` weight, the bias added, the result viewed as ``(batch, seq_len, out)`` again. (One
view per input tensor, so that the matmuls reading one tensor read one variable, as TVM's
``CombineParallelMatmul`` needs.) The view keeps what follows a matmul out of its kernel, so
a gated MLP's gate and up projections stay two independent kernels: written on 3-D tensors,
TVM's fusion puts the gating ``multiply`` into the up projection's kernel, which then reads the
gate's output, and the two can neither merge nor run side by side.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from ..errors import InvalidArgumentError
from ._builder import NetBuilder


class TransformerBuilder(NetBuilder):
    """Build ``main(data, *weights)`` of a transformer stack on ``(batch, seq_len, hidden)``."""

    def __init__(self, name: str, batch: int, seq_len: int, hidden: int, dtype: str = "float32") -> None:
        super().__init__(name, (batch, seq_len, hidden), dtype)
        self._flat: dict[relax.Expr, relax.Var] = {}

    def tokens(self, x: relax.Expr) -> relax.Var:
        """``x`` ``(B, L, H)`` viewed as ``(B * L, H)`` (one view per tensor)."""
        if x not in self._flat:
            b, n, h = self.shape(x)
            self._flat[x] = self.emit(R.reshape(x, (b * n, h)))
        return self._flat[x]

    def linear(self, x: relax.Expr, out: int, bias: bool = True) -> relax.Var:
        """``x @ W (+ b)`` on the last axis, ``W`` an ``(in, out)`` weight."""
        b, n, h = self.shape(x)
        y = self.emit(R.matmul(self.tokens(x), self.weight("fc_w", (h, out))))
        if bias:
            y = self.emit(R.add(y, self.weight("b", (out,))))
        return self.emit(R.reshape(y, (b, n, out)))

    def layer_norm(self, x: relax.Expr, eps: float = 1e-12) -> relax.Var:
        h = self.shape(x)[-1]
        return self.emit(R.nn.layer_norm(x, self.weight("g", (h,)), self.weight("b", (h,)), axes=[-1], epsilon=eps))

    def rms_norm(self, x: relax.Expr, eps: float = 1e-5) -> relax.Var:
        return self.emit(R.nn.rms_norm(x, self.weight("g", (self.shape(x)[-1],)), axes=[-1], epsilon=eps))

    def heads(self, x: relax.Expr, num: int) -> relax.Var:
        """``(B, L, num * d)`` -> ``(B, num, L, d)``."""
        b, n, width = self.shape(x)
        return self.emit(R.permute_dims(self.emit(R.reshape(x, (b, n, num, width // num))), [0, 2, 1, 3]))

    def rotary(self, x: relax.Expr, theta: float = 10000.0) -> relax.Var:
        """Rotary position embedding of ``(B, heads, L, d)`` (LLaMA's: the two halves of each head
        rotated, positions 0..L-1): ``x * cos + rotate_half(x) * sin``."""
        _, _, n, d = self.shape(x)
        freqs = np.outer(np.arange(n), 1.0 / theta ** (np.arange(0, d, 2) / d))
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos = relax.const(np.cos(emb).astype(self.dtype))
        sin = relax.const(np.sin(emb).astype(self.dtype))
        x1 = self.emit(R.strided_slice(x, axes=[3], begin=[0], end=[d // 2]))
        x2 = self.emit(R.strided_slice(x, axes=[3], begin=[d // 2], end=[d]))
        rotated = self.emit(R.concat([self.emit(R.negative(x2)), x1], axis=-1))
        return self.emit(R.add(self.emit(R.multiply(x, cos)), self.emit(R.multiply(rotated, sin))))

    def attention(self, x: relax.Expr, heads: int, kv_heads: int | None = None, causal: bool = False,
                  rotary: bool = False, bias: bool = True) -> relax.Var:
        """Multi-head self-attention of ``x``: Q, K, V projections (K and V with ``kv_heads``
        heads, repeated to ``heads``: grouped-query attention), softmax(Q K^T / sqrt(d) (+ causal
        mask)) V, the output projection."""
        b, n, h = self.shape(x)
        kv_heads = kv_heads or heads
        d = h // heads
        q = self.heads(self.linear(x, h, bias), heads)
        k = self.heads(self.linear(x, kv_heads * d, bias), kv_heads)
        v = self.heads(self.linear(x, kv_heads * d, bias), kv_heads)
        if rotary:
            q, k = self.rotary(q), self.rotary(k)
        if kv_heads != heads:
            k = self.emit(R.repeat(k, heads // kv_heads, axis=1))
            v = self.emit(R.repeat(v, heads // kv_heads, axis=1))
        scores = self.emit(R.matmul(q, self.emit(R.permute_dims(k, [0, 1, 3, 2]))))
        scores = self.emit(R.multiply(scores, relax.const(1.0 / np.sqrt(d), self.dtype)))
        if causal:
            mask = np.triu(np.full((n, n), -np.inf, dtype=self.dtype), 1)
            scores = self.emit(R.add(scores, relax.const(mask)))
        out = self.emit(R.matmul(self.emit(R.nn.softmax(scores, axis=-1)), v))
        out = self.emit(R.reshape(self.emit(R.permute_dims(out, [0, 2, 1, 3])), (b, n, h)))
        return self.linear(out, h, bias)

    def gated_mlp(self, x: relax.Expr, ff: int) -> relax.Var:
        """LLaMA's MLP: ``down(silu(gate(x)) * up(x))``, no biases."""
        gate = self.linear(x, ff, bias=False)
        up = self.linear(x, ff, bias=False)
        return self.linear(self.emit(R.multiply(self.emit(R.nn.silu(gate)), up)), self.shape(x)[-1], bias=False)

    def moe(self, x: relax.Expr, experts: int, top_k: int, ff: int, shared_ff: int | None) -> relax.Var:
        """A mixture of ``experts`` gated MLPs, each token weighted by its ``top_k`` experts'
        router probabilities (renormalised over those ``top_k``, as Mixtral does), plus a shared
        expert every token goes through (``shared_ff``, as DeepSeek-MoE and Qwen-MoE have).

        Dispatch is dense: every expert computes every token and the weights of the experts a
        token did not choose are 0, so the shapes stay static (``experts / top_k`` times the
        work of a sparse dispatch, the same result)."""
        probs = self.emit(R.nn.softmax(self.linear(x, experts, bias=False), axis=-1))
        top = self.emit(R.topk(probs, k=top_k, axis=-1, ret_type="values"))
        kth = self.emit(R.strided_slice(top, axes=[2], begin=[top_k - 1], end=[top_k]))
        chosen = self.emit(R.where(self.emit(R.greater_equal(probs, kth)), probs, relax.const(0.0, self.dtype)))
        weights = self.emit(R.divide(chosen, self.emit(R.sum(chosen, axis=[-1], keepdims=True))))
        out = self.gated_mlp(x, shared_ff) if shared_ff else None
        for e in range(experts):
            w = self.emit(R.strided_slice(weights, axes=[2], begin=[e], end=[e + 1]))
            y = self.emit(R.multiply(self.gated_mlp(x, ff), w))
            out = y if out is None else self.emit(R.add(out, y))
        assert out is not None
        return out

    def residual(self, x: relax.Expr, y: relax.Expr) -> relax.Var:
        return self.emit(R.add(x, y))


def check_sizes(name: str, **sizes: int | None) -> None:
    """Refuse sizes a transformer cannot take: each must be an integer >= 1 (``None``: unused)."""
    for key, value in sizes.items():
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
            raise InvalidArgumentError(f"{name}: {key} must be an integer >= 1, got {value!r}")


def divisible(name: str, what: str, value: int, by: str, divisor: int) -> None:
    """Refuse ``value`` (``what``) not a multiple of ``divisor`` (``by``)."""
    if value % divisor:
        raise InvalidArgumentError(f"{name}: {what} ({value}) must be a multiple of {by} ({divisor})")

