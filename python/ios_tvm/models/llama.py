"""A LLaMA-style decoder stack (Touvron et al., 2023): pre-norm layers with RMSNorm, causal
self-attention with rotary position embeddings and grouped key/value heads, a SiLU-gated MLP,
a final RMSNorm; the prefill of a 128-token prompt (no KV cache). Default size: TinyLlama-1.1B's
(the LLaMA-2 architecture: 22 layers, 2048 wide, 32 heads, 4 key/value heads, a 5632-wide MLP;
968M parameters without the embeddings and the head). See :mod:`ios_tvm.models._transformer`
for the input and the layers."""

from __future__ import annotations

import tvm

from ._transformer import TransformerBuilder, check_sizes, divisible


def llama(batch_size: int = 1, seq_len: int = 128, num_layers: int = 22, hidden: int = 2048, heads: int = 32,
          kv_heads: int = 4, ff: int = 5632, rotary: bool = True) -> tvm.IRModule:
    """Build the decoder stack: per layer ``x = x + attn(rms(x)); x = x + mlp(rms(x))``, no biases
    (``rotary=False``: no position embedding)."""
    check_sizes("llama", batch_size=batch_size, seq_len=seq_len, num_layers=num_layers, hidden=hidden,
                heads=heads, kv_heads=kv_heads, ff=ff)
    divisible("llama", "hidden", hidden, "heads", heads)
    divisible("llama", "heads", heads, "kv_heads", kv_heads)
    tb = TransformerBuilder("llama", batch_size, seq_len, hidden)
    with tb.scope() as x:
        for _ in range(num_layers):
            x = tb.residual(x, tb.attention(tb.rms_norm(x), heads, kv_heads, causal=True, rotary=rotary, bias=False))
            x = tb.residual(x, tb.gated_mlp(tb.rms_norm(x), ff))
        tb.output(tb.rms_norm(x))
    return tb.module()
