"""Building tuning candidates on every CPU core without paying a process start per batch.

MetaSchedule's ``LocalBuilder`` starts a fresh pool of worker processes for every batch, and each
worker's first build imports TVM's tensor intrinsics: hundreds of TVMScript functions whose
parser calls ``inspect.stack()``, which for the frames of Python's frozen import machinery makes
``inspect.getmodule`` rescan every loaded module (tens of seconds on a small or busy machine,
every batch). :class:`PoolBuilder` does the same builds (MetaSchedule's own worker function) on
one pool kept for the whole run, its workers recycled after ``max_process_uses`` builds (what
``LocalBuilder``'s fresh pools guard against is memory growth in long-lived workers), started
while the main process is still preparing, and with :func:`fast_tvmscript_parsing` applied.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

from ..compiler.context import STORAGE_REWRITE_OFF
from ..ir.backend import pass_context_with
from ..ir.tvm_private import builder_job, default_build, popen_pool, serialize_params

_FROZEN = ("importlib._bootstrap", "importlib._bootstrap_external")


def fast_tvmscript_parsing() -> None:
    """Tell ``inspect`` that frames of the frozen import machinery have no module: the answer
    ``inspect.getmodule`` finds anyway, without rescanning every loaded module on each call.
    Makes importing ``tvm.s_tir.tensor_intrin`` (the first ``TuneContext`` or build of a
    process) several times faster; changes nothing else."""
    import inspect

    for name in _FROZEN:
        inspect.modulesbyfile.setdefault(f"<frozen {name}>", "<frozen, no module>")


def _worker_initializer() -> Callable[[], None]:
    """:func:`fast_tvmscript_parsing` plus the intrinsics import, as a closure: cloudpickle sends
    it by value, so workers need not import ios_tvm."""

    def init() -> None:
        import inspect

        for name in _FROZEN:
            inspect.modulesbyfile.setdefault(f"<frozen {name}>", "<frozen, no module>")
        import tvm.s_tir.tensor_intrin  # noqa: F401 - what every build imports first

    return init


@derived_object
class PoolBuilder(PyBuilder):
    """MetaSchedule's local builds on a worker pool that lives as long as the builder.

    Parameters
    ----------
    max_workers
        Worker processes (default: every logical CPU core).
    timeout_sec
        Per-candidate build limit; a candidate over it is reported as a build error.
    max_process_uses
        Builds after which a worker process is replaced.
    pass_config
        ``PassContext`` settings every candidate is built under (e.g.
        :data:`ios_tvm.compiler.context.STORAGE_REWRITE_OFF`: half-precision tensor-core kernels do not
        compile with TVM 0.27's ``StorageRewrite``); the final builds use the same settings.
    """

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 120.0, max_process_uses: int = 256,
                 pass_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_sec = timeout_sec
        self.pass_config = dict(pass_config or {})
        executor, self._status = popen_pool()
        self.pool = executor(max_workers=self.max_workers, timeout=timeout_sec,
                                      initializer=_worker_initializer(), maximum_process_uses=max_process_uses)
        # start the workers now (they import TVM), while the caller prepares the tasks
        self._warm = [self.pool.submit(_noop()) for _ in range(self.max_workers)]

    def wait_ready(self) -> None:
        """Block until every worker has started (imported TVM)."""
        for fut in self._warm:
            fut.result()
        self._warm = []

    def build(self, build_inputs: list[Any]) -> list[Any]:
        jobs = [(None, None, x.mod, x.target, serialize_params(x.params)) for x in build_inputs]
        results = []
        for res in self.pool.map_with_error_catching(builder_job(self.pass_config), jobs):
            if res.status == self._status.COMPLETE:
                results.append(BuilderResult(res.value, None))
            elif res.status == self._status.TIMEOUT:
                results.append(BuilderResult(None, f"PoolBuilder: timeout, killed after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"PoolBuilder: an exception occurred\n{res.value}"))
        return results

    def shutdown(self) -> None:
        """Stop the worker processes."""
        self.pool.shutdown(wait=True)


def _noop() -> Callable[[], None]:
    """A function that does nothing, sent by value (workers need not import ios_tvm)."""

    def noop() -> None:
        return None

    return noop


def default_builder(build_timeout_s: float = 120.0, pass_config: dict[str, Any] | None = None) -> Any:
    """A :class:`PoolBuilder` on every logical CPU core."""
    return PoolBuilder(max_workers=os.cpu_count() or 1, timeout_sec=build_timeout_s, pass_config=pass_config)


#: the build function :func:`tensor_core_builder`'s workers call (a TVM global function)
BUILD_FUNC = "ios_tvm.tune.build_without_storage_rewrite"


def _build_without_storage_rewrite(mod: tvm.IRModule, target: tvm.target.Target, params: Any) -> Any:
    """MetaSchedule's ``default_build`` of a candidate, with ``StorageRewrite`` off."""
    with pass_context_with(STORAGE_REWRITE_OFF):
        return default_build(mod, target, params)


def register_build_func() -> None:
    """Register :data:`BUILD_FUNC` in this process (a builder worker's initializer)."""
    tvm.register_global_func(BUILD_FUNC, _build_without_storage_rewrite, override=True)


def tensor_core_builder(timeout_sec: float = 120.0, max_workers: int | None = None) -> Any:
    """MetaSchedule's ``LocalBuilder`` compiling each candidate with ``StorageRewrite`` off, for
    ``ios_tvm.tune(..., builder=...)`` of half-precision models on CUDA: with the default
    builder TVM 0.27 fails on every float16 tensor-core candidate (see
    :mod:`ios_tvm.compiler.context`). ``timeout_sec`` per candidate, as ``ios_tvm.tune``'s
    ``build_timeout_s``."""
    from tvm.s_tir import meta_schedule as ms

    register_build_func()
    return ms.builder.LocalBuilder(timeout_sec=timeout_sec, max_workers=max_workers, f_build=BUILD_FUNC,
                                   initializer=register_build_func)
