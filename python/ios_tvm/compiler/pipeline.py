"""Compile a model with its schedule: ``ios_tvm.build`` and ``ios_tvm.pipeline``.

The pipeline is TVM's default one for the target with ios_tvm's passes placed in it
(:mod:`ios_tvm.ir.backend` lists TVM's phases, :func:`passes` puts ios_tvm's between them):
kernel schedules right after fusion, the schedule lowered where fusion ends
(:func:`~ios_tvm.transform.LowerSchedule`), the memory plan checked right after it is made
(:func:`~ios_tvm.transform.VerifyMemory`), and ``RewriteCUDAGraph`` left out unless a CUDA graph
is asked for (``cuda_graph=True``: :func:`~ios_tvm.transform.PrepareCUDAGraph` and
:func:`~ios_tvm.transform.CaptureCUDAGraph` capture the whole scheduled run with TVM's rewrite).
``schedule=None`` goes through the very same pipeline, so the sequential baseline differs from the
scheduled model only in its order and its stream calls.

:func:`build` is ``tvm.compile(mod, target, relax_pipeline=pipeline(...), tir_pipeline=TIR_PIPELINE)``
and nothing else: everything a build checks and converts happens inside :func:`pipeline`, so a
``tvm.compile`` with the same two pipelines builds the same module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import tvm

from .. import runtime
from ..core.schedule import Schedule
from ..errors import CUDAGraphError
from ..ir.backend import back_passes, front_passes
from ..ir.graph import OpGraph, check_model, extract_graph
from ..ir.merge_plan import NodeMerges, node_merges
from ..ir.precision import canonical, check_schedule_dtype, convert
from ..ir.target import TargetLike, as_target, device_type_of
from ..ir.vendor import VendorSite, build_sites, check_vendor_target
from ..transform import (
    ApplyKernelSchedules,
    CaptureCUDAGraph,
    LowerSchedule,
    PrepareCUDAGraph,
    VerifyMemory,
)
from ..transform.kernel_schedules import variant_sites
from ..transform.memory import planned_bytes
from ..transform.vendor import MarkVendorKernels, UseVendorKernels
from .context import TIR_PIPELINE, needs_storage_rewrite_off, storage_rewrite_off
from .databases import DatabaseLike, resolve_database

__all__ = ["build", "pipeline", "passes", "plan_memory", "planned_memory", "compile_kernels", "TIR_PIPELINE"]


def _check_cuda_graph(target: tvm.target.Target, cuda_graph: bool) -> None:
    if cuda_graph and target.kind.name != "cuda":
        raise CUDAGraphError(f"cuda_graph=True needs a CUDA target, not {target.kind.name!r}: CUDA graphs "
                             "capture CUDA kernel launches")


def kernel_passes(target: tvm.target.Target, tuned: bool, variants: Sequence[tuple[str, str, list]] = ()
                  ) -> list[tvm.transform.Pass]:
    """:func:`ios_tvm.ir.backend.front_passes` with the tuning records of the enclosing context
    (``tuned``) and kernel ``variants`` (``(binding, kernel, trace)`` triples) applied."""
    schedules = ApplyKernelSchedules(target, tuned, variants) if tuned or variants else None
    return front_passes(target, schedules)


def passes(target: tvm.target.Target, schedule: Schedule | None = None, *, keep_alive: bool = True,
           device_id: int = -1, stop_after_planning: bool = False, tuned: bool = False,
           merges: NodeMerges | None = None, verify: bool = False, cuda_graph: bool = False,
           variants: Sequence[tuple[str, str, list]] = (), vendor: Mapping[int, VendorSite] | None = None,
           tf32: bool = False) -> list[tvm.transform.Pass]:
    """The pass list of :func:`pipeline`, in order.

    Parameters
    ----------
    stop_after_planning
        End after static memory planning (with ``cuda_graph``: the plan of the module that will
        be captured).
    tuned
        Apply the MetaSchedule database of the enclosing context right after fusion.
    merges
        The model's merge plan, when the schedule merges kernels.
    verify
        Check the memory plan right after it is made (:func:`~ios_tvm.transform.VerifyMemory`).
    cuda_graph
        Capture the run as a CUDA graph.
    variants
        The schedule's kernel variants placed on the model
        (:func:`ios_tvm.transform.kernel_schedules.variant_sites`).
    vendor, tf32
        Nodes whose kernel calls become cuDNN / cuBLASLt calls (:func:`ios_tvm.ir.vendor.build_sites`),
        float32 ones in TF32 when ``tf32``: marked before the schedule is lowered, rewritten right after
        (:mod:`ios_tvm.transform.vendor`).
    """
    _check_cuda_graph(target, cuda_graph)
    front = kernel_passes(target, tuned)  # for merged kernels: no call site of theirs has a variant

    def lower_merged(mini: tvm.IRModule) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(front)(mini)

    lower = LowerSchedule(schedule, device_type_of(target), device_id, keep_alive, merges, lower_merged)
    checks = [VerifyMemory()] if verify and schedule is not None else []
    prepare = [PrepareCUDAGraph(target)] if cuda_graph else []
    mark = [MarkVendorKernels(vendor, tf32)] if vendor else []
    use = [UseVendorKernels()] if vendor else []
    return (kernel_passes(target, tuned, variants) + mark + [lower] + use + prepare
            + back_passes(target, after_planning=checks, stop_after_planning=stop_after_planning,
                          capture=CaptureCUDAGraph() if cuda_graph else None))


@dataclass
class _Prepared:
    """A model made ready for the pass list: converted, its schedule checked and placed."""

    mod: tvm.IRModule
    merges: NodeMerges | None
    variants: list[tuple[str, str, list]]
    vendor: dict[int, VendorSite]
    tf32: bool


def _prepare(mod: tvm.IRModule, target: tvm.target.Target, schedule: Schedule | None, dtype: str | None,
             pool_size: int | None, graph: OpGraph | None = None, merges: NodeMerges | None = None,
             check_streams: bool = True, kernels: str | None = None, tf32: bool | None = None) -> _Prepared:
    """What :func:`build` did before TVM's passes, in one place: the model checked and converted
    to ``dtype``, the schedule checked against it (precision, fingerprint, validity, streams of
    the runtime's pool), its merges planned, its kernel variants and vendor kernels placed."""
    check_model(mod)
    if dtype is not None:
        mod = convert(mod, dtype)
    vendor_wanted = (kernels if kernels is not None else
                     (schedule.meta.get("kernels") or {}).get("mode", "tvm") if schedule is not None else "tvm")
    if vendor_wanted != "tvm" and graph is None:
        graph = extract_graph(mod, target)
    if schedule is None:
        sites, use_tf32 = build_sites(mod, graph, target, None, kernels, tf32) if vendor_wanted != "tvm" else ({}, False)
        return _Prepared(mod, None, [], sites, use_tf32)
    check_schedule_dtype(schedule, mod)
    if graph is None or (schedule.merges and merges is None and graph.merges is None):
        graph = extract_graph(mod, target)
    if schedule.merges:
        merges = merges or graph.merges or node_merges(mod, graph)
        graph.merges = merges
    schedule.validate(graph)
    if check_streams:
        runtime.check_num_streams(max(schedule.max_streams, 1),
                                  runtime.pool_size() if pool_size is None else pool_size)
    sites = variant_sites(schedule, graph, target) if schedule.variants else []
    vendor, use_tf32 = build_sites(mod, graph, target, schedule, kernels, tf32)
    if vendor:  # a vendor call replaces the kernel, whatever its schedule
        taken = {graph.nodes[v].name for v in vendor}
        sites = [s for s in sites if s[0] not in taken]
    return _Prepared(mod, merges if schedule.merges else None, sites, vendor, use_tf32)


def pipeline(target: TargetLike, schedule: Schedule | None = None, *, database: DatabaseLike = "auto",
             dtype: str | None = None, cuda_graph: bool = False, keep_alive: bool = True, verify: bool = True,
             device_id: int = -1, pool_size: int | None = None, graph: OpGraph | None = None,
             merges: NodeMerges | None = None, kernels: str | None = None, tf32: bool | None = None
             ) -> tvm.transform.Pass:
    """The Relax pipeline of :func:`build`, for ``tvm.compile(mod, target, relax_pipeline=...,
    tir_pipeline=ios_tvm.compiler.TIR_PIPELINE)``: it converts the model to ``dtype``, checks the
    schedule against it and lowers the schedule into it (``None``: the sequential baseline).

    Parameters
    ----------
    target
        The target of the build (its fusion decides the kernels).
    schedule
        Made by :func:`ios_tvm.optimize` for this model (the same ``dtype``); refused with a
        typed error otherwise.
    database
        MetaSchedule tuning records applied after fusion: a directory made by ``ios_tvm.tune``
        or a ``ms.Database``; ``"auto"`` (default) the database shipped for the target's
        architecture, when there is one; ``None`` untuned (dlight's default schedules on CUDA).
    dtype
        ``"float16"`` or ``"bfloat16"``: build the model converted by
        :func:`ios_tvm.ir.precision.convert`; ``None``: as given.
    cuda_graph
        Replay the run as one CUDA graph (CUDA targets; no ``PassContext`` setting needed):
        TVM's ``RewriteCUDAGraph`` on a module prepared so that no stage is cut, the stages'
        fork/join events becoming edges of the graph. The first run captures, later runs replay;
        a module that cannot be captured whole builds without a graph, with a
        :class:`~ios_tvm.errors.CUDAGraphWarning`. With ``schedule=None``: the sequential
        baseline as a CUDA graph, with the same (tuned) kernels.
    keep_alive, verify
        Keep every tensor of a stage alive to its join, and refuse a memory plan that lets
        concurrent groups share storage.
    device_id
        The device the stage calls name (``-1``: the current one).
    pool_size
        Streams of the runtime's pool the schedule may use (default:
        ``ios_tvm.runtime.pool_size()`` when the pipeline runs).
    graph, merges
        The model's graph and merge plan, when the caller has them (else derived here).
    kernels
        ``"tvm"`` (TVM's kernels), ``"vendor"`` (cuDNN / cuBLASLt for every convolution and
        matmul unit they can run: :mod:`ios_tvm.ir.vendor`), ``"auto"`` (the per-call choice the
        schedule made by measurement), or ``None`` (default): what the schedule recorded, ``"tvm"``
        without one. Vendor kernels need a CUDA target.
    tf32
        Let float32 vendor kernels compute in TF32 (``None``: the schedule's record, else no).

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.Pipeline``. Tuned half-precision CUDA kernels need TVM's
        ``StorageRewrite`` off in 0.27: the pass marks such modules, and
        :data:`~ios_tvm.compiler.context.TIR_PIPELINE` turns it off for them (TVM's default TIR
        pipeline otherwise).

    Raises
    ------
    DatabaseError, CUDAGraphError, PrecisionError, InvalidArgumentError
        When the pipeline is made: a ``database`` that holds none, ``cuda_graph`` for a target
        that is not CUDA, an unknown ``dtype`` or ``kernels``. The model's own mistakes (a schedule for another
        model or precision, more streams than the pool) are raised, typed, when it runs.
    """
    tgt = as_target(target)
    _check_cuda_graph(tgt, cuda_graph)
    db = resolve_database(database, tgt)
    if dtype is not None:
        dtype = canonical(dtype)
    if kernels is not None:
        check_vendor_target(tgt, kernels)  # a typed error when the pipeline is made, not inside tvm.compile

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.Pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        ready = _prepare(mod, tgt, schedule, dtype, pool_size, graph, merges, kernels=kernels, tf32=tf32)
        seq = passes(tgt, schedule, keep_alive=keep_alive, device_id=device_id, tuned=db is not None,
                     merges=ready.merges, verify=verify, cuda_graph=cuda_graph, variants=ready.variants,
                     vendor=ready.vendor, tf32=ready.tf32)
        with tgt, (db if db is not None else contextlib.nullcontext()):
            out = tvm.transform.Sequential(seq)(ready.mod)
        if needs_storage_rewrite_off(tgt, ready.mod, db, bool(ready.variants)):
            out = storage_rewrite_off(out)
        return out

    return _pipeline


def build(mod: tvm.IRModule, target: TargetLike, schedule: Schedule | None = None, *,
          database: DatabaseLike = "auto", dtype: str | None = None, cuda_graph: bool = False,
          keep_alive: bool = True, verify: bool = True, pool_size: int | None = None,
          kernels: str | None = None, tf32: bool | None = None) -> Any:
    """Compile ``mod`` for ``target`` with ``schedule`` lowered into it.

    ``tvm.compile(mod, target, relax_pipeline=ios_tvm.pipeline(target, schedule, ...),
    tir_pipeline=ios_tvm.compiler.TIR_PIPELINE)``: see :func:`pipeline` for the arguments. A
    schedule needing more streams than the runtime's pool (``pool_size``, default the current
    ``ios_tvm.runtime.pool_size()``) is refused; ``dtype`` builds the model converted to
    ``"float16"`` or ``"bfloat16"`` (a schedule made with ``optimize(..., dtype=...)`` needs the
    same); ``kernels`` / ``tf32`` choose TVM's or the vendor's kernels (see :func:`pipeline`).

    Returns
    -------
    tvm.runtime.Executable
        What ``tvm.compile`` returns (run it with ``relax.VirtualMachine``).
    """
    tgt = as_target(target)
    return tvm.compile(mod, tgt, relax_pipeline=pipeline(tgt, schedule, database=database, dtype=dtype,
                                                         cuda_graph=cuda_graph, keep_alive=keep_alive,
                                                         verify=verify, pool_size=pool_size, kernels=kernels,
                                                         tf32=tf32),
                       tir_pipeline=TIR_PIPELINE)


def plan_memory(mod: tvm.IRModule, target: TargetLike, schedule: Schedule | None = None, *,
                database: DatabaseLike = "auto", dtype: str | None = None, cuda_graph: bool = False,
                keep_alive: bool = True, kernels: str | None = None) -> tvm.IRModule:
    """``mod`` as :func:`build` lowers it, up to and including static memory planning
    (``cuda_graph``: prepared for capture, with the storage the capture hoists)."""
    tgt = as_target(target)
    db = resolve_database(database, tgt)
    ready = _prepare(mod, tgt, schedule, None if dtype is None else canonical(dtype), None, check_streams=False,
                     kernels=kernels)
    seq = tvm.transform.Sequential(passes(tgt, schedule, keep_alive=keep_alive, stop_after_planning=True,
                                          tuned=db is not None, merges=ready.merges, variants=ready.variants,
                                          cuda_graph=cuda_graph, vendor=ready.vendor, tf32=ready.tf32))
    with tgt, (db if db is not None else contextlib.nullcontext()):
        return seq(ready.mod)


def planned_memory(mod: tvm.IRModule, target: TargetLike, schedule: Schedule | None = None, *,
                   database: DatabaseLike = "auto", dtype: str | None = None, cuda_graph: bool = False,
                   kernels: str | None = None) -> int:
    """Bytes of activation storage a build of ``mod`` with ``schedule`` (and ``cuda_graph``)
    plans (:func:`ios_tvm.transform.memory.planned_bytes`): activations and outputs, not weights
    or inputs. Compare with ``schedule=None`` for the price of concurrency."""
    return planned_bytes(plan_memory(mod, target, schedule, database=database, dtype=dtype, cuda_graph=cuda_graph,
                                     kernels=kernels))


def compile_kernels(funcs: dict[str, tvm.tirx.PrimFunc], target: TargetLike, *,
                    rewrite_storage: bool = True) -> Any:
    """Compile standalone kernels (a module of PrimFuncs, no Relax function), such as a
    kernel's runner-up schedules; ``rewrite_storage=False`` for tuned half-precision CUDA kernels
    (:func:`~ios_tvm.compiler.context.needs_storage_rewrite_off`)."""
    mod = tvm.IRModule(funcs)
    if not rewrite_storage:
        mod = storage_rewrite_off(mod)
    return tvm.compile(mod, as_target(target), tir_pipeline=TIR_PIPELINE)

