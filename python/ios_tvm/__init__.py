"""ios_tvm: Inter-Operator Scheduling (IOS, Ding et al., MLSys 2021) for Apache TVM Relax.

The package is built in layers; each imports only from the layers before it (checked by
``tests/test_layers.py``, which reads every import of the source):

=============  ===========================================================================
layer          holds
=============  ===========================================================================
``errors``     the typed errors every layer raises
``core``       the pure core: DAGs, blocks, candidate stages, the dynamic program, schedules
``ir``         reading Relax: targets, TVM's pass lists, the kernel graph, merge planning,
               precision, random tensors, the private TVM names ios_tvm relies on
``models``     the model zoo, written in Relax
``runtime``    the C++ runtime library's Python face (stream pool, stage calls, stage timer)
               and end-to-end timing
``transform``  the graph-level passes (``LowerSchedule``, ``VerifyMemory``, ...)
``compiler``   the build pipeline (``build``, ``pipeline``), databases, the compile cache
``cost``       stage cost models: analytic, measured (timers, cache), the registry
``tuning``     MetaSchedule tuning within a time budget
``driver``     ``optimize``: graph + cost model + search; the end-to-end check; kernel variants
``viz``        Gantt charts
``cli``        the ``ios-tvm`` command
=============  ===========================================================================

Heavy parts (TVM) load on first use, so ``from ios_tvm.core.search import solve`` needs no TVM.
The small runtime library (``ios_tvm.runtime.*``, which compiled models call) is loaded on
import, so ``import ios_tvm`` is all a program running an exported model needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: the order of the layers, lowest first (``tests/test_layers.py`` enforces it)
LAYERS = ("_version", "errors", "core", "ir", "models", "runtime", "transform", "compiler", "cost", "tuning", "driver",
          "viz", "cli")

_LAZY = {
    "optimize": ("ios_tvm.driver.optimize", "optimize"),
    "SearchConfig": ("ios_tvm.driver.optimize", "SearchConfig"),
    "select_variants": ("ios_tvm.driver.variants", "select_variants"),
    "extract_graph": ("ios_tvm.ir.graph", "extract_graph"),
    "OpGraph": ("ios_tvm.ir.graph", "OpGraph"),
    "Schedule": ("ios_tvm.core.schedule", "Schedule"),
    "build": ("ios_tvm.compiler.pipeline", "build"),
    "pipeline": ("ios_tvm.compiler.pipeline", "pipeline"),
    "planned_memory": ("ios_tvm.compiler.pipeline", "planned_memory"),
    "tune": ("ios_tvm.tuning.tuner", "tune"),
    "tune_models": ("ios_tvm.tuning.tuner", "tune_models"),
    "models": ("ios_tvm.models", None),
    "errors": ("ios_tvm.errors", None),
    "precision": ("ios_tvm.ir.precision", None),
    "cost": ("ios_tvm.cost", None),
    "transform": ("ios_tvm.transform", None),
    "compiler": ("ios_tvm.compiler", None),
    "runtime": ("ios_tvm.runtime", None),
    "target": ("ios_tvm.ir.target", None),
}

__all__ = ["__version__", *_LAZY]

try:  # register ios_tvm.runtime.* for models built with schedules (needs only tvm_ffi)
    from . import runtime

    runtime.load()
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
