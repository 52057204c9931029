"""Model zoo: the networks of the IOS paper, built in Relax with the paper's shapes, and three
transformer stacks (BERT-base, a LLaMA-style decoder, a mixture of experts).

>>> import ios_tvm
>>> mod = ios_tvm.models.get("squeezenet", image_size=64, width=0.25)
>>> params = ios_tvm.models.random_params(mod)      # deterministic, seed 0

Weights are parameters of ``main`` (after the input ``data``), not constants, so full-size models
build instantly; :func:`random_params` makes deterministic values (He-normal) and
:func:`bind_params` binds them as constants. Batch norm is folded into conv biases.

Every builder takes ``batch_size`` and knobs that shrink it for fast tests: the CNNs
``image_size``, ``width`` (a channel multiplier; nasnet has ``penultimate_filters`` instead), and
a depth knob (``num_cells`` for nasnet, ``num_nodes``/``num_stages`` for randwire); the
transformers (:data:`TRANSFORMERS`, input ``data`` of hidden states ``(batch, seq_len, hidden)``)
``seq_len``, ``num_layers``, ``hidden``, ``heads`` and their MLP widths.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, random_input, random_params
from .bert import bert
from .googlenet import googlenet
from .inception_v3 import inception_v3
from .llama import llama
from .moe import moe
from .nasnet import nasnet_a_large
from .randwire import randwire
from .squeezenet import squeezenet

_REGISTRY: dict[str, Callable[..., tvm.IRModule]] = {
    "inception_v3": inception_v3,
    "randwire": randwire,
    "nasnet_a_large": nasnet_a_large,
    "squeezenet": squeezenet,
    "googlenet": googlenet,
    "bert": bert,
    "llama": llama,
    "moe": moe,
}
#: zoo models whose input is a sequence of hidden states ``(batch, seq_len, hidden)``, not images
TRANSFORMERS = ("bert", "llama", "moe")

# Small versions for tests and the demo: a few seconds to lower on 2 CPU cores.
SMALL: dict[str, dict[str, Any]] = {
    "inception_v3": dict(image_size=75, width=0.125),
    "randwire": dict(image_size=32, channels=8, num_nodes=8, num_stages=2),
    "nasnet_a_large": dict(image_size=64, num_cells=1, penultimate_filters=96, stem_filters=8),
    "squeezenet": dict(image_size=64, width=0.125),
    "googlenet": dict(image_size=32, width=0.125),
    "bert": dict(seq_len=16, num_layers=2, hidden=64, heads=4, ff=128),
    "llama": dict(seq_len=16, num_layers=2, hidden=64, heads=4, kv_heads=2, ff=96),
    "moe": dict(seq_len=16, num_layers=1, hidden=64, heads=4, experts=4, expert_ff=32, shared_ff=64),
}


def names() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown model {name!r}; choose one of {', '.join(names())} "
                                   "(or give an .onnx file)")


def _default(name: str, knob: str, **kwargs: Any) -> int:
    """The value of ``knob`` :func:`get` builds ``name`` with for these ``kwargs`` (given,
    ``small``, or the builder's default)."""
    if kwargs.get(knob) is not None:
        return int(kwargs[knob])
    if kwargs.get("small") and knob in SMALL[name]:
        return int(SMALL[name][knob])
    return int(inspect.signature(_REGISTRY[name]).parameters[knob].default)


def image_size_of(name: str, **kwargs: Any) -> int:
    """The input resolution :func:`get` builds CNN ``name`` with for these ``kwargs`` (``small``,
    ``image_size``): the paper's by default.

    Raises
    ------
    InvalidArgumentError
        An unknown name, or a transformer (its input is a sequence: :func:`describe_input`).
    """
    _check_name(name)
    if name in TRANSFORMERS:
        raise InvalidArgumentError(f"zoo model {name} takes a sequence of hidden states, not images: it has no "
                                   "image size (see ios_tvm.models.describe_input)")
    return _default(name, "image_size", **kwargs)


def describe_input(name: str, **kwargs: Any) -> str:
    """What :func:`get` builds zoo model ``name`` for with these ``kwargs``, in words:
    ``"224x224"`` for a CNN, ``"128 tokens, 768 wide"`` for a transformer."""
    _check_name(name)
    if name in TRANSFORMERS:
        return f"{_default(name, 'seq_len', **kwargs)} tokens, {_default(name, 'hidden', **kwargs)} wide"
    size = image_size_of(name, **kwargs)
    return f"{size}x{size}"


def shape_kwargs(name: str, shape: Sequence[int], **kwargs: Any) -> dict[str, int]:
    """The :func:`get` keyword arguments that give zoo model ``name`` the input ``shape``: a CNN's
    ``(N, 3, S, S)`` (square RGB images in NCHW) -> ``batch_size``, ``image_size``; a transformer's
    ``(N, L, H)`` -> ``batch_size``, ``seq_len`` (``H`` must be the width it is built with for
    ``kwargs``, e.g. ``small``).

    Raises
    ------
    InvalidArgumentError
        A shape the zoo model cannot take (another rank, not 3 channels, not square, another
        width, a dimension < 1).
    """
    _check_name(name)
    dims = [int(d) for d in shape]
    if name in TRANSFORMERS:
        hidden = _default(name, "hidden", **kwargs)
        seq = _default(name, "seq_len", **kwargs)
        if len(dims) != 3 or dims[2] != hidden or min(dims) < 1:
            raise InvalidArgumentError(
                f"zoo model {name} takes one input, data, of shape (N, L, {hidden}) (batch N >= 1, L tokens of "
                f"{hidden} hidden features), not {tuple(dims)}: e.g. data=1,{seq},{hidden}")
        return {"batch_size": dims[0], "seq_len": dims[1]}
    if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or min(dims) < 1:
        raise InvalidArgumentError(
            f"zoo model {name} takes one input, data, of shape (N, 3, S, S) (batch N >= 1, square "
            f"RGB images of side S), not {tuple(dims)}: e.g. data=1,3,{image_size_of(name)},"
            f"{image_size_of(name)}")
    return {"batch_size": dims[0], "image_size": dims[2]}


def get(name: str, batch_size: int = 1, **kwargs: Any) -> tvm.IRModule:
    """Build zoo model ``name`` as a Relax ``IRModule`` with ``main(data, *weights)``.

    ``kwargs`` go to the model's builder (see each module); ``small=True`` applies the
    test-sized knobs of :data:`SMALL` (explicit kwargs win).

    Raises
    ------
    InvalidArgumentError
        An unknown name, a knob the model does not have (``image_size`` for a transformer), or
        sizes the model cannot take (``batch_size`` or ``image_size`` < 1, an image too small for
        the model's strides, a width its heads do not divide).
    """
    _check_name(name)
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    if kwargs.pop("small", False):
        kwargs = {**SMALL[name], **kwargs}
    known = set(inspect.signature(_REGISTRY[name]).parameters) - {"batch_size"}
    unknown = sorted(k for k, v in kwargs.items() if k not in known and v is not None)
    if unknown:
        hint = (f" (command line: --input-shape data=N,L,{_default(name, 'hidden', **kwargs)} gives its batch N and "
                "sequence length L)" if name in TRANSFORMERS else "")
        raise InvalidArgumentError(f"zoo model {name} has no {', '.join(unknown)}; its knobs: "
                                   f"{', '.join(sorted(known))}{hint}")
    kwargs = {k: v for k, v in kwargs.items() if k in known}
    if kwargs.get("image_size") is not None and kwargs["image_size"] < 1:
        raise InvalidArgumentError(f"image_size must be >= 1, got {kwargs['image_size']}")
    if kwargs.get("width") is not None and kwargs["width"] <= 0:
        raise InvalidArgumentError(f"width must be > 0, got {kwargs['width']}")
    return _REGISTRY[name](batch_size=batch_size, **kwargs)


def bind_params(mod: tvm.IRModule, params: dict[str, np.ndarray], func: str = "main") -> tvm.IRModule:
    """Bind weight values as constants (``relax.transform.BindParams``)."""
    return relax.transform.BindParams(func, {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)


__all__ = ["NetBuilder", "get", "names", "shape_kwargs", "image_size_of", "describe_input", "TRANSFORMERS",
           "random_params", "random_input", "bind_params", "SMALL", *_REGISTRY]
