"""ios_tvm's graph-level passes, offered the way ``tvm.relax.transform`` offers TVM's: each name is
a factory that returns a ``tvm.transform.Pass``.

==========================  ============================================================================
pass                        what it does
==========================  ============================================================================
:func:`ConvertPrecision`    a float32 model in float16 / bfloat16 (before fusion)
:func:`ApplyKernelSchedules` tuning records and per-call-site kernel variants, right after ``FuseTIR``
:func:`SpliceMerges`        each merge stage's kernels replaced by one merged kernel and a split
:func:`LowerSchedule`       kernels reordered by stage, stream fork / switch / join calls, keep-alives
:func:`PrepareCUDAGraph`    inputs and outputs copied so that no stage is cut by a capture region
:func:`VerifyMemory`        after ``StaticPlanBlockMemory``: refuses storage shared by concurrent groups
:func:`CaptureCUDAGraph`    in ``RewriteCUDAGraph``'s place: the whole scheduled run as one CUDA graph
:func:`MarkVendorKernels`   chosen kernel calls pointed at marked copies (before ``LowerSchedule``)
:func:`UseVendorKernels`    marked calls become cuDNN / cuBLASLt ``call_dps_packed`` calls (after it)
==========================  ============================================================================

Where each runs in a build is written once, in :mod:`ios_tvm.ir.backend` (TVM's phases) and
:func:`ios_tvm.compiler.pipeline.passes` (ios_tvm's, placed between them). Outside a build, a
pass runs on a module like any TVM pass::

    lowered = ios_tvm.transform.LowerSchedule(schedule, device_type=2)(fused_module)
"""

from .cuda_graph import CaptureCUDAGraph, PrepareCUDAGraph
from .kernel_schedules import ApplyKernelSchedules
from .lower import LowerSchedule
from .memory import VerifyMemory
from .merge import SpliceMerges
from .precision import ConvertPrecision
from .vendor import MarkVendorKernels, UseVendorKernels

__all__ = ["ApplyKernelSchedules", "CaptureCUDAGraph", "ConvertPrecision", "LowerSchedule", "PrepareCUDAGraph",
           "SpliceMerges", "VerifyMemory", "MarkVendorKernels", "UseVendorKernels"]
