"""Stage cost models: :class:`CostModel` (the interface), :class:`AnalyticCostModel` and the
measured one (:mod:`ios_tvm.cost.measure`), found by name through a registry."""

from __future__ import annotations

from typing import Any

import tvm

from ..compiler.databases import DatabaseLike
from ..ir.target import TargetLike, as_target, has_gpu
from .analytic import AnalyticCostModel, DeviceSpec
from .model import CostModel, as_cost_model, cost_model_names, register_cost_model


def _measured(target: tvm.target.Target, *, database: DatabaseLike, cuda_graph: bool) -> CostModel:
    from .measure import MeasureConfig, MeasuredCostModel

    return MeasuredCostModel(target, MeasureConfig(launch="graph" if cuda_graph else "kernels"), database=database)


def _analytic(target: tvm.target.Target, *, database: DatabaseLike, cuda_graph: bool) -> CostModel:
    return AnalyticCostModel.for_target(target)


register_cost_model("analytic", _analytic)
register_cost_model("measure", _measured)


def default_cost_model_name(target: TargetLike) -> str:
    """``"measure"`` for a CUDA target whose GPU is present, else ``"analytic"`` (measuring the
    many candidate stages of a large model on a CPU takes long and shows no concurrency)."""
    return "measure" if as_target(target).kind.name == "cuda" and has_gpu() else "analytic"


def get_cost_model(spec: str | CostModel | Any | None, target: TargetLike, database: DatabaseLike = "auto",
                   cuda_graph: bool = False) -> CostModel:
    """Resolve ``cost_model=`` of :func:`ios_tvm.optimize`: a :class:`CostModel`, a registered
    name, any object with ``stage_latency``, or ``None`` (:func:`default_cost_model_name`);
    ``cuda_graph``: the build replays the run as a CUDA graph (a measured model times stages so)."""
    tgt = as_target(target)
    return as_cost_model(default_cost_model_name(tgt) if spec is None else spec, tgt, database, cuda_graph)


__all__ = ["CostModel", "AnalyticCostModel", "DeviceSpec", "get_cost_model", "default_cost_model_name",
           "register_cost_model", "cost_model_names", "as_cost_model"]
