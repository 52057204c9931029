"""Never slower than the simple schedules: time the candidates end to end, keep the fastest.

The search is exact under its stage costs, and stage costs are measured one stage at a time; a
whole run adds what no stage sees alone (the VM's dispatch between kernels, caches shared with the
stages around it). So :func:`ios_tvm.optimize`, when it measures on the device, ends by building
the sequential, the greedy and the IOS schedule and timing each end to end, in the launch mode of
the build, and returns the fastest. The schedule's ``meta["end_to_end"]`` keeps every time, which
one won, and by how much IOS lost when it did.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tvm
from tvm import relax

from ..compiler.databases import DatabaseLike
from ..compiler.paths import default_cache_dir
from ..compiler.pipeline import build
from ..core.schedule import Schedule
from ..cost.model import CostModel
from ..ir.graph import OpGraph
from ..ir.precision import model_dtype, output_tolerance
from ..ir.target import TargetLike, require_device
from ..ir.tensors import input_arrays
from ..runtime.profiling import median, time_vm

logger = logging.getLogger("ios_tvm")

#: candidates in order of simplicity: a tie goes to the simpler schedule
CANDIDATES = ("sequential", "greedy", "ios")


@dataclass(frozen=True)
class EndToEndConfig:
    """How the candidates are timed end to end.

    Attributes
    ----------
    number, repeat
        ``repeat`` samples, each the mean of ``number`` runs (``time_evaluator``); the median
        sample counts.
    rtol, atol
        The candidates' outputs must equal the sequential build's within these, or the guard
        raises (a wrong schedule never wins on speed); ``None`` (default): by the dtype the model
        computes in (:func:`ios_tvm.ir.precision.output_tolerance`: ``1e-4`` / ``1e-5`` in float32).
    device_id
        The GPU (CUDA targets).
    """

    number: int = 20
    repeat: int = 5
    rtol: float | None = None
    atol: float | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.number < 1 or self.repeat < 1:
            raise ValueError(f"need number >= 1 and repeat >= 1, got {self.number}, {self.repeat}")


def pick_fastest(candidates: Mapping[str, Any], time_of: Callable[[str, Any], float]) -> tuple[str, dict[str, float]]:
    """Time every candidate with ``time_of(label, candidate)`` (seconds); return the label of the
    fastest and all times. Ties go to the candidate listed first."""
    times = {label: float(time_of(label, c)) for label, c in candidates.items()}
    best = min(times, key=lambda label: (times[label], list(times).index(label)))
    return best, times


def end_to_end_timer(mod: tvm.IRModule, target: TargetLike, *, database: DatabaseLike = "auto",
                     config: EndToEndConfig = EndToEndConfig(), cuda_graph: bool = False
                     ) -> Callable[[str, Schedule | None], float]:
    """``time_of(label, schedule)`` for :func:`pick_fastest`: builds ``mod`` with the schedule
    (``"sequential"``: the unscheduled baseline) in the build's launch mode (``cuda_graph``),
    checks its output against the sequential build's on one input, and returns the median
    end-to-end time on the target's device."""
    device = require_device(target, config.device_id, "timing schedules end to end")
    rtol, atol = output_tolerance(model_dtype(mod))
    rtol = rtol if config.rtol is None else config.rtol
    atol = atol if config.atol is None else config.atol
    inputs = [tvm.runtime.tensor(x, device) for x in input_arrays(mod)]
    reference: list[Any] = []

    def time_of(label: str, schedule: Any) -> float:
        logger.info("ios_tvm: timing the %s schedule end to end", label)
        ex = build(mod, target, None if label == "sequential" else schedule, database=database, cuda_graph=cuda_graph)
        out = relax.VirtualMachine(ex, device)["main"](*inputs)
        out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
        if not reference:
            reference.append(out)
        np.testing.assert_allclose(out, reference[0], rtol=rtol, atol=atol,
                                   err_msg=f"the {label} schedule's output differs from the sequential build's")
        return median(time_vm(ex, device, inputs, number=config.number, repeat=config.repeat))

    return time_of


def keep_fastest(schedule: Schedule, graph: OpGraph, cost_model: CostModel, max_num_groups: int,
                 time_of: Callable[[str, Schedule | None], float],
                 fits: Callable[[str, Schedule], bool] | None = None) -> Schedule:
    """The fastest end to end of the sequential, greedy and IOS (``schedule``) schedules, with
    the search's ``meta`` and ``meta["end_to_end"]``: ``times_s`` per candidate, ``chosen``, and
    ``ios_slower_by`` (IOS's time over the best one's, minus 1; 0 when IOS won). ``fits(label,
    schedule)``: whether a candidate may be chosen (a memory budget); the others are not run."""
    candidates = {"sequential": Schedule.sequential(graph, cost_model),
                  "greedy": Schedule.greedy(graph, cost_model, max_num_groups),
                  "ios": schedule}
    if fits is not None:
        candidates = {label: c for label, c in candidates.items() if label == "ios" or fits(label, c)}
    best, times = pick_fastest(candidates, time_of)
    chosen = candidates[best]
    lost = times["ios"] / times[best] - 1.0
    if best != "ios":
        logger.warning("ios_tvm: the IOS schedule ran %.1f%% slower end to end than the %s schedule, which is "
                       "returned instead (times in schedule.meta['end_to_end'])", 100 * lost, best)
    predicted = {label: c.latency for label, c in candidates.items()}
    meta = {**schedule.meta, "strategy": best,
            "end_to_end": {"times_s": times, "predicted_s": predicted, "chosen": best, "ios_slower_by": lost}}
    record_prediction(graph.fingerprint, meta)
    out = Schedule(chosen.stages, chosen.fingerprint, chosen.node_names, chosen.kernels, chosen.edges, meta,
                   dict(chosen.variants))
    out.validate(graph)
    return out


def record_prediction(fingerprint: str, meta: dict[str, Any], directory: Any = None) -> Any:
    """Append what was predicted and measured end to end for a model (its graph's
    ``fingerprint``) to ``predictions.jsonl`` in the stage cache directory (``directory``:
    another one): one JSON line per search, so how far a cost model is off is kept per model and
    setting. Returns the file's path (``None`` when it could not be written: a warning, never an
    error)."""
    e2e = meta["end_to_end"]
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "fingerprint": fingerprint, "target": meta.get("target"),
            "cost_model": meta.get("cost_model"), "measure": meta.get("measure"),
            "predicted_s": e2e["predicted_s"], "measured_s": e2e["times_s"], "chosen": e2e["chosen"]}
    path = Path(directory or default_cache_dir()) / "predictions.jsonl"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError as err:
        logger.warning("ios_tvm: could not record predicted vs measured latency in %s (%s)", path, err)
        return None
    return path


def read_predictions(fingerprint: str | None = None, directory: Any = None) -> list[dict[str, Any]]:
    """The records :func:`record_prediction` kept (of one model, with ``fingerprint``); lines
    that do not parse are skipped."""
    path = Path(directory or default_cache_dir()) / "predictions.jsonl"
    if not path.exists():
        return []
    out = []
    for text in path.read_text().splitlines():
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and (fingerprint is None or rec.get("fingerprint") == fingerprint):
            out.append(rec)
    return out
