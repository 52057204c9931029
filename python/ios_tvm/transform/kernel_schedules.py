"""Concurrency-aware kernel variants: re-measure the chosen concurrent stages with the runner-up
schedules a tuning database holds, and keep what wins.

MetaSchedule ranks a kernel's schedules by their latency *alone* on the device; a kernel that
fills every SM alone is not always the best one to run beside another. A tuning database keeps
every schedule it measured, so the runner-ups cost nothing to find. After the search has chosen
its stages, :func:`ios_tvm.driver.variants.select_variants` times each concurrent stage with the
kernels' alternative schedules (steepest descent: each move changes the one kernel's variant
that helps the stage most, taken when the stage gets faster by more than ``min_gain``; the
result is confirmed against the defaults once more) and records the winners in the schedule. Builds apply them per
*call site*: a kernel called from several places gets a private copy where its variant differs
(:func:`ApplyKernelSchedules`), so the sequential baseline and the other call sites keep
the kernel that is fastest alone.

A variant is stored as its MetaSchedule trace (JSON), so a schedule file builds without the
database it came from. The graph (and its fingerprint) does not change: a copy carries the
attribute ``ios_tvm.variant_of`` with the name of the kernel it replaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from ..core.schedule import Schedule
from ..errors import ScheduleMismatchError
from ..ir.bindings import dataflow_index, replace_block
from ..ir.graph import OpGraph, is_kernel_call
from ..ir.target import target_key

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


def variant_sites(schedule: Schedule, graph: OpGraph, target: tvm.target.Target) -> list[tuple[str, str, list]]:
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


def kernel_variants(graph: OpGraph, database: "ms.Database", top_k: int = 3) -> dict[str, list[Variant]]:
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
def ApplyKernelSchedules(target: tvm.target.Target, tuned: bool,
                                variants: Sequence[tuple[str, str, list]] = ()) -> tvm.transform.Pass:
    """Give kernels their schedules, right after ``FuseTIR``.

    Parameters
    ----------
    target
        The target the schedules are for.
    tuned
        Apply the MetaSchedule database of the enclosing context (``MetaScheduleApplyDatabase``).
    variants
        ``(binding name, kernel, trace)`` per call site that runs another schedule
        (:func:`variant_sites`); that call gets a private copy of its kernel scheduled by
        ``trace``, marked with the attribute ``ios_tvm.variant_of``.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.ApplyKernelSchedules``.
    """
    with target:  # the database pass reads the target when it is made
        apply_db = relax.transform.MetaScheduleApplyDatabase(enable_warning=False) if tuned else None
    wanted = {name: (kernel, trace) for name, kernel, trace in variants}

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.ApplyKernelSchedules")
    def _pass(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        copies: dict[str, tvm.tirx.PrimFunc] = {}
        if wanted:
            calls: dict[str, list[Any]] = {}
            for b in mod["main"].body.blocks[dataflow_index(mod)].bindings:
                if is_kernel_call(b.value):
                    calls.setdefault(b.var.name, []).append(b)
            for name, (kernel, trace) in wanted.items():
                found = calls.get(name, [])  # variant_sites placed them on this very model
                assert len(found) == 1 and found[0].value.args[0].name_hint == kernel, \
                    f"call {name!r} of {kernel}: {len(found)} kernel calls of that name"
                copies[name] = apply_trace(mod[kernel], trace, variant_of=kernel)
        if apply_db is not None:
            mod = apply_db(mod)
        return _redirect(mod, copies) if copies else mod

    return _pass


def _redirect(mod: tvm.IRModule, copies: Mapping[str, tvm.tirx.PrimFunc]) -> tvm.IRModule:
    """Add each copy as a new kernel and point its call site at it."""
    bb = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs))
    gvs = {name: bb.add_func(f, f"{f.attrs[VARIANT_ATTR]}_ios_variant") for name, f in copies.items()}
    di = dataflow_index(mod)
    new_bindings = []
    for b in mod["main"].body.blocks[di].bindings:
        if is_kernel_call(b.value) and b.var.name in gvs:
            v = b.value
            b = relax.VarBinding(b.var, relax.Call(v.op, [gvs[b.var.name], *v.args[1:]], v.attrs, v.ty_args))
        new_bindings.append(b)
    return relax.transform.Normalize()(replace_block(bb.get(), di, new_bindings))
