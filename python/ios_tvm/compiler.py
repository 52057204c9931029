"""Compile a model with its schedule: ``ios_tvm.build`` and ``ios_tvm.pipeline``.

The pipeline is TVM's default one for the target with ios_tvm's passes placed in it
(:mod:`ios_tvm.passes` lists the order): kernel schedules right after fusion, the schedule
lowered where fusion ends (:func:`ios_tvm.lower.lower_schedule`), the memory plan checked right
after it is made (:mod:`ios_tvm.memory`), and ``RewriteCUDAGraph`` left out unless asked for
(CUDA graph capture does not mix with stream switches; capturing scheduled runs belongs to
ios_tvm's runtime). ``schedule=None`` goes through the very same pipeline, so the sequential
baseline differs from the scheduled model only in its order and its stream calls.
"""

from __future__ import annotations

from typing import Any

import tvm

from . import runtime as _runtime  # noqa: F401  (registers ios_tvm.runtime.* globals)
from .graph import check_model, extract_graph
from .lower import lower_schedule
from .memory import verify_pass
from .passes import back_passes, front_passes
from .target import as_target, device_type_of
from .variants import apply_database_and_variants, variant_sites


def _check_cuda_graph(schedule: Any, cuda_graph: bool) -> None:
    if cuda_graph and schedule is not None:
        raise ValueError("cuda_graph=True is for the sequential baseline (schedule=None): TVM's CUDA graph "
                         "capture does not see ios_tvm's stream switches")


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
    ``cuda_graph``: keep TVM's ``RewriteCUDAGraph``, for the sequential baseline only;
    ``variants``: the schedule's kernel variants, see :func:`ios_tvm.variants.variant_sites`)."""
    _check_cuda_graph(schedule, cuda_graph)
    front = kernel_passes(target, tuned)  # for merged kernels: no call site of theirs has a variant

    def lower_mini(mini: tvm.IRModule) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(front)(mini)

    lower = lower_schedule(schedule, device_type_of(target), device_id, keep_alive, merges, lower_mini)
    checks = [verify_pass()] if verify and schedule is not None else []
    return (kernel_passes(target, tuned, variants) + [lower]
            + back_passes(target, after_planning=checks, stop_after_planning=stop_after_planning,
                          cuda_graph=cuda_graph))


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
    ``cuda_graph``: with ``schedule=None``, keep TVM's CUDA graph rewrite (it acts under
    ``PassContext(config={"relax.backend.use_cuda_graph": True})``): the sequential baseline
    launched as a CUDA graph, with the same (tuned) kernels.
    """
    from .tuning import resolve_database

    _check_cuda_graph(schedule, cuda_graph)
    tgt = as_target(target)
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
          database: Any = "auto") -> Any:
    """Compile ``mod`` for ``target`` with ``schedule`` lowered into it.

    Returns what ``tvm.compile`` returns (run it with ``relax.VirtualMachine``). With ``verify``
    the memory plan of the scheduled module is checked as it is made (:func:`ios_tvm.memory.verify_memory`). A schedule
    needing more streams than the runtime's pool (``pool_size``, default the current
    ``ios_tvm.runtime.pool_size()``) is refused. ``database``: tuned kernels, see :func:`pipeline`.
    """
    check_model(mod)
    tgt = as_target(target)
    merges = graph = None
    if schedule is not None:
        graph = extract_graph(mod, tgt)
        if schedule.merges:
            from .merge import node_merges

            graph.merges = merges = node_merges(mod, graph)
        schedule.validate(graph)  # typed errors before TVM's passes wrap them
        _runtime.check_num_streams(max(schedule.max_streams, 1),
                                   _runtime.pool_size() if pool_size is None else pool_size)
    return tvm.compile(mod, tgt, relax_pipeline=pipeline(tgt, schedule, keep_alive=keep_alive, database=database,
                                                         verify=verify, merges=merges, graph=graph))


def plan_memory(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any = None, *,
                keep_alive: bool = True, database: Any = None) -> tvm.IRModule:
    """``mod`` lowered with ``schedule`` up to and including static memory planning."""
    from .tuning import resolve_database

    tgt = as_target(target)
    db = resolve_database(database, tgt)
    merges = model_merges(mod, tgt) if schedule is not None and schedule.merges else None
    sites = variant_sites(schedule, extract_graph(mod, tgt), tgt) if schedule is not None and schedule.variants else ()
    seq = tvm.transform.Sequential(passes(tgt, schedule, keep_alive=keep_alive, stop_after_planning=True,
                                          tuned=db is not None, merges=merges, variants=sites))
    with tgt:
        if db is None:
            return seq(mod)
        with db:
            return seq(mod)


def planned_memory(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any = None, *,
                   database: Any = None) -> int:
    """Bytes of activation storage a build of ``mod`` with ``schedule`` plans (see
    :func:`ios_tvm.memory.planned_bytes`); compare with ``schedule=None`` for the price of
    concurrency."""
    from .memory import planned_bytes

    return planned_bytes(plan_memory(mod, target, schedule, database=database))

