"""The ``PassContext`` a build runs in: the current one, plus what TVM 0.27 needs to compile
tuned half-precision kernels for CUDA.

MetaSchedule's tensor-core schedules (``wmma``, see
:data:`ios_tvm.ir.precision.TENSOR_CORE_INTRINSICS`) of a float16 convolution with float32
accumulation stage their float16 operands and their float32 results in dynamic shared memory;
TVM 0.27's ``StorageRewrite`` reuses the float16 buffer for the float32 results and leaves the
store's ``tvm_access_ptr`` on the float16 buffer, which ``LowerIntrin`` then refuses
("tvm_access_ptr element type must match the source buffer"). :func:`build_pass_context` turns
``StorageRewrite`` off for such builds (``tirx.disable_storage_rewrite``, a TVM option);
``ios_tvm.build`` and ``ios_tvm.pipeline`` use it. MetaSchedule's own builder compiles every
candidate it tunes in the same way: tuning uses
:func:`ios_tvm.tuning.builder.tensor_core_builder` instead.
"""

from __future__ import annotations

import contextlib

import tvm

from ..ir.backend import pass_context_with
from ..ir.precision import HALF, model_dtype
from ..ir.tvm_private import DISABLE_STORAGE_REWRITE
from .databases import DatabaseLike, resolve_database

#: the ``PassContext`` settings of a build of tuned half-precision CUDA kernels
STORAGE_REWRITE_OFF = {DISABLE_STORAGE_REWRITE: True}


def needs_storage_rewrite_off(target: tvm.target.Target, mod: tvm.IRModule, database: DatabaseLike = "auto",
                              variants: bool = False) -> bool:
    """Whether a build of ``mod`` for ``target`` compiles tuned half-precision CUDA kernels
    (from ``database``, as ``ios_tvm.build`` takes it, or kernel ``variants``): the builds
    TVM 0.27's ``StorageRewrite`` breaks (see the module docstring)."""
    if target.kind.name != "cuda" or model_dtype(mod) not in HALF:
        return False
    return variants or resolve_database(database, target) is not None


def build_pass_context(target: tvm.target.Target, mod: tvm.IRModule, database: DatabaseLike = "auto",
                       variants: bool = False) -> contextlib.AbstractContextManager:
    """The current ``PassContext``, with :data:`STORAGE_REWRITE_OFF` added where
    :func:`needs_storage_rewrite_off` says so."""
    if not needs_storage_rewrite_off(target, mod, database, variants):
        return contextlib.nullcontext()
    return pass_context_with(STORAGE_REWRITE_OFF)


#: module attribute the Relax pipeline sets on a module whose kernels need ``StorageRewrite`` off
STORAGE_REWRITE_ATTR = "ios_tvm.disable_storage_rewrite"
#: the TIR pipeline of ios_tvm's builds (``tvm.compile(..., tir_pipeline=TIR_PIPELINE)``): TVM's
#: default one, with ``StorageRewrite`` off for modules :func:`storage_rewrite_off` marked
TIR_PIPELINE = "ios_tvm"


def storage_rewrite_off(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` marked for :data:`TIR_PIPELINE` to compile without ``StorageRewrite``."""
    return mod.with_attr(STORAGE_REWRITE_ATTR, True)


def _tir_pipeline(**kwargs: object) -> tuple:
    """TVM's default TIR pipeline, run with :data:`STORAGE_REWRITE_OFF` on a marked module
    (``(pipeline, finalize_host_passes, finalize_device_passes)``, as TVM's registry wants)."""
    inner, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default", **kwargs)

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.TIRPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if mod.attrs is not None and bool(mod.attrs.get(STORAGE_REWRITE_ATTR, False)):
            with pass_context_with(STORAGE_REWRITE_OFF):
                return inner(mod)
        return inner(mod)

    return _pipeline, finalize_host, finalize_device


tvm.tirx.compilation_pipeline.register_tir_pipeline(TIR_PIPELINE, _tir_pipeline)
