"""Every TVM name ios_tvm relies on that TVM does not document as public, in one place.

ios_tvm is written for apache-tvm 0.27.0.post1. A few of the things it needs from TVM are
private helpers (a leading underscore), module-internal names, or strings TVM's C++ side looks
up; a TVM release may rename any of them without notice. They are reached only through this
module, so such a change breaks here, and :func:`check` (run by ``tests/test_tvm_private.py``)
names each one that moved, with the TVM version, instead of an ``AttributeError`` deep inside
a build.

==================================  ================================================================
what                                used by
==================================  ================================================================
``local_builder._worker_func``      the tuning build pool: MetaSchedule's build of one candidate
``local_builder._serialize_params`` the same, the candidate's parameters
``local_builder.default_build``     the tensor-core builder (its build with ``StorageRewrite`` off)
``tvm.support.popen_pool``          the tuning build pool's worker processes
``meta_schedule.utils.fork_seed``   one random state per tuning task, as MetaSchedule's own tuner
``tvm_callback_cuda_compile``       the compile cache: the global TVM's CUDA module compiles with
``vm.builtin.*`` names              CUDA-graph preparation and memory verification: which extern
                                    calls are the VM's own (not kernel launches)
``relax.backend.use_cuda_graph``    the ``PassContext`` key that turns ``RewriteCUDAGraph`` on
``tirx.disable_storage_rewrite``    the ``PassContext`` key that turns ``StorageRewrite`` off
``relax.Var.id_``                   a variable's identity across module copies (merge rewrite)
==================================  ================================================================
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

#: TVM's global function that compiles CUDA source (NVRTC or nvcc); the compile cache wraps it
CUDA_COMPILE_CALLBACK = "tvm_callback_cuda_compile"
#: prefix of the Relax VM's own extern functions (allocation, CUDA-graph capture, ...)
VM_BUILTIN_PREFIX = "vm.builtin"
#: the VM builtin that runs or captures one CUDA-graph region
CUDA_GRAPH_RUN_OR_CAPTURE = "vm.builtin.cuda_graph.run_or_capture"
#: the VM builtin that allocates the static storage of the CUDA-graph regions
CUDA_GRAPH_GET_CACHED_ALLOC = "vm.builtin.cuda_graph.get_cached_alloc"
#: ``PassContext`` key: run ``RewriteCUDAGraph`` in the Relax backend
USE_CUDA_GRAPH = "relax.backend.use_cuda_graph"
#: ``PassContext`` key: leave ``StorageRewrite`` out of the TIR pipeline
DISABLE_STORAGE_REWRITE = "tirx.disable_storage_rewrite"

_LOCAL_BUILDER = "tvm.s_tir.meta_schedule.builder.local_builder"
_SUPPORTED = "apache-tvm 0.27.0.post1"


class TVMChangedError(RuntimeError):
    """A TVM name ios_tvm relies on is gone or changed (another TVM than the one it supports)."""


def _attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        import tvm

        raise TVMChangedError(
            f"{module}.{name} is not in this TVM ({tvm.__version__}): ios_tvm relies on it and supports "
            f"{_SUPPORTED}; install that version, or report this with both versions ({err})") from None


def builder_worker(*args: Any) -> Any:
    """MetaSchedule's build of one tuning candidate (``local_builder._worker_func``): takes
    ``(f_build, f_export, mod, target, serialized_params)`` and returns the artifact path."""
    return _attr(_LOCAL_BUILDER, "_worker_func")(*args)


def builder_job(pass_config: dict[str, Any]) -> Callable[[tuple], Any]:
    """:func:`builder_worker` as a closure for a worker process (cloudpickle sends it by value, so
    the worker need not import ios_tvm), building under ``pass_config`` when given (a fresh
    worker's ``PassContext`` is the default one, so the build's is that plus ``pass_config``)."""

    def job(args: tuple) -> Any:
        import importlib

        import tvm

        worker = getattr(importlib.import_module("tvm.s_tir.meta_schedule.builder.local_builder"), "_worker_func")
        if not pass_config:
            return worker(*args)
        with tvm.transform.PassContext(config=dict(pass_config)):
            return worker(*args)

    return job


def serialize_params(params: Any) -> Any:
    """A candidate's parameters as the build worker takes them (``local_builder._serialize_params``)."""
    return _attr(_LOCAL_BUILDER, "_serialize_params")(params)


def default_build(mod: Any, target: Any, params: Any) -> Any:
    """MetaSchedule's build of one candidate in the builder process (``local_builder.default_build``)."""
    return _attr(_LOCAL_BUILDER, "default_build")(mod, target, params)


def popen_pool() -> tuple[type, Any]:
    """``(PopenPoolExecutor, StatusKind)`` of ``tvm.support.popen_pool``: TVM's pool of worker
    processes with per-job time limits."""
    return _attr("tvm.support.popen_pool", "PopenPoolExecutor"), _attr("tvm.support.popen_pool", "StatusKind")


def fork_seed(seed: int | None, n: int) -> list[int]:
    """``n`` random states derived from ``seed``, as MetaSchedule's tuner gives its tasks."""
    return list(_attr("tvm.s_tir.meta_schedule.utils", "fork_seed")(seed, n=n))


def cuda_compile_callback() -> Callable[..., Any]:
    """TVM's registered CUDA compile function (imports ``tvm.support.nvcc`` first, which
    registers it, so that a later import cannot replace a wrapper around it)."""
    import tvm_ffi

    importlib.import_module("tvm.support.nvcc")
    func = tvm_ffi.get_global_func(CUDA_COMPILE_CALLBACK, allow_missing=True)
    if func is None:
        raise TVMChangedError(f"TVM registers no {CUDA_COMPILE_CALLBACK!r} here; ios_tvm supports {_SUPPORTED}")
    return func


def is_vm_builtin(name: str) -> bool:
    """Whether an extern function name is one of the Relax VM's own (not a kernel launch)."""
    return name.startswith(VM_BUILTIN_PREFIX)


def var_key(var: Any) -> Any:
    """What identifies a Relax variable across copies of a module (``Var.id_``; the object
    itself where a variable has none)."""
    return var.id_ if hasattr(var, "id_") else id(var)


def _checks() -> Iterable[tuple[str, Callable[[], Any]]]:
    import tvm

    yield f"{_LOCAL_BUILDER}._worker_func", lambda: _attr(_LOCAL_BUILDER, "_worker_func")
    yield f"{_LOCAL_BUILDER}._serialize_params", lambda: _attr(_LOCAL_BUILDER, "_serialize_params")
    yield f"{_LOCAL_BUILDER}.default_build", lambda: _attr(_LOCAL_BUILDER, "default_build")
    yield "tvm.support.popen_pool", popen_pool
    yield "meta_schedule.utils.fork_seed", lambda: fork_seed(0, 2)
    yield CUDA_COMPILE_CALLBACK, cuda_compile_callback
    for name in (CUDA_GRAPH_RUN_OR_CAPTURE, CUDA_GRAPH_GET_CACHED_ALLOC):
        yield name, lambda name=name: _in_libraries(name, ("libtvm_compiler.so", "libtvm_runtime_cuda.so"))
    for key in (USE_CUDA_GRAPH, DISABLE_STORAGE_REWRITE):
        yield f"PassContext config {key!r}", lambda key=key: tvm.transform.PassContext(config={key: True})
    yield "relax.Var.id_", lambda: _var_id(tvm)


def _in_libraries(name: str, libraries: tuple[str, ...]) -> str:
    """Check that TVM's libraries still spell ``name`` (``RewriteCUDAGraph`` emits the CUDA-graph
    builtins, the CUDA runtime registers them; without a GPU the latter is not loaded, so the
    names are looked for in the files)."""
    import mmap
    from pathlib import Path

    import tvm

    lib_dir = Path(tvm.__file__).resolve().parent / "lib"
    for lib in libraries:
        path = lib_dir / lib
        if not path.is_file():
            raise TVMChangedError(f"no {lib} in {lib_dir}")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(name.encode() + b"\0") < 0:
                raise TVMChangedError(f"{lib} does not mention {name!r}")
    return name


def _var_id(tvm: Any) -> Any:
    from tvm import relax

    var = relax.Var("x", relax.TensorType((1,), "float32"))
    if not hasattr(var, "id_"):
        raise TVMChangedError("relax.Var has no id_")
    return var.id_


def check() -> list[str]:
    """Every private TVM name above that this TVM lacks or changed, with what went wrong
    (empty: all present)."""
    problems = []
    for what, probe in _checks():
        try:
            probe()
        except Exception as err:  # noqa: BLE001 - each probe may fail its own way
            problems.append(f"{what}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    return problems
