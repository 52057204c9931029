"""A mixture-of-experts decoder stack: LLaMA-style layers (:mod:`ios_tvm.models.llama`) whose MLP
is a mixture of 8 SiLU-gated experts, each token weighted by its top 2 (Mixtral's routing, Jiang
et al., 2024) plus a shared expert every token goes through (as DeepSeek-MoE and Qwen-MoE have),
dispatched densely so that shapes stay static. Default size: Qwen1.5-MoE-A2.7B's widths (24 layers,
2048 wide, 16 heads, experts 1408 wide, the shared expert 5632 wide) with 8 experts instead of its
60 (2.9B parameters without the embeddings and the head); the prefill of a 128-token prompt.
See :mod:`ios_tvm.models._transformer` for the input and the layers."""

from __future__ import annotations

import tvm

from ..errors import InvalidArgumentError
from ._transformer import TransformerBuilder, check_sizes, divisible


def moe(batch_size: int = 1, seq_len: int = 128, num_layers: int = 24, hidden: int = 2048, heads: int = 16,
        experts: int = 8, top_k: int = 2, expert_ff: int = 1408, shared_ff: int = 5632,
        rotary: bool = True) -> tvm.IRModule:
    """Build the stack: per layer ``x = x + attn(rms(x)); x = x + moe(rms(x))`` (``shared_ff=0``:
    no shared expert), a final RMSNorm."""
    check_sizes("moe", batch_size=batch_size, seq_len=seq_len, num_layers=num_layers, hidden=hidden, heads=heads,
                experts=experts, top_k=top_k, expert_ff=expert_ff, shared_ff=shared_ff or None)
    divisible("moe", "hidden", hidden, "heads", heads)
    if top_k > experts:
        raise InvalidArgumentError(f"moe: top_k ({top_k}) must be at most experts ({experts})")
    tb = TransformerBuilder("moe", batch_size, seq_len, hidden)
    with tb.scope() as x:
        for _ in range(num_layers):
            x = tb.residual(x, tb.attention(tb.rms_norm(x), heads, causal=True, rotary=rotary, bias=False))
            x = tb.residual(x, tb.moe(tb.rms_norm(x), experts, top_k, expert_ff, shared_ff))
        tb.output(tb.rms_norm(x))
    return tb.module()
