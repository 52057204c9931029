"""Compile a model with its schedule: ``ios_tvm.build`` and ``ios_tvm.pipeline``.

The pipeline is TVM's default one for the target with ios_tvm's passes placed in it
(:mod:`ios_tvm.passes` lists the order): kernel schedules right after fusion, the schedule
lowered where fusion ends (:func:`ios_tvm.lower.lower_schedule`), the memory plan checked right
after it is made (:mod:`ios_tvm.memory`), and ``RewriteCUDAGraph`` left out unless a CUDA graph
is asked for (``cuda_graph=True``: :mod:`ios_tvm.cuda_graph` prepares the lowered module and
captures the whole scheduled run with TVM's rewrite). ``schedule=None`` goes through the very
same pipeline, so the sequential baseline differs from the scheduled model only in its order
and its stream calls.
"""

from __future__ import annotations

from typing import Any

import tvm

from . import runtime as _runtime  # noqa: F401  (registers ios_tvm.runtime.* globals)
from .cuda_graph import capture_pass, prepare_pass
from .errors import CUDAGraphError
from .graph import check_model, extract_graph
from .lower import lower_schedule
from .memory import verify_pass
from .passes import back_passes, front_passes
from .target import as_target, device_type_of
from .variants import apply_database_and_variants, variant_sites


def _check_cuda_graph(target: tvm.target.Target, cuda_graph: bool) -> None:
    if cuda_graph and target.kind.name != "cuda":
        raise CUDAGraphError(f"cuda_graph=True needs a CUDA target, not {target.kind.name!r}: CUDA graphs "
                             "capture CUDA kernel launches")


def kernel_passes(target: tvm.target.Target, tuned: bool, variants: Any = ()) -> list[tvm.transform.Pass]:
    """:func:`ios_tvm.passes.front_passes` with the tuning records of the enclosing context
    (``tuned``) and kernel ``variants`` (``(binding, kernel, trace)`` triples) applied."""
    schedules = apply_database_and_variants(target, tuned, variants) if tuned or variants else None
    return front_passes(target, schedules)


def passes(target: tvm.target.Target, schedule: Any = None, *, keep_alive: bool = True,
           device_id: int = -1, stop_after_planning: bool = False,
           tuned: bool = False, merges: Any = None, verify: bool = False,
           cuda_graph: bool = False, variants: Any = ()) -> list[tvm.transform.Pass]:
    """The pass list of :func:`pipeline` (``stop_after_planning``: end after memory planning;
    ``tuned``: apply the MetaSchedule database of the enclosing context right after fusion;
    ``merges``: the model's :class:`ios_tvm.merge.NodeMerges` when the schedule merges;
    ``verify``: check the memory plan right after it is made, see :func:`ios_tvm.memory.verify_memory`;
    ``cuda_graph``: capture the run as a CUDA graph, see :mod:`ios_tvm.cuda_graph` (with
    ``stop_after_planning``, the plan of the module that will be captured);
    ``variants``: the schedule's kernel variants, see :func:`ios_tvm.variants.variant_sites`)."""
    _check_cuda_graph(target, cuda_graph)
    front = kernel_passes(target, tuned)  # for merged kernels: no call site of theirs has a variant

    def lower_mini(mini: tvm.IRModule) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(front)(mini)

    lower = lower_schedule(schedule, device_type_of(target), device_id, keep_alive, merges, lower_mini)
    checks = [verify_pass()] if verify and schedule is not None else []
    prepare = [prepare_pass(target)] if cuda_graph else []
    return (kernel_passes(target, tuned, variants) + [lower] + prepare
            + back_passes(target, after_planning=checks, stop_after_planning=stop_after_planning,
                          capture=capture_pass() if cuda_graph else None))


def pipeline(target: str | dict | tvm.target.Target, schedule: Any = None, *, keep_alive: bool = True,
             device_id: int = -1, database: Any = "auto", verify: bool = True,
             merges: Any = None, cuda_graph: bool = False, graph: Any = None) -> tvm.transform.Pass:
    """A Relax pipeline for ``tvm.compile(mod, target, relax_pipeline=...)`` that lowers
    ``schedule`` into the module (``None``: the sequential baseline).

    ``database``: MetaSchedule tuning records applied after fusion, a work directory or a
    ``ms.Database``; ``"auto"`` (default) uses the database shipped for the target's
    architecture when there is one; ``None``: untuned (dlight's default schedules on CUDA).
    ``verify``: refuse a memory plan that lets concurrent groups share storage.
    ``merges``: the model's merge candidates if already known (else derived from the module);
    ``graph``: the model's graph if already extracted (used to place kernel variants).
    ``cuda_graph``: replay the run as one CUDA graph (CUDA targets; no ``PassContext`` setting
    needed): TVM's ``RewriteCUDAGraph`` on a module prepared so that no stage is cut, the
    stages' fork/join events becoming edges of the graph (:mod:`ios_tvm.cuda_graph`). The
    first run captures, later runs replay; a module that cannot be captured whole builds
    without a graph, with a :class:`~ios_tvm.errors.CUDAGraphWarning`. With ``schedule=None``:
    the sequential baseline as a CUDA graph, with the same (tuned) kernels.
    """
    from .tuning import resolve_database

    tgt = as_target(target)
    _check_cuda_graph(tgt, cuda_graph)
    db = resolve_database(database, tgt)
    has_variants = schedule is not None and bool(schedule.variants)
    # with the graph at hand, placing the variants fails here, with typed errors, not inside TVM's passes
    known_sites = variant_sites(schedule, graph, tgt) if has_variants and graph is not None else None

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.Pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        found = merges
        if found is None and schedule is not None and schedule.merges:
            found = model_merges(mod, tgt)
        sites: Any = known_sites
        if sites is None:
            sites = variant_sites(schedule, extract_graph(mod, tgt), tgt) if has_variants else ()
        seq = passes(tgt, schedule, keep_alive=keep_alive, device_id=device_id, tuned=db is not None,
                     merges=found, verify=verify, cuda_graph=cuda_graph, variants=sites)
        with tgt:
            if db is None:
                return tvm.transform.Sequential(seq)(mod)
            with db:
                return tvm.transform.Sequential(seq)(mod)

    return _pipeline


def model_merges(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """The conv units of ``mod`` mapped to the kernels of its graph."""
    from .merge import node_merges

    graph = extract_graph(mod, target)
    return node_merges(mod, graph)


def build(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any = None, *,
          keep_alive: bool = True, verify: bool = True, pool_size: int | None = None,
          database: Any = "auto", cuda_graph: bool = False, dtype: str | None = None) -> Any:
    """Compile ``mod`` for ``target`` with ``schedule`` lowered into it.

    Returns what ``tvm.compile`` returns (run it with ``relax.VirtualMachine``). With ``verify``
    the memory plan of the scheduled module is checked as it is made (:func:`ios_tvm.memory.verify_memory`). A schedule
    needing more streams than the runtime's pool (``pool_size``, default the current
    ``ios_tvm.runtime.pool_size()``) is refused. ``database``: tuned kernels, ``cuda_graph``: the
    run replayed as one CUDA graph, see :func:`pipeline`. ``dtype``: build the model converted to
    ``"float16"`` or ``"bfloat16"`` (:func:`ios_tvm.precision.convert`; a schedule made with
    ``optimize(..., dtype=...)`` needs the same). Tuned half-precision kernels for CUDA compile
    with TVM's ``StorageRewrite`` off (:func:`ios_tvm.precision.build_pass_context`).
    """
    from .precision import build_pass_context, check_schedule_dtype, convert

    check_model(mod)
    tgt = as_target(target)
    _check_cuda_graph(tgt, cuda_graph)
    if dtype is not None:
        mod = convert(mod, dtype)
    merges = graph = None
    if schedule is not None:
        check_schedule_dtype(schedule, mod)
        graph = extract_graph(mod, tgt)
        if schedule.merges:
            from .merge import node_merges

            graph.merges = merges = node_merges(mod, graph)
        schedule.validate(graph)  # typed errors before TVM's passes wrap them
        _runtime.check_num_streams(max(schedule.max_streams, 1),
                                   _runtime.pool_size() if pool_size is None else pool_size)
    with build_pass_context(tgt, mod, database, bool(schedule is not None and schedule.variants)):
        return tvm.compile(mod, tgt, relax_pipeline=pipeline(tgt, schedule, keep_alive=keep_alive, database=database,
                                                             verify=verify, merges=merges, graph=graph,
                                                             cuda_graph=cuda_graph))


def plan_memory(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any = None, *,
                keep_alive: bool = True, database: Any = None, cuda_graph: bool = False) -> tvm.IRModule:
    """``mod`` lowered with ``schedule`` up to and including static memory planning
    (``cuda_graph``: prepared for capture, see :mod:`ios_tvm.cuda_graph`)."""
    from .tuning import resolve_database

    tgt = as_target(target)
    db = resolve_database(database, tgt)
    merges = model_merges(mod, tgt) if schedule is not None and schedule.merges else None
    sites = variant_sites(schedule, extract_graph(mod, tgt), tgt) if schedule is not None and schedule.variants else ()
    seq = tvm.transform.Sequential(passes(tgt, schedule, keep_alive=keep_alive, stop_after_planning=True,
                                          tuned=db is not None, merges=merges, variants=sites,
                                          cuda_graph=cuda_graph))
    with tgt:
        if db is None:
            return seq(mod)
        with db:
            return seq(mod)


def planned_memory(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any = None, *,
                   database: Any = None, cuda_graph: bool = False) -> int:
    """Bytes of activation storage a build of ``mod`` with ``schedule`` (and ``cuda_graph``)
    plans (see :func:`ios_tvm.memory.planned_bytes`); compare with ``schedule=None`` for the
    price of concurrency."""
    from .memory import planned_bytes

    return planned_bytes(plan_memory(mod, target, schedule, database=database, cuda_graph=cuda_graph))

