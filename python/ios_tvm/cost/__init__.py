"""Stage cost models: :class:`CostModel` (the interface) and :class:`AnalyticCostModel`."""

from __future__ import annotations

import tvm

from .analytic import AnalyticCostModel, DeviceSpec
from .model import CostModel

_NAMES = ("analytic", "measure")


def default_cost_model_name(target: "str | dict | tvm.target.Target") -> str:
    """``"measure"`` for a CUDA target whose GPU is present, else ``"analytic"`` (measuring the
    many candidate stages of a large model on a CPU takes long and shows no concurrency)."""
    from ..graph import as_target

    tgt = as_target(target)
    if tgt.kind.name == "cuda" and tvm.cuda(0).exist:
        return "measure"
    return "analytic"


def get_cost_model(spec: "str | CostModel | None", target: "str | dict | tvm.target.Target",
                   database: object = "auto") -> CostModel:
    """Resolve ``cost_model=`` of :func:`ios_tvm.optimize`: an object, a name, or ``None``
    (:func:`default_cost_model_name`)."""
    if spec is None:
        spec = default_cost_model_name(target)
    if isinstance(spec, str):
        if spec == "analytic":
            return AnalyticCostModel.for_target(target)
        if spec == "measure":
            from .measure import MeasuredCostModel

            return MeasuredCostModel(target, database=database)
        raise ValueError(f"unknown cost model {spec!r}; choose one of {_NAMES} or pass a CostModel")
    if not hasattr(spec, "stage_latency"):
        raise TypeError(f"cost_model must be a name or have a stage_latency(graph, groups) method, got {type(spec).__name__}")
    return spec


__all__ = ["CostModel", "AnalyticCostModel", "DeviceSpec", "get_cost_model", "default_cost_model_name"]
