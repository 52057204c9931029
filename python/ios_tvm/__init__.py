"""ios_tvm: Inter-Operator Scheduling (IOS, Ding et al., MLSys 2021) for Apache TVM Relax.

Heavy parts (TVM) load on first use, so ``from ios_tvm.search import solve`` needs no TVM.
The small runtime library (``ios_tvm.runtime.*``, which compiled models call) is loaded on
import, so ``import ios_tvm`` is all a program running an exported model needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "optimize": ("ios_tvm.api", "optimize"),
    "SearchConfig": ("ios_tvm.api", "SearchConfig"),
    "extract_graph": ("ios_tvm.graph", "extract_graph"),
    "build": ("ios_tvm.compiler", "build"),
    "pipeline": ("ios_tvm.compiler", "pipeline"),
    "tune": ("ios_tvm.tuning", "tune"),
    "tune_models": ("ios_tvm.tuning", "tune_models"),
    "select_variants": ("ios_tvm.variant_search", "select_variants"),
    "OpGraph": ("ios_tvm.graph", "OpGraph"),
    "Schedule": ("ios_tvm.schedule", "Schedule"),
    "models": ("ios_tvm.models", None),
    "errors": ("ios_tvm.errors", None),
    "precision": ("ios_tvm.precision", None),
}

__all__ = ["__version__", *_LAZY]

try:  # register ios_tvm.runtime.* for models built with schedules (needs only tvm_ffi)
    from . import runtime  # noqa: F401
except ImportError:  # not built (a bare source checkout): raised again where the runtime is used
    pass


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ios_tvm' has no attribute {name!r}")
