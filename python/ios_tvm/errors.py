"""Errors ios_tvm raises for bad input. All are ``ValueError``s, so callers that already catch
``ValueError`` keep working; each message says what is wrong and what to do."""

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
