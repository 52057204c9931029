"""``ios-tvm`` command line (also ``python -m ios_tvm``).

    ios-tvm demo                          optimize a zoo model for this machine, print the schedule
    ios-tvm optimize inception_v3 -o s.json --target '{"kind": "cuda", "arch": "sm_90"}'
    ios-tvm optimize model.onnx -o s.json  an ONNX file instead of a zoo model
    ios-tvm build inception_v3 --schedule s.json -o model.so
    ios-tvm bench inception_v3            sequential vs greedy vs IOS, end to end, this machine
    ios-tvm show s.json [--png s.png]
    ios-tvm models
    ios-tvm tune inception_v3 googlenet --time-budget 300   MetaSchedule into tuning/<arch>/<model>/

How it fails: a mistake of the user (an ``ios_tvm.errors.IosTvmError``, or a bad option that
argparse finds) is one ``ios-tvm: error: ...`` line and exit status 2; Ctrl-C is one line and
exit status 130 (a measured search keeps what it measured, so the same command resumes); a reader
that closes the output early (``| head``) ends the command quietly with status 141; anything
else is a bug, shown with its traceback and one line asking to report it (exit status 1). While it
works, each step it waits on is announced on stderr with the seconds since the start
(:mod:`ios_tvm.cli.progress`).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Sequence

from .._version import __version__
from ..errors import IosTvmError, MemoryPlanError
from .parser import build_parser
from .progress import STATE, LogToStderr, interrupted, on_interrupt


def _versions() -> str:
    import platform

    parts = [f"ios_tvm {__version__}"]
    for module in ("tvm", "tvm_ffi"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except Exception:  # noqa: BLE001 - reporting a bug must not fail on a broken install
            parts.append(f"{module} (not importable)")
    parts.append(f"Python {platform.python_version()} on {platform.platform()}")
    return ", ".join(parts)


def _bug() -> int:
    """The exception being handled is a bug: its traceback, and one line asking to report it."""
    traceback.print_exc()
    print(f"ios-tvm: internal error while {STATE.phase}: this is a bug in ios_tvm (or TVM), not a mistake of "
          f"yours. Please report it with the command line, the traceback above and these versions: "
          f"{_versions()}", file=sys.stderr, flush=True)
    return 1


def _error_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"ios-tvm: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a mistake, 130: interrupted, 1: a bug)."""
    args = build_parser().parse_args(argv)  # argparse's mistakes: one line, exit status 2
    STATE.reset()
    previous = signal.signal(signal.SIGINT, on_interrupt) if _is_main_thread() else None
    log = logging.getLogger("ios_tvm")
    handler = LogToStderr(logging.INFO)
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:  # the reader of our output went away (`ios-tvm show s.json | head -3`)
        return _reader_gone()
    except IosTvmError as err:
        if STATE.interrupted:
            return interrupted()
        if isinstance(err, MemoryPlanError):  # the CLI always builds with keep-alive: a bug of the lowering
            return _bug()
        print(_error_line(err), file=sys.stderr, flush=True)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug: show it whole
        if STATE.interrupted:  # TVM turned the KeyboardInterrupt into another error
            return interrupted()
        return _bug()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _reader_gone() -> int:
    """Stdout's reader closed the pipe: stop quietly, as a command killed by SIGPIPE does (exit
    status 141), pointing stdout at /dev/null so the interpreter's last flush does not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no file descriptor (tests)
        pass
    return 128 + signal.SIGPIPE


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
