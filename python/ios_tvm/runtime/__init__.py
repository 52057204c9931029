"""Python face of the C++ runtime library (``src/``): the stream pool, the stage calls compiled
models make, and the stage timer.

The names of the calls a lowered model makes (:data:`FORK`, :data:`SWITCH`, :data:`JOIN`) are
plain strings here, so the passes that insert or read them need no library. The library itself
is loaded on first use (``import ios_tvm`` loads it, so a program running an exported model
needs nothing else); without it (a bare source checkout) every function below raises
:class:`~ios_tvm.errors.MissingDependencyError` saying how to build it.
"""

from __future__ import annotations

from typing import Any, Sequence

#: global function names of the stage calls (``ios_tvm.runtime.stage_*``): a stage with several
#: groups is ``FORK(dev_type, dev_id, n)``, ``SWITCH(dev_type, dev_id, g)`` before group ``g``,
#: ``JOIN(dev_type, dev_id, *tensors)`` (every tensor the stage touches: a keep-alive)
FORK = "ios_tvm.runtime.stage_fork"
SWITCH = "ios_tvm.runtime.stage_switch"
JOIN = "ios_tvm.runtime.stage_join"
RUNTIME_CALLS = (FORK, SWITCH, JOIN)


def _api() -> Any:
    from . import _ffi  # loads the library and registers its globals, once

    return _ffi


def load() -> None:
    """Load the runtime library and register its ``ios_tvm.runtime.*`` globals (idempotent).

    Raises
    ------
    MissingDependencyError
        The library was not built (see the message).
    """
    _api()


def library_path() -> str:
    """Path of the runtime library (give it to ``tvm.exec.rpc_server --load-library``)."""
    return str(_api().LIB_PATH)


def version() -> str:
    """Version string compiled into the runtime library."""
    return str(_api().version())


def build_info() -> dict[str, str]:
    """Build facts of the runtime library, e.g. ``{"version": "0.1.0", "cuda": "0"}``."""
    pairs = (item.split("=", 1) for item in str(_api().build_info()).split(";") if item)
    return {key: value for key, value in pairs}


def check_num_streams(num_streams: int, pool_size: int) -> int:
    """Validate a stage's stream count against the pool size (raises ``ValueError``)."""
    return int(_api().check_num_streams(num_streams, pool_size))


def pool_size() -> int:
    """Most concurrent streams a stage may use (default 8)."""
    return int(_api().pool_size())


def set_pool_size(n: int) -> None:
    """Change the pool size (1..64); streams are created lazily, once, per device."""
    _api().set_pool_size(n)


def stages_run() -> int:
    """Concurrent stages joined on this thread since the library loaded (by the host: replays
    of a CUDA graph join none)."""
    return int(_api().stages_run())


def stages_recovered() -> int:
    """Stages left open on this thread by a run that stopped between fork and join (an exception,
    Ctrl-C), each closed by the next stage's fork so that later runs work."""
    return int(_api().stages_recovered())


def time_stage(device_type: int, device_id: int, groups: Sequence[Sequence[Any]], args: Sequence[Sequence[Any]],
               warmup: int, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` runs of a stage (after ``warmup``), run exactly as a lowered
    model runs it: ``groups[g][k]`` is a kernel function, ``args[g][k]`` its arguments."""
    return [float(x) for x in _api().time_stage(device_type, device_id, groups, args, warmup, repeat)]


def time_stage_graph(device_type: int, device_id: int, groups: Sequence[Sequence[Any]],
                     args: Sequence[Sequence[Any]], warmup: int, repeat: int) -> list[float]:
    """:func:`time_stage` as a model built with ``cuda_graph=True`` runs the stage: run once,
    captured as one CUDA graph, then ``warmup`` and ``repeat`` replays (CUDA only)."""
    return [float(x) for x in _api().time_stage_graph(device_type, device_id, groups, args, warmup, repeat)]
