"""The build pipeline: :func:`build` and :func:`pipeline` (:mod:`~ios_tvm.compiler.pipeline`),
the ``PassContext`` and TIR pipeline of tuned half-precision kernels
(:mod:`~ios_tvm.compiler.context`), tuning databases (:mod:`~ios_tvm.compiler.databases`),
compiled CUDA kernels cached by content (:mod:`~ios_tvm.compiler.cuda_cache`) and the cache
directory (:mod:`~ios_tvm.compiler.paths`)."""

from .context import TIR_PIPELINE
from .pipeline import build, passes, pipeline, plan_memory, planned_memory

__all__ = ["TIR_PIPELINE", "build", "passes", "pipeline", "plan_memory", "planned_memory"]
