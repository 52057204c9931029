"""PyTorch twins of the transformer zoo models (``ios_tvm.models`` bert, llama, moe): the same
layers, computed by PyTorch's own operators, with the very weights of a Relax build
(``ios_tvm.models.random_params``). They are the PyTorch peers of ``gpu_e2e.py`` (eager and
``torch.compile``) and the tests' independent reference for the zoo's Relax code.

    >>> mod = ios_tvm.models.get("bert", small=True)
    >>> net = torch_twin("bert", ios_tvm.models.random_params(mod), small=True)   # torch.nn.Module
    >>> net(torch.from_numpy(ios_tvm.models.random_input(mod)))

A twin takes its weights in the order the Relax builder created them (``p1_...``, ``p2_...``):
its forward consumes them in that order, layer for layer as :mod:`ios_tvm.models._transformer`
builds them (linear weights ``(in, out)``).
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ios_tvm import models


def _ordered(params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``p{n}_...`` weights in the order of ``n``."""
    def number(name: str) -> int:
        m = re.match(r"p(\d+)_", name)
        if m is None:
            raise ValueError(f"not a zoo weight name: {name!r}")
        return int(m.group(1))

    return [params[k] for k in sorted(params, key=number)]


class _Weights:
    """The twin's weights, handed out in creation order."""

    def __init__(self, params: torch.nn.ParameterList) -> None:
        self.params = params
        self.i = 0

    def next(self) -> torch.Tensor:
        p = self.params[self.i]
        self.i += 1
        return p


class ZooTwin(torch.nn.Module):
    """A zoo transformer in PyTorch (see the module docstring)."""

    def __init__(self, name: str, params: dict[str, np.ndarray], **kwargs: Any) -> None:
        super().__init__()
        if name not in models.TRANSFORMERS:
            raise ValueError(f"no PyTorch twin of {name!r}: the twins are of {', '.join(models.TRANSFORMERS)}")
        if kwargs.pop("small", False):
            kwargs = {**models.SMALL[name], **kwargs}
        defaults = {k: p.default for k, p in inspect.signature(getattr(models, name)).parameters.items()}
        self.name = name
        self.cfg = {**defaults, **kwargs}
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(v)),
                                                                  requires_grad=False) for v in _ordered(params)])

    # -- layers, in the Relax builder's order ------------------------------------------------
    @staticmethod
    def _linear(w: _Weights, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        y = x @ w.next()
        return y + w.next() if bias else y

    @staticmethod
    def _rotary(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
        n, d = x.shape[-2], x.shape[-1]
        freqs = torch.outer(torch.arange(n, dtype=torch.float64),
                            1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().to(x.dtype).to(x.device), emb.sin().to(x.dtype).to(x.device)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def _attention(self, w: _Weights, x: torch.Tensor, heads: int, kv_heads: int, causal: bool, rotary: bool,
                   bias: bool) -> torch.Tensor:
        b, n, h = x.shape
        d = h // heads
        split = lambda t, k: t.reshape(b, n, k, d).transpose(1, 2)  # noqa: E731
        q = split(self._linear(w, x, bias), heads)
        k = split(self._linear(w, x, bias), kv_heads)
        v = split(self._linear(w, x, bias), kv_heads)
        if rotary:
            q, k = self._rotary(q), self._rotary(k)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        if causal:
            scores = scores + torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, n, h)
        return self._linear(w, out, bias)

    def _gated_mlp(self, w: _Weights, x: torch.Tensor) -> torch.Tensor:
        gate = self._linear(w, x, bias=False)
        up = self._linear(w, x, bias=False)
        return self._linear(w, F.silu(gate) * up, bias=False)

    def _moe(self, w: _Weights, x: torch.Tensor, experts: int, top_k: int, shared: bool) -> torch.Tensor:
        probs = torch.softmax(self._linear(w, x, bias=False), dim=-1)
        kth = torch.topk(probs, top_k, dim=-1).values[..., top_k - 1: top_k]
        chosen = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        weights = chosen / chosen.sum(dim=-1, keepdim=True)
        out = self._gated_mlp(w, x) if shared else None
        for e in range(experts):
            y = self._gated_mlp(w, x) * weights[..., e: e + 1]
            out = y if out is None else out + y
        return out

    def _rms(self, w: _Weights, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.next()

    def _layer_norm(self, w: _Weights, x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
        g, b = w.next(), w.next()
        return F.layer_norm(x, (x.shape[-1],), g, b, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        c = self.cfg
        w = _Weights(self.weights)
        if self.name == "bert":
            for _ in range(c["num_layers"]):
                x = self._layer_norm(w, x + self._attention(w, x, c["heads"], c["heads"], False, False, True))
                x = self._layer_norm(w, x + self._linear(w, F.gelu(self._linear(w, x))))
            return x
        for _ in range(c["num_layers"]):
            kv = c.get("kv_heads", c["heads"])
            x = x + self._attention(w, self._rms(w, x), c["heads"], kv, True, c["rotary"], False)
            if self.name == "llama":
                x = x + self._gated_mlp(w, self._rms(w, x))
            else:
                x = x + self._moe(w, self._rms(w, x), c["experts"], c["top_k"], bool(c["shared_ff"]))
        return self._rms(w, x)


def torch_twin(name: str, params: dict[str, np.ndarray], **kwargs: Any) -> ZooTwin:
    """The PyTorch twin of zoo transformer ``name`` built with ``kwargs`` (as ``models.get``
    takes them, ``small`` too), with the weights ``params`` (``models.random_params`` of it), in
    eval mode on the CPU."""
    return ZooTwin(name, params, **kwargs).eval()
