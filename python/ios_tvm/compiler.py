"""Compile a model with its schedule: ``ios_tvm.build``, ``ios_tvm.pipeline`` and the memory verifier.

The pipeline is TVM's default one for the target with one pass added where fusion ends
(:func:`ios_tvm.lower.lower_schedule`) and one removed: ``RewriteCUDAGraph`` (CUDA graph capture
does not mix with stream switches; capturing scheduled runs belongs to ios_tvm's runtime).
``schedule=None`` goes through the very same pipeline, so the sequential baseline differs from
the scheduled model only in its order and its stream calls.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

from . import runtime as _runtime  # noqa: F401  (registers ios_tvm.runtime.* globals)
from .graph import check_model, extract_graph
from .lower import FORK, JOIN, RUNTIME_CALLS, SWITCH, lower_schedule
from .target import as_target, device_type_of
from .variants import apply_database_and_variants, variant_sites


def _backend(target: tvm.target.Target):
    kind = target.kind.name
    if kind == "cuda":
        return relax.backend.cuda.pipeline
    if kind == "llvm":
        return relax.backend.cpu_generic.pipeline
    raise ValueError(f"ios_tvm builds for cuda and llvm targets, not {kind!r}")


def _front_passes(target: tvm.target.Target, tuned: bool, variants: Any = ()) -> list[tvm.transform.Pass]:
    """Library dispatch, legalization, fusion (+ tuned schedules and kernel variants) and dlight:
    up to where the schedule is lowered. ``variants``: ``(binding, kernel, trace)`` triples."""
    be = _backend(target)
    legalize = list(be.legalize_passes(target))
    if tuned or variants:
        at = next(i for i, p in enumerate(legalize) if p.info.name == "FuseTIR") + 1
        legalize.insert(at, apply_database_and_variants(target, tuned, variants))
    return list(be.library_dispatch_passes(target)) + legalize + [relax.transform.RewriteDataflowReshape()]


def _check_cuda_graph(schedule: Any, cuda_graph: bool) -> None:
    if cuda_graph and schedule is not None:
        raise ValueError("cuda_graph=True is for the sequential baseline (schedule=None): TVM's CUDA graph "
                         "capture does not see ios_tvm's stream switches")


def passes(target: tvm.target.Target, schedule: Any = None, *, keep_alive: bool = True,
           device_id: int = -1, stop_after_planning: bool = False,
           tuned: bool = False, merges: Any = None, verify: bool = False,
           cuda_graph: bool = False, variants: Any = ()) -> list[tvm.transform.Pass]:
    """The pass list of :func:`pipeline` (``stop_after_planning``: end after memory planning;
    ``tuned``: apply the MetaSchedule database of the enclosing context right after fusion;
    ``merges``: the model's :class:`ios_tvm.merge.NodeMerges` when the schedule merges;
    ``verify``: check the memory plan right after it is made, see :func:`verify_memory`;
    ``cuda_graph``: keep TVM's ``RewriteCUDAGraph``, for the sequential baseline only;
    ``variants``: the schedule's kernel variants, see :func:`ios_tvm.variants.variant_sites`)."""
    _check_cuda_graph(schedule, cuda_graph)
    be = _backend(target)
    front = _front_passes(target, tuned)  # for merged kernels: no call site of theirs has a variant

    def lower_mini(mini: tvm.IRModule) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(front)(mini)

    out = _front_passes(target, tuned, variants)
    out += [lower_schedule(schedule, device_type_of(target), device_id, keep_alive, merges, lower_mini)]
    out += [p for p in be.dataflow_lower_passes(target) if p.info.name != "RewriteDataflowReshape"]
    for p in be.finalize_passes(target):
        if p.info.name == "RewriteCUDAGraph" and not cuda_graph:
            continue
        out.append(p)
        if p.info.name == "StaticPlanBlockMemory":
            if verify and schedule is not None:
                out.append(_verify_pass())
            if stop_after_planning:
                break
    return out


def _verify_pass() -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.VerifyMemory")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        problems = verify_memory(mod)
        if problems:
            raise RuntimeError("ios_tvm: the lowered schedule is not safe to run concurrently:\n  "
                               + "\n  ".join(problems[:20]))
        return mod

    return _pass


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
    the memory plan of the scheduled module is checked as it is made (:func:`verify_memory`). A schedule
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


def _extern_name(value: Any) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
        return str(value.op.global_symbol)
    return None


def verify_memory(planned: tvm.IRModule) -> list[str]:
    """Check a module after ``StaticPlanBlockMemory`` for races between concurrent groups.

    Returns the problems found (empty: safe): two groups of one stage touching the same storage
    while one of them writes it, a kernel outside a group inside a stage, or a tensor written by
    one group and read by another group of the same stage.
    """
    fn = planned["main"]
    storage_of: dict[Any, Any] = {}  # tensor var -> storage var
    written: set[Any] = set()
    problems: list[str] = []
    stage = -1
    group = -1
    in_stage = False
    # per open stage: storage -> {group: wrote?}
    touched: dict[Any, dict[int, bool]] = {}
    producer_group: dict[Any, int] = {}

    def storage(v: Any) -> Any:
        return storage_of.get(v, v)

    for block in fn.body.blocks:
        for b in block.bindings:
            value = b.value
            name = _extern_name(value)
            if name == FORK:
                stage += 1
                in_stage, group, touched, producer_group = True, -1, {}, {}
                continue
            if name == SWITCH:
                group = int(value.args[2].value)
                continue
            if name == JOIN:
                for st, groups in touched.items():
                    writers = [g for g, w in groups.items() if w]
                    if writers and len(groups) > 1:
                        problems.append(f"stage {stage}: storage {st.name} is used by groups "
                                        f"{sorted(groups)} and written by {sorted(writers)}")
                in_stage, group = False, -1
                continue
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                op = value.op.name
                if op == "relax.memory.alloc_tensor":
                    storage_of[b.var] = value.args[0]
                    continue
                if op in ("relax.memory.view", "relax.reshape"):
                    storage_of[b.var] = storage(value.args[0])
                    continue
            if not isinstance(value, relax.Call):
                continue
            is_kernel = isinstance(value.op, tvm.ir.GlobalVar) or (
                name is not None and name not in RUNTIME_CALLS and not name.startswith("vm.builtin"))
            if not (is_kernel and in_stage):
                for a in value.args:
                    if isinstance(a, relax.Var):
                        written.add(a)
                continue
            if group < 0:
                problems.append(f"stage {stage}: kernel {b.var.name} runs before any stage_switch")
                continue
            for a in value.args:
                if not isinstance(a, relax.Var) or not isinstance(a.ty, relax.TensorType):
                    continue
                writes = a in storage_of and a not in written  # first use of a fresh tensor
                if writes:
                    written.add(a)
                    producer_group[a] = group
                elif producer_group.get(a, group) != group:
                    problems.append(f"stage {stage}: {a.name} is written by group {producer_group[a]} "
                                    f"and read by group {group} without a join between them")
                st = storage(a)
                if st is a and a not in storage_of:
                    continue  # a parameter or a tensor the planner did not place
                g = touched.setdefault(st, {})
                g[group] = g.get(group, False) or writes
    return problems
