"""BERT-base encoder (Devlin et al., 2019): 12 post-norm layers, 768 wide, 12 heads, 3072-wide
GELU MLP; a sequence of 128 tokens. Paper size: 110M parameters with the embeddings, 85M in the
encoder built here (see :mod:`ios_tvm.models._transformer` for the input and the layers)."""

from __future__ import annotations

import tvm
from tvm.relax import op as R

from ._transformer import TransformerBuilder, check_sizes, divisible


def bert(batch_size: int = 1, seq_len: int = 128, num_layers: int = 12, hidden: int = 768, heads: int = 12,
         ff: int = 3072) -> tvm.IRModule:
    """Build the encoder stack: per layer ``x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))``,
    Q, K, V, output and MLP projections with biases."""
    check_sizes("bert", batch_size=batch_size, seq_len=seq_len, num_layers=num_layers, hidden=hidden,
                heads=heads, ff=ff)
    divisible("bert", "hidden", hidden, "heads", heads)
    tb = TransformerBuilder("bert", batch_size, seq_len, hidden)
    with tb.scope() as x:
        for _ in range(num_layers):
            x = tb.layer_norm(tb.residual(x, tb.attention(x, heads)))
            x = tb.layer_norm(tb.residual(x, tb.linear(tb.emit(R.nn.gelu(tb.linear(x, ff))), hidden)))
        tb.output(x)
    return tb.module()
