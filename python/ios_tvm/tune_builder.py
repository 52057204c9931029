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

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder import local_builder as _lb
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

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
        :data:`ios_tvm.precision.STORAGE_REWRITE_OFF`: half-precision tensor-core kernels do not
        compile with TVM 0.27's ``StorageRewrite``); the final builds use the same settings.
    """

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 120.0, max_process_uses: int = 256,
                 pass_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_sec = timeout_sec
        self.pass_config = dict(pass_config or {})
        self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=timeout_sec,
                                      initializer=_worker_initializer(), maximum_process_uses=max_process_uses)
        # start the workers now (they import TVM), while the caller prepares the tasks
        self._warm = [self.pool.submit(_noop()) for _ in range(self.max_workers)]

    def wait_ready(self) -> None:
        """Block until every worker has started (imported TVM)."""
        for fut in self._warm:
            fut.result()
        self._warm = []

    def build(self, build_inputs: list[Any]) -> list[Any]:
        jobs = [(None, None, x.mod, x.target, _lb._serialize_params(x.params)) for x in build_inputs]
        results = []
        for res in self.pool.map_with_error_catching(_build_job(self.pass_config), jobs):
            if res.status == StatusKind.COMPLETE:
                results.append(BuilderResult(res.value, None))
            elif res.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"PoolBuilder: timeout, killed after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"PoolBuilder: an exception occurred\n{res.value}"))
        return results

    def shutdown(self) -> None:
        """Stop the worker processes."""
        self.pool.shutdown(wait=True)


def _build_job(pass_config: dict[str, Any]) -> Callable[[tuple], Any]:
    """MetaSchedule's build of one candidate, under ``pass_config`` when given (a closure:
    cloudpickle sends it by value, so workers need not import ios_tvm)."""

    def job(args: tuple) -> Any:
        if not pass_config:
            return _lb._worker_func(*args)
        import tvm

        cur = tvm.transform.PassContext.current()  # the worker's default, with the settings added
        with tvm.transform.PassContext(opt_level=cur.opt_level, config={**dict(cur.config), **pass_config}):
            return _lb._worker_func(*args)

    return job


def _noop() -> Callable[[], None]:
    """A function that does nothing, sent by value (workers need not import ios_tvm)."""

    def noop() -> None:
        return None

    return noop


def default_builder(build_timeout_s: float = 120.0, pass_config: dict[str, Any] | None = None) -> Any:
    """A :class:`PoolBuilder` on every logical CPU core."""
    return PoolBuilder(max_workers=os.cpu_count() or 1, timeout_sec=build_timeout_s, pass_config=pass_config)
