"""Errors ios_tvm raises for mistakes a user can fix; each message says what is wrong and what to do.

Every one is an :class:`IosTvmError`. The ``ios-tvm`` command line turns these (and only these,
besides argparse's own) into one ``ios-tvm: error: ...`` line and exit status 2; anything else
that escapes is a bug of ios_tvm (or of TVM) and is shown with its traceback and a request to
report it. Internal invariants are ``assert`` statements, not these types.

Each error also derives from the standard exception a caller would have caught before it existed
(``ValueError`` for bad input, ``FileNotFoundError`` for a missing file, ``ImportError`` for a
missing optional package, ``RuntimeError`` for a missing device), so such callers keep working.

============================  ==================================================================
type                          raised for
============================  ==================================================================
InvalidArgumentError          an argument or option value ios_tvm cannot use (a size <= 0, an
                              input shape of the wrong rank, an output path that is a directory)
TargetError                   not a TVM target, or a target kind ios_tvm has no runtime for
InputFileError                a file that is not what it should be (not ONNX, truncated)
MissingFileError              a file or directory that does not exist (also FileNotFoundError)
OutputFileError               a file ios_tvm was asked to write that cannot be written (a read-only
                              folder or file system, an immutable file; also OSError), or that
                              another process wrote while the command ran
DatabaseError                 a tuning database directory that does not exist, holds none, or is corrupt
MissingDependencyError        an optional package that is not installed (also ImportError)
UnsupportedModelError         a model ios_tvm cannot schedule (dynamic shapes, control flow)
ScheduleFormatError           a corrupt schedule file or an unknown format version
ScheduleMismatchError         a schedule made for another model or target, or not valid for it
DeviceNotFoundError           the target's device is not on this machine (also RuntimeError)
MemoryPlanError               a scheduled build's memory plan lets concurrent groups share storage
                              (``keep_alive=False``; with keep-alive, a bug of ios_tvm's lowering)
PipelineError                 TVM's pass pipeline is not the one ios_tvm was written for
CUDAGraphError                a CUDA graph asked for a target that is not CUDA
TuningError                   bad tuning input (no models, a budget or trial count out of range)
PrecisionError                a precision ios_tvm cannot convert to (``float16`` and ``bfloat16``
                              only, from ``float32``), or a model already in another half type
MemoryBudgetError             a memory budget that is not a size, or that no schedule meets (the
                              message and ``least`` say the smallest it could meet)
============================  ==================================================================

:class:`CUDAGraphWarning` (a warning, not an error) says a build asked for a CUDA graph got less.

Every error is registered with tvm-ffi, so an error raised inside one of ios_tvm's passes, which
TVM runs from C++, reaches the caller of ``tvm.compile`` with its own type.
"""

from __future__ import annotations


class IosTvmError(Exception):
    """Base class of ios_tvm's own errors: a mistake of the caller, with what to do in the message."""


class InvalidArgumentError(IosTvmError, ValueError):
    """An argument or option value ios_tvm cannot use."""


class TargetError(IosTvmError, ValueError):
    """Not a valid TVM target, or a target kind ios_tvm does not build for (only cuda and llvm)."""


class InputFileError(IosTvmError, ValueError):
    """A file that is not what it should be: not an ONNX model, truncated, unreadable."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A file or directory the call names does not exist."""


class OutputFileError(IosTvmError, OSError):
    """A file ios_tvm was asked to write cannot be written (what was there is left as it was)."""


class DatabaseError(IosTvmError, ValueError):
    """A tuning database was named that does not exist or cannot be read (reads never create one)."""


class MissingDependencyError(IosTvmError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip extra."""


class UnsupportedModelError(IosTvmError, ValueError):
    """The model cannot be scheduled (dynamic shapes, control flow, no dataflow block, ops that
    TVM cannot lower)."""


class ScheduleMismatchError(IosTvmError, ValueError):
    """A schedule was made for another model or target, or is not a valid schedule of this one."""


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


class TuningError(IosTvmError, ValueError):
    """Bad tuning input: no models, a time budget or trial count out of range, a database that
    cannot be pruned."""


class PrecisionError(IosTvmError, ValueError):
    """A precision ios_tvm cannot convert a model to (only ``float16`` and ``bfloat16`` from
    ``float32``), or a model that is already in another half-precision type."""


class MemoryBudgetError(InvalidArgumentError):
    """A memory budget that is not a size (``1.25x``, ``300MiB``, bytes), or that no schedule
    meets; ``least``: the smallest budget (bytes) that one met, when known."""

    def __init__(self, message: str, least: int | None = None) -> None:
        super().__init__(message)
        self.least = least


def _typed_across_ffi() -> None:
    """Register every error above with tvm-ffi under ``ios_tvm.<name>``, so one raised inside a
    pass (which TVM runs from C++) comes back out of ``tvm.compile`` as the same type, not as a
    ``RuntimeError`` holding its message."""
    try:
        import tvm_ffi
    except ImportError:  # without tvm-ffi no pass runs either
        return
    for cls in _ERRORS:
        tvm_ffi.register_error(f"ios_tvm.{cls.__name__}", cls)


_ERRORS = (IosTvmError, InvalidArgumentError, TargetError, InputFileError, MissingFileError, OutputFileError,
           DatabaseError, MissingDependencyError, UnsupportedModelError, ScheduleMismatchError, ScheduleFormatError,
           DeviceNotFoundError, MemoryPlanError, PipelineError, CUDAGraphError, TuningError, PrecisionError,
           MemoryBudgetError)
_typed_across_ffi()
