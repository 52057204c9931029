"""The pass lists, in the order they run: TVM's backend pipeline for the target, and the places
where ios_tvm steps in. Every list (the graph the search sees, the kernels a build compiles, the
merged kernels spliced in at lowering) is cut from the same backend lists, so the kernels of the
graph and of the build cannot drift apart.

==============================  =================================================================
phase                           passes
==============================  =================================================================
library dispatch                backend ``library_dispatch_passes`` (sampling, sort/scan)
fusion                          backend ``legalize_passes`` up to ``FuseTIR`` (``LegalizeOps``,
                                ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``)
kernel schedules                ``ios_tvm.ApplyKernelSchedules`` (tuning records, kernel
                                variants), then the rest of ``legalize_passes`` (dlight defaults)
view rewrite                    ``RewriteDataflowReshape``
*graph*                         :func:`fusion_passes` ends here (without kernel schedules)
schedule lowering               ``ios_tvm.LowerSchedule`` (stage order, stream calls, keep-alives)
dataflow lowering               backend ``dataflow_lower_passes`` (less ``RewriteDataflowReshape``)
finalize                        backend ``finalize_passes``: ``StaticPlanBlockMemory``, then
                                ``ios_tvm.VerifyMemory``; in ``RewriteCUDAGraph``'s place
                                ``ios_tvm.CaptureCUDAGraph`` when a CUDA graph is asked for
                                (after ``ios_tvm.PrepareCUDAGraph`` right after schedule lowering)
==============================  =================================================================
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Iterator, Sequence

import tvm
from tvm import relax

from ..errors import PipelineError

SCHEDULE_AFTER = "FuseTIR"  #: kernels get their schedules right after fusion
PLAN = "StaticPlanBlockMemory"
CUDA_GRAPH = "RewriteCUDAGraph"
RESHAPE = "RewriteDataflowReshape"


def backend(target: tvm.target.Target) -> ModuleType:
    """TVM's pipeline module for the target kind (``relax.backend.cuda.pipeline``, ...)."""
    kind = target.kind.name
    if kind == "cuda":
        return relax.backend.cuda.pipeline
    if kind == "llvm":
        return relax.backend.cpu_generic.pipeline
    raise ValueError(f"ios_tvm builds for cuda and llvm targets, not {kind!r}")


def _index(passes: Sequence[tvm.transform.Pass], name: str, where: str) -> int:
    """Position of pass ``name`` in ``passes`` (from TVM's ``where`` list), or a clear error."""
    for i, p in enumerate(passes):
        if p.info.name == name:
            return i
    raise PipelineError(
        f"TVM's {where} has no pass {name!r} (it has {[p.info.name for p in passes]}): ios_tvm places its "
        f"own passes around it. This TVM ({tvm.__version__}) differs from the one ios_tvm supports "
        "(apache-tvm 0.27.0.post1): install that version, or report this with both versions")


def _split_legalize(target: tvm.target.Target) -> tuple[list[tvm.transform.Pass], list[tvm.transform.Pass]]:
    """The backend's dispatch + legalize passes, cut right after ``FuseTIR``."""
    be = backend(target)
    legalize = list(be.legalize_passes(target))
    cut = _index(legalize, SCHEDULE_AFTER, f"{be.__name__}.legalize_passes") + 1
    return list(be.library_dispatch_passes(target)) + legalize[:cut], legalize[cut:]


def fusion_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Passes that decide the kernels without scheduling them: what the graph is read from."""
    fused, _ = _split_legalize(target)
    return fused + [relax.transform.RewriteDataflowReshape()]


def front_passes(target: tvm.target.Target, schedules: tvm.transform.Pass | None = None) -> list[tvm.transform.Pass]:
    """Fusion, kernel schedules (``schedules``: the pass that applies tuning records and
    variants, right after fusion; dlight's defaults schedule the rest) and the view rewrite: the
    module a schedule is lowered into."""
    fused, scheduling = _split_legalize(target)
    return fused + ([schedules] if schedules is not None else []) + scheduling + [relax.transform.RewriteDataflowReshape()]


def back_passes(target: tvm.target.Target, *, after_planning: Sequence[tvm.transform.Pass] = (),
                stop_after_planning: bool = False,
                capture: tvm.transform.Pass | None = None) -> list[tvm.transform.Pass]:
    """Dataflow lowering and finalization after the schedule is lowered: ``after_planning`` run
    right after ``StaticPlanBlockMemory`` (where the memory plan can be checked);
    ``stop_after_planning`` ends the list there; ``capture`` takes the place of TVM's
    ``RewriteCUDAGraph`` (``None``: left out; the target's backend must have that pass)."""
    be = backend(target)
    out = [p for p in be.dataflow_lower_passes(target) if p.info.name != RESHAPE]
    final = list(be.finalize_passes(target))
    at = _index(final, PLAN, f"{be.__name__}.finalize_passes") + 1
    out += final[:at] + list(after_planning)
    if stop_after_planning:
        return out
    rest = final[at:]
    if capture is not None:
        rest[_index(rest, CUDA_GRAPH, f"{be.__name__}.finalize_passes")] = capture
    return out + [p for p in rest if p.info.name != CUDA_GRAPH]


@contextlib.contextmanager
def pass_context_with(config: dict[str, Any]) -> Iterator[tvm.transform.PassContext]:
    """The current ``PassContext`` with ``config`` added: its optimization level, required and
    disabled passes, instruments and other settings kept (the one way ios_tvm changes a build's
    settings)."""
    cur = tvm.transform.PassContext.current()
    ctx = tvm.transform.PassContext(opt_level=cur.opt_level, required_pass=list(cur.required_pass),
                                    disabled_pass=list(cur.disabled_pass), instruments=list(cur.instruments),
                                    config={**dict(cur.config), **config})
    with ctx:
        yield ctx
