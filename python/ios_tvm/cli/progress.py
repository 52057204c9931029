"""What the ``ios-tvm`` command is doing: progress lines on stderr with the seconds since the
start, and the phase a Ctrl-C interrupted."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class State:
    """The command under way: when it started, what it is waiting for, and how it may end."""

    start: float = 0.0
    phase: str = "starting"
    interrupted: bool = False
    measuring: bool = False  #: the search measures stage costs (a resumable cache)

    def reset(self) -> None:
        self.__dict__.update(State().__dict__)
        self.start = time.perf_counter()


#: the one command a process runs at a time
STATE = State()


def say(what: str, phase: str | None = None) -> None:
    """Announce a step on stderr (``ios-tvm: [  3.1 s] what``) and remember it (or ``phase``, a
    shorter name of it) for Ctrl-C."""
    STATE.phase = phase or what
    print(f"ios-tvm: [{time.perf_counter() - STATE.start:6.1f} s] {what}", file=sys.stderr, flush=True)


def on_interrupt(signum: int, frame: Any) -> None:
    """SIGINT: remember it (TVM may turn the ``KeyboardInterrupt`` into another error on its
    way out of C++), then interrupt as Python does."""
    STATE.interrupted = True
    raise KeyboardInterrupt


def interrupted() -> int:
    """Say what was interrupted (and that measured stages are kept); the exit status, 130."""
    resume = (" Stage costs measured so far are kept in the stage cache: the same command resumes from them."
              if STATE.measuring else "")
    print(f"ios-tvm: interrupted while {STATE.phase}.{resume}", file=sys.stderr, flush=True)
    return 130


class LogToStderr(logging.Handler):
    """ios_tvm's log records as ``ios-tvm: [warning: ]message`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for prefix in ("ios_tvm.tune: ", "ios_tvm: "):
            msg = msg.removeprefix(prefix)
        level = "warning: " if record.levelno >= logging.WARNING else ""
        print(f"ios-tvm: {level}{msg}", file=sys.stderr, flush=True)
