"""Kernel tuning with MetaSchedule: :func:`tune` one model, :func:`tune_models` several with one
budget (kernels they share tuned once). How trials are shared out is
:mod:`ios_tvm.tuning.allocator`; the MetaSchedule side :mod:`ios_tvm.tuning.scheduler`; the build pool
:mod:`ios_tvm.tuning.builder`; the databases builds read :mod:`ios_tvm.compiler.databases`."""

from .builder import tensor_core_builder
from .tuner import TuneReport, load_zoo_model, tune, tune_models

__all__ = ["TuneReport", "load_zoo_model", "tensor_core_builder", "tune", "tune_models"]
