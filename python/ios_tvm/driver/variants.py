"""Choosing kernel variants: the steepest descent per concurrent stage
(:func:`ios_tvm.core.descent.refine_stage`, pure) driven by measurements on the device
(:func:`select_variants`).

What a variant is, where it comes from and how builds apply it:
:mod:`ios_tvm.transform.kernel_schedules`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Mapping, Sequence

import tvm

from ..compiler.context import needs_storage_rewrite_off
from ..compiler.databases import DatabaseLike, resolve_database
from ..compiler.pipeline import compile_kernels
from ..core.descent import refine_stage
from ..core.schedule import Schedule, Stage
from ..cost.measure import MeasureConfig, MeasuredCostModel
from ..errors import DatabaseError, DeviceNotFoundError, InvalidArgumentError
from ..ir.graph import OpGraph, extract_graph
from ..ir.target import TargetLike, as_target, target_key
from ..transform.kernel_schedules import Variant, apply_trace, kernel_variants

logger = logging.getLogger("ios_tvm")


# -- the driver ----------------------------------------------------------------------------------
def select_variants(mod: tvm.IRModule, target: TargetLike, schedule: Schedule, *,
                    database: DatabaseLike = "auto", top_k: int = 3, max_moves: int = 4, min_gain: float = 0.03,
                    config: MeasureConfig | None = None, graph: OpGraph | None = None) -> Schedule:
    """Re-measure the concurrent stages of ``schedule`` with the runner-up schedules in
    ``database`` and return the schedule with the variants that win.

    Parameters
    ----------
    mod, target
        The model and target ``schedule`` was made for (the target's device must be present).
    schedule
        An :class:`ios_tvm.Schedule` of ``mod``.
    database
        The tuning database (a directory, a ``ms.Database``, or ``"auto"``: the one shipped for
        the target). Without one there are no variants to try.
    top_k
        Distinct schedules considered per kernel (the default one included).
    max_moves, min_gain
        See :func:`ios_tvm.core.descent.refine_stage`.
    config
        A :class:`ios_tvm.cost.measure.MeasureConfig` (local measurement only).

    Returns
    -------
    Schedule
        Same stages; ``variants`` holds the winning call sites, ``meta["variants"]`` says what was
        tried and gained. When ``schedule`` was costed by measurement, the changed stages carry
        their new measured latency.
    """
    if top_k < 1 or max_moves < 1 or not 0 <= min_gain < 1:
        raise InvalidArgumentError(f"need top_k >= 1, max_moves >= 1 and 0 <= min_gain < 1, got {top_k}, {max_moves}, {min_gain}")
    tgt = as_target(target)
    db = resolve_database(database, tgt)
    if db is None:
        raise DatabaseError("kernel variants come from a tuning database, and there is none for this target: "
                         "tune first (ios_tvm.tune) and pass database=<its work_dir> (CLI: --database DIR)")
    config = config or MeasureConfig()
    if config.rpc is not None:
        raise NotImplementedError("variant selection measures on this machine's device; drop rpc= from the MeasureConfig")
    try:
        model = MeasuredCostModel(tgt, config, database=db)
    except DeviceNotFoundError as err:  # say what to do here
        raise DeviceNotFoundError(f"kernel variants are chosen by timing stages on the target's device ({err}); run "
                                  "select_variants on the GPU machine (CLI: leave out --variants)") from None
    graph = graph or extract_graph(mod, tgt)
    schedule.validate(graph)
    options_by_kernel = kernel_variants(graph, db, top_k)
    names = [n.name for n in graph.nodes]

    def options_of(v: int) -> int:  # a call site whose binding name is not unique cannot be placed
        return len(options_by_kernel.get(graph.nodes[v].kernel, ())) if names.count(names[v]) == 1 else 1

    concurrent = [i for i, st in enumerate(schedule.stages) if st.kind == "concurrent" and len(st.groups) > 1]
    stages = [i for i in concurrent if any(options_of(v) > 1 for v in schedule.stages[i].nodes)]
    if concurrent and not stages:
        logger.warning("ios_tvm: the database has no second schedule for any kernel of the %d concurrent stages, "
                       "so there are no variants to try; tune the model into it first (ios_tvm.tune)", len(concurrent))
    timed: dict[tuple[int, int], Any] = _build_variants(graph, options_by_kernel, schedule, stages, tgt, model)

    bar = None
    if config.progress and stages:
        from tqdm import tqdm

        bar = tqdm(total=len(stages), desc="kernel variants", unit="stage", file=sys.stderr, disable=None)
    retried = {v for i in stages for v in schedule.stages[i].nodes}
    chosen = {v: var for v, var in schedule.variants.items() if v not in retried}
    new_stages = [Stage([list(g) for g in st.groups], st.kind, st.latency) for st in schedule.stages]
    tried = evaluated = 0
    gain = 0.0
    try:
        for i in stages:
            st = schedule.stages[i]
            groups = tuple(tuple(g) for g in st.groups)
            options = {v: options_of(v) for v in st.nodes}

            def measure(choice: Mapping[int, int], groups=groups) -> float:
                return model.measure_stage(graph, groups, {v: timed[(v, k)] for v, k in choice.items()})

            result = refine_stage(options, measure, max_moves=max_moves, min_gain=min_gain)
            tried += 1
            evaluated += result.evaluated
            for v, k in result.choice.items():
                var = options_by_kernel[graph.nodes[v].kernel][k]
                chosen[v] = {"kernel": graph.nodes[v].kernel, "target": target_key(tgt), "rank": var.rank,
                             "run_secs": var.run_secs, "trace": var.trace}
            if result.choice:
                if schedule.measured:  # never mix in another model's units
                    new_stages[i].latency = result.latency_s
                gain += result.base_s - result.latency_s
                logger.info("ios_tvm: stage %d: variants %s, %.1f -> %.1f us", i, result.choice,
                            result.base_s * 1e6, result.latency_s * 1e6)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    meta = {**schedule.meta, "variants": {"top_k": top_k, "max_moves": max_moves, "min_gain": min_gain,
                                          "stages_tried": tried, "measurements": evaluated,
                                          "call_sites": len(chosen),
                                          "measured_gain_s": gain}}
    out = Schedule(new_stages, schedule.fingerprint, list(schedule.node_names), list(schedule.kernels),
                   list(schedule.edges), meta, chosen)
    out.validate(graph)
    return out


def _build_variants(graph: OpGraph, options: Mapping[str, list[Variant]], schedule: Schedule,
                    stages: Sequence[int], target: tvm.target.Target, model: MeasuredCostModel
                    ) -> dict[tuple[int, int], Any]:
    """Compile every alternative variant the stages may try, once per (kernel, rank), and return
    ``(node, rank) -> kernel function`` (rank 0 is the model's own kernel, never needed here)."""
    funcs: dict[str, tvm.tirx.PrimFunc] = {}
    names: dict[tuple[int, int], str] = {}
    for i in stages:
        for v in schedule.stages[i].nodes:
            kernel = graph.nodes[v].kernel
            for var in options.get(kernel, ())[1:]:
                name = names[(v, var.rank)] = f"ios_variant_{kernel}_{var.rank}"
                if name not in funcs:
                    funcs[name] = apply_trace(graph.mod[kernel], var.trace).with_attr("global_symbol", name)
    if not funcs:
        return {}
    source = graph.source if graph.source is not None else graph.mod
    built = compile_kernels(funcs, target, rewrite_storage=not needs_storage_rewrite_off(target, source, None, True))
    model.keep(built)
    return {key: built[name] for key, name in names.items()}
