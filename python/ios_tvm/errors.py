"""Errors ios_tvm raises for bad input and missing devices; each message says what is wrong and
what to do. The input errors are ``ValueError``s (callers that catch ``ValueError`` keep
working); :class:`DeviceNotFoundError` is a ``RuntimeError``."""

from __future__ import annotations


class IosTvmError(Exception):
    """Base class of ios_tvm's own errors."""


class UnsupportedModelError(IosTvmError, ValueError):
    """The model cannot be scheduled (dynamic shapes, control flow, no dataflow block, ops that
    TVM cannot lower)."""


class ScheduleMismatchError(IosTvmError, ValueError):
    """A schedule was made for another model, or is not a valid schedule of this one."""


class ScheduleFormatError(IosTvmError, ValueError):
    """A schedule file is corrupt or of an unknown format version."""


class DeviceNotFoundError(IosTvmError, RuntimeError):
    """Something needs the target's device (measuring, running) and it is not on this machine."""


class MemoryPlanError(IosTvmError, RuntimeError):
    """The memory plan of a scheduled build lets concurrent groups share storage (a build with
    ``keep_alive=False``, or a bug of ios_tvm's lowering)."""


class PipelineError(IosTvmError, RuntimeError):
    """TVM's pass pipeline is not the one ios_tvm was written for (another TVM version)."""


class CUDAGraphError(IosTvmError, ValueError):
    """A CUDA graph was asked for where none can be made (a target other than CUDA)."""


class CUDAGraphWarning(UserWarning):
    """A build asked for a CUDA graph got less: the scheduled run could not be captured whole
    (the build fell back to launching kernels one by one) or some stages stay outside the graph.
    Make it an error with ``warnings.simplefilter("error", CUDAGraphWarning)``."""
