"""Concurrency-aware kernel variants: re-measure the chosen concurrent stages with the runner-up
schedules a tuning database holds, and keep what wins.

MetaSchedule ranks a kernel's schedules by their latency *alone* on the device; a kernel that
fills every SM alone is not always the best one to run beside another. A tuning database keeps
every schedule it measured, so the runner-ups cost nothing to find. After the search has chosen
its stages, :func:`select_variants` times each concurrent stage with the kernels' alternative
schedules (steepest descent: each move changes the one kernel's variant that helps the stage
most, taken when the stage gets faster by more than ``min_gain``; the result is confirmed
against the defaults once more) and records the winners in the schedule. Builds apply them per
*call site*: a kernel called from several places gets a private copy where its variant differs
(:func:`apply_database_and_variants`), so the sequential baseline and the other call sites keep
the kernel that is fastest alone.

A variant is stored as its MetaSchedule trace (JSON), so a schedule file builds without the
database it came from. The graph (and its fingerprint) does not change: a copy carries the
attribute ``ios_tvm.variant_of`` with the name of the kernel it replaces.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import tvm
import tvm_ffi
from tvm import relax

from .errors import ScheduleMismatchError
from .graph import OpGraph, as_target, extract_graph, is_kernel_call

logger = logging.getLogger("ios_tvm")

VARIANT_ATTR = "ios_tvm.variant_of"


@dataclass(frozen=True)
class Variant:
    """One schedule of a kernel from a tuning database.

    Attributes
    ----------
    rank
        Position among the kernel's distinct schedules, fastest alone first (0: the one builds
        use by default).
    run_secs
        Mean latency alone, as measured while tuning.
    trace
        The MetaSchedule trace, as JSON (what ``Trace.apply_json_to_schedule`` takes).
    """

    rank: int
    run_secs: float
    trace: list = field(repr=False, compare=False)


# -- the database side ---------------------------------------------------------------------------
def _normalize(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    return tvm_ffi.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")(func)


def _leaves(db: Any) -> list[Any]:
    """The databases a (possibly nested) ``UnionDatabase`` reads from (its best record wins,
    as here). Other databases, ``OrderedUnionDatabase`` included, are queried as they are."""
    from tvm.s_tir.meta_schedule.database import UnionDatabase

    if not isinstance(db, UnionDatabase):
        return [db]
    return [leaf for d in db.databases for leaf in _leaves(d)]


def target_key(target: tvm.target.Target) -> str:
    """What a variant's trace was made for: the target kind and architecture (``cuda:sm_90``)."""
    from .tuning import arch_of

    return f"{target.kind.name}:{arch_of(target)}"


def variant_sites(schedule: Any, graph: OpGraph, target: tvm.target.Target) -> list[tuple[str, str, list]]:
    """``(binding name, kernel, trace)`` of each call site with a variant, for the build pass.

    Raises :class:`ScheduleMismatchError` when the variants were selected for another target,
    when a call site's binding name is not unique in the model, or when a trace no longer
    applies to its kernel (another TVM version, an edited file), each saying what to do.
    """
    schedule.validate(graph)
    want = target_key(target)
    names = [n.name for n in graph.nodes]
    out = []
    for v, var in sorted(schedule.variants.items()):
        made_for = var.get("target")
        if made_for != want:
            raise ScheduleMismatchError(
                f"the schedule's kernel variants were selected for {made_for}, and this build targets {want}: "
                "re-run ios_tvm.select_variants for this target, or build without them (schedule.variants = {})")
        node = graph.nodes[v]
        if names.count(node.name) != 1:
            raise ScheduleMismatchError(
                f"node {v} binds {node.name!r}, a name {names.count(node.name)} kernel calls of the model share, "
                "so its kernel variant cannot be placed; give the bindings unique names or drop the variants")
        try:
            apply_trace(graph.mod[node.kernel], var["trace"])
        except Exception as err:  # noqa: BLE001 - TVM raises several error types here
            raise ScheduleMismatchError(
                f"the kernel variant of node {v} ({node.kernel}) no longer applies to its kernel "
                f"({type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}); re-run "
                "ios_tvm.select_variants with this TVM, or build without them (schedule.variants = {})") from None
        out.append((node.name, node.kernel, var["trace"]))
    return out


def _native(obj: Any) -> Any:
    """A trace's JSON (TVM objects inside) as plain Python data."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tvm.tirx.IntImm):
        return int(obj.value)
    if isinstance(obj, tvm.tirx.FloatImm):
        return float(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): _native(v) for k, v in obj.items()}
    return [_native(x) for x in obj]


def kernel_variants(graph: OpGraph, database: Any, top_k: int = 3) -> dict[str, list[Variant]]:
    """Up to ``top_k`` distinct schedules per kernel of ``graph`` from ``database`` (a
    ``ms.Database``), fastest alone first. Kernels the database does not know are left out."""
    if graph.mod is None:
        raise ValueError("kernel_variants needs the graph's lowered module (graph.mod); use extract_graph")
    leaves = _leaves(database)
    out: dict[str, list[Variant]] = {}
    for node in graph.nodes:
        if node.kernel in out or node.op != "relax.call_tir":
            continue
        func = graph.mod[node.kernel]
        query = _normalize(func)
        records = []
        for db in leaves:
            if db.has_workload(query):
                records.extend(db.get_top_k(db.commit_workload(query), top_k * 4))
        records.sort(key=lambda r: sum(float(s) for s in r.run_secs) / len(r.run_secs))
        seen: set[int] = set()
        found: list[Variant] = []
        for rec in records:
            trace = _native(rec.trace.as_json())
            try:
                scheduled = apply_trace(func, trace)
            except Exception as err:  # noqa: BLE001 - a record that no longer applies is skipped
                logger.debug("ios_tvm: skipping a record of %s that does not apply: %s", node.kernel, err)
                continue
            key = int(tvm_ffi.structural_hash(scheduled))
            if key in seen:
                continue
            seen.add(key)
            run = [float(s) for s in rec.run_secs]
            found.append(Variant(len(found), sum(run) / len(run), trace))
            if len(found) == top_k:
                break
        if found:
            out[node.kernel] = found
    return out


def apply_trace(func: tvm.tirx.PrimFunc, trace: list, variant_of: str | None = None) -> tvm.tirx.PrimFunc:
    """``func`` scheduled by a MetaSchedule trace (JSON), with ``func``'s attributes kept and
    marked scheduled (dlight leaves it alone); ``variant_of`` names the kernel it stands in for."""
    sch = tvm.s_tir.Schedule(_normalize(func))
    tvm.s_tir.schedule.Trace.apply_json_to_schedule(trace, sch)
    new = sch.mod["main"]
    attrs = dict(func.attrs) if func.attrs is not None else {}
    attrs["tirx.is_scheduled"] = True
    if variant_of is not None:
        attrs[VARIANT_ATTR] = variant_of
    return tvm.tirx.PrimFunc(new.params, new.body, new.ret_type, attrs=tvm.ir.make_node("ir.DictAttrs", **attrs))


# -- the build side ------------------------------------------------------------------------------
def apply_database_and_variants(target: tvm.target.Target, tuned: bool,
                                variants: Sequence[tuple[str, str, list]] = ()) -> tvm.transform.Pass:
    """The pass that gives kernels their schedules, right after ``FuseTIR``.

    ``tuned``: apply the MetaSchedule database of the enclosing context
    (``MetaScheduleApplyDatabase``). ``variants``: ``(binding name, kernel, trace)`` per call site
    that runs another schedule; that call gets a private copy of its kernel scheduled by ``trace``.
    """
    with target:  # the database pass reads the target when it is made
        apply_db = relax.transform.MetaScheduleApplyDatabase(enable_warning=False) if tuned else None
    wanted = {name: (kernel, trace) for name, kernel, trace in variants}

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.ApplyDatabaseAndVariants")
    def _pass(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        copies: dict[str, tvm.tirx.PrimFunc] = {}
        if wanted:
            block = _dataflow_block(mod)
            calls: dict[str, list[Any]] = {}
            for b in block.bindings:
                if is_kernel_call(b.value):
                    calls.setdefault(b.var.name, []).append(b)
            for name, (kernel, trace) in wanted.items():
                found = calls.get(name, [])
                if len(found) != 1 or found[0].value.args[0].name_hint != kernel:
                    raise ScheduleMismatchError(
                        f"the schedule gives call {name!r} a variant of {kernel}, but the model has "
                        f"{len(found)} kernel call(s) of that name" + (
                            f" (calling {found[0].value.args[0].name_hint})" if len(found) == 1 else "")
                        + ": the schedule was made for another model; re-run ios_tvm.optimize")
                copies[name] = apply_trace(mod[kernel], trace, variant_of=kernel)
        if apply_db is not None:
            mod = apply_db(mod)
        return _redirect(mod, copies) if copies else mod

    return _pass


def _dataflow_block(mod: tvm.IRModule) -> relax.DataflowBlock:
    blocks = [b for b in mod["main"].body.blocks if isinstance(b, relax.DataflowBlock)]
    if len(blocks) != 1:
        raise ScheduleMismatchError(f"expected one dataflow block in main, found {len(blocks)}")
    return blocks[0]


def _redirect(mod: tvm.IRModule, copies: Mapping[str, tvm.tirx.PrimFunc]) -> tvm.IRModule:
    """Add each copy as a new kernel and point its call site at it."""
    bb = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs))
    gvs = {name: bb.add_func(f, f"{f.attrs[VARIANT_ATTR]}_ios_variant") for name, f in copies.items()}
    fn = mod["main"]
    blocks = list(fn.body.blocks)
    di = next(i for i, b in enumerate(blocks) if isinstance(b, relax.DataflowBlock))
    new_bindings = []
    for b in blocks[di].bindings:
        if is_kernel_call(b.value) and b.var.name in gvs:
            v = b.value
            b = relax.VarBinding(b.var, relax.Call(v.op, [gvs[b.var.name], *v.args[1:]], v.attrs, v.ty_args))
        new_bindings.append(b)
    blocks[di] = relax.DataflowBlock(new_bindings)
    out = bb.get()
    out["main"] = relax.Function(fn.params, relax.SeqExpr(blocks, fn.body.body), fn.ret_ty, fn.is_pure, fn.attrs)
    return out


# -- the search side (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class StageRefinement:
    """What :func:`refine_stage` found for one stage: ``choice`` maps a node to the rank of the
    variant it runs (only nodes off their default), ``base_s`` / ``latency_s`` are the stage's
    latency with the default kernels and with ``choice`` (confirmed side by side), and
    ``evaluated`` counts the measurements made."""

    choice: dict[int, int]
    base_s: float
    latency_s: float
    evaluated: int


def refine_stage(options: Mapping[int, int], measure: Callable[[Mapping[int, int]], float], *,
                 max_moves: int = 4, min_gain: float = 0.03) -> StageRefinement:
    """Steepest descent over the variants of one stage's kernels.

    Each move measures every change of one kernel's variant from the current choice and takes
    the best, so two kernels that slow each other down are untangled by changing the one whose
    runner-up costs least, not merely the first one tried.

    Parameters
    ----------
    options
        Node -> number of variants it has (nodes with one are left alone).
    measure
        Seconds of the stage when each node in the mapping runs the variant of that rank (the
        others their default, rank 0).
    max_moves
        Most moves; the descent also stops when no change gains enough.
    min_gain
        A move is taken only when the stage gets faster by more than this fraction, and the
        final choice kept only when it still beats the defaults by that much measured side by
        side.
    """
    nodes = sorted(v for v, n in options.items() if n > 1)
    base = measure({})
    evaluated = 1
    choice: dict[int, int] = {}
    best = base
    for _ in range(max_moves):
        move, move_t = None, best * (1 - min_gain)
        for v in nodes:
            for k in range(options[v]):
                if k == choice.get(v, 0):
                    continue
                trial = {u: r for u, r in {**choice, v: k}.items() if r}
                t = measure(trial)
                evaluated += 1
                if t < move_t:
                    move, move_t = trial, t
        if move is None:
            break
        choice, best = move, move_t
    if not choice:
        return StageRefinement({}, base, base, evaluated)
    base_again, final = measure({}), measure(choice)  # confirm side by side
    evaluated += 2
    if final < base_again * (1 - min_gain):
        return StageRefinement(choice, base_again, final, evaluated)
    return StageRefinement({}, base_again, base_again, evaluated)


# -- the driver ----------------------------------------------------------------------------------
def select_variants(mod: tvm.IRModule, target: str | dict | tvm.target.Target, schedule: Any, *,
                    database: Any = "auto", top_k: int = 3, max_moves: int = 4, min_gain: float = 0.03,
                    config: Any = None, graph: OpGraph | None = None) -> Any:
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
        See :func:`refine_stage`.
    config
        A :class:`ios_tvm.cost.measure.MeasureConfig` (local measurement only).

    Returns
    -------
    Schedule
        Same stages; ``variants`` holds the winning call sites, ``meta["variants"]`` says what was
        tried and gained. When ``schedule`` was costed by measurement, the changed stages carry
        their new measured latency.
    """
    from .cost.measure import MeasureConfig, MeasuredCostModel
    from .schedule import Schedule, Stage
    from .tuning import resolve_database

    if top_k < 1 or max_moves < 1 or not 0 <= min_gain < 1:
        raise ValueError(f"need top_k >= 1, max_moves >= 1 and 0 <= min_gain < 1, got {top_k}, {max_moves}, {min_gain}")
    tgt = as_target(target)
    db = resolve_database(database, tgt)
    if db is None:
        raise ValueError("kernel variants come from a tuning database, and there is none for this target: "
                         "tune first (ios_tvm.tune) and pass database=<its work_dir> (CLI: --database DIR)")
    config = config or MeasureConfig()
    if config.rpc is not None:
        raise NotImplementedError("variant selection measures on this machine's device; drop rpc= from the MeasureConfig")
    device = tvm.cpu(0) if tgt.kind.name == "llvm" else tvm.cuda(config.device_id)
    if not device.exist:
        raise RuntimeError(f"kernel variants are chosen by timing stages on the target's device, and {device} is not "
                           "present here: run select_variants on the GPU machine (CLI: leave out --variants)")
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
    model = MeasuredCostModel(tgt, config, database=db)
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
                if schedule.meta.get("cost_model") == "measure":  # never mix in another model's units
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


def _build_variants(graph: OpGraph, options: Mapping[str, list[Variant]], schedule: Any,
                    stages: Sequence[int], target: tvm.target.Target, model: Any) -> dict[tuple[int, int], Any]:
    """Compile every alternative variant the stages may try, once per (kernel, rank), and return
    ``(node, rank) -> kernel function`` (rank 0 is the model's own kernel, never needed here)."""
    funcs: dict[str, tvm.tirx.PrimFunc] = {}
    for i in stages:
        for v in schedule.stages[i].nodes:
            kernel = graph.nodes[v].kernel
            for var in options.get(kernel, ())[1:]:
                name = f"ios_variant_{kernel}_{var.rank}"
                if name not in funcs:
                    funcs[name] = apply_trace(graph.mod[kernel], var.trace).with_attr("global_symbol", name)
    if not funcs:
        return {}
    built = tvm.compile(tvm.IRModule(funcs), target)
    model.keep(built)
    out = {}
    for i in stages:
        for v in schedule.stages[i].nodes:
            kernel = graph.nodes[v].kernel
            for var in options.get(kernel, ())[1:]:
                out[(v, var.rank)] = built[f"ios_variant_{kernel}_{var.rank}"]
    return out
