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


class TuningError(IosTvmError, ValueError):
    """Bad tuning input: no models, a time budget or trial count out of range, a database that
    cannot be pruned."""
