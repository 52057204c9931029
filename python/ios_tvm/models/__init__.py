"""Model zoo: the networks of the IOS paper, built in Relax with the paper's shapes.

>>> import ios_tvm
>>> mod = ios_tvm.models.get("squeezenet", image_size=64, width=0.25)
>>> params = ios_tvm.models.random_params(mod)      # deterministic, seed 0

Weights are parameters of ``main`` (after the input ``data``), not constants, so full-size models
build instantly; :func:`random_params` makes deterministic values (He-normal) and
:func:`bind_params` binds them as constants. Batch norm is folded into conv biases.

Every builder takes ``batch_size`` and knobs that shrink it for fast tests: ``image_size``,
``width`` (a channel multiplier; nasnet has ``penultimate_filters`` instead), and a depth knob
(``num_cells`` for nasnet, ``num_nodes``/``num_stages`` for randwire).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, random_input, random_params
from .googlenet import googlenet
from .inception_v3 import inception_v3
from .nasnet import nasnet_a_large
from .randwire import randwire
from .squeezenet import squeezenet

_REGISTRY: dict[str, Callable[..., tvm.IRModule]] = {
    "inception_v3": inception_v3,
    "randwire": randwire,
    "nasnet_a_large": nasnet_a_large,
    "squeezenet": squeezenet,
    "googlenet": googlenet,
}

# Small versions for tests and the demo: a few seconds to lower on 2 CPU cores.
SMALL: dict[str, dict[str, Any]] = {
    "inception_v3": dict(image_size=75, width=0.125),
    "randwire": dict(image_size=32, channels=8, num_nodes=8, num_stages=2),
    "nasnet_a_large": dict(image_size=64, num_cells=1, penultimate_filters=96, stem_filters=8),
    "squeezenet": dict(image_size=64, width=0.125),
    "googlenet": dict(image_size=32, width=0.125),
}


def names() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown model {name!r}; choose one of {', '.join(names())} "
                                   "(or give an .onnx file)")


def image_size_of(name: str, **kwargs: Any) -> int:
    """The input resolution :func:`get` builds ``name`` with for these ``kwargs`` (``small``,
    ``image_size``): the paper's by default."""
    _check_name(name)
    if "image_size" in kwargs and kwargs["image_size"] is not None:
        return int(kwargs["image_size"])
    if kwargs.get("small"):
        return int(SMALL[name]["image_size"])
    return int(inspect.signature(_REGISTRY[name]).parameters["image_size"].default)


def shape_kwargs(name: str, shape: Sequence[int]) -> dict[str, int]:
    """``batch_size`` and ``image_size`` for :func:`get` that give zoo model ``name`` the input
    ``shape`` (``(N, 3, S, S)``: every zoo model takes square RGB images in NCHW).

    Raises
    ------
    InvalidArgumentError
        A shape the zoo model cannot take (another rank, not 3 channels, not square, a dimension
        < 1).
    """
    _check_name(name)
    dims = [int(d) for d in shape]
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
        An unknown name, or sizes the model cannot take (``batch_size`` or ``image_size`` < 1,
        an image too small for the model's strides).
    """
    _check_name(name)
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    if kwargs.pop("small", False):
        kwargs = {**SMALL[name], **kwargs}
    if kwargs.get("image_size") is not None and kwargs["image_size"] < 1:
        raise InvalidArgumentError(f"image_size must be >= 1, got {kwargs['image_size']}")
    if kwargs.get("width") is not None and kwargs["width"] <= 0:
        raise InvalidArgumentError(f"width must be > 0, got {kwargs['width']}")
    return _REGISTRY[name](batch_size=batch_size, **kwargs)


def bind_params(mod: tvm.IRModule, params: dict[str, np.ndarray], func: str = "main") -> tvm.IRModule:
    """Bind weight values as constants (``relax.transform.BindParams``)."""
    return relax.transform.BindParams(func, {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)


__all__ = ["NetBuilder", "get", "names", "shape_kwargs", "image_size_of", "random_params", "random_input", "bind_params", "SMALL", *_REGISTRY]
