"""Stage cost models: :class:`CostModel` (the interface) and :class:`AnalyticCostModel`."""

from __future__ import annotations

import tvm

from .analytic import AnalyticCostModel, DeviceSpec
from .model import CostModel

_NAMES = ("analytic",)


def get_cost_model(spec: "str | CostModel | None", target: "str | dict | tvm.target.Target") -> CostModel:
    """Resolve ``cost_model=`` of :func:`ios_tvm.optimize`: an object, a name, or ``None``
    (the default: ``"analytic"`` until measured costs land)."""
    if spec is None:
        spec = "analytic"
    if isinstance(spec, str):
        if spec == "analytic":
            return AnalyticCostModel.for_target(target)
        if spec == "measure":
            raise NotImplementedError(
                "cost_model='measure' (latencies measured on the device) is not available yet; "
                "use cost_model='analytic' or pass your own CostModel")
        raise ValueError(f"unknown cost model {spec!r}; choose one of {_NAMES} or pass a CostModel")
    if not hasattr(spec, "stage_latency"):
        raise TypeError(f"cost_model must be a name or have a stage_latency(graph, groups) method, got {type(spec).__name__}")
    return spec


__all__ = ["CostModel", "AnalyticCostModel", "DeviceSpec", "get_cost_model"]
