"""Never slower than the simple schedules: time the candidates end to end, keep the fastest.

The search is exact under its stage costs, and stage costs are measured one stage at a time; a
whole run adds what no stage sees alone (the VM's dispatch between kernels, caches shared with the
stages around it). So :func:`ios_tvm.optimize`, when it measures on the device, ends by building
the sequential, the greedy and the IOS schedule and timing each end to end, in the launch mode of
the build, and returns the fastest. The schedule's ``meta["end_to_end"]`` keeps every time, its
noise, which one won, and by how much IOS lost when it did.

Measurements are noisy, so a difference smaller than the noise is no result: each candidate is
timed ``repeat`` times, its *spread* is the range of those samples (slowest minus fastest), and a
candidate counts as faster than a simpler one only when its median is lower by more than the
larger of the two spreads (:func:`choose`). Within the noise the simpler schedule is kept
(sequential before greedy before IOS), so two runs of one search keep the same schedule unless
the difference is real.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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
from ..ir.vendor import recorded_kernels
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
        sample counts, their range is the noise (:func:`choose`).
    min_repeat_ms
        A sample runs at least this long (more runs than ``number`` for short runs; 0: off).
    rtol, atol
        The candidates' outputs must equal the sequential build's within these, or the guard
        raises (a wrong schedule never wins on speed); ``None`` (default): by the dtype the model
        computes in (:func:`ios_tvm.ir.precision.output_tolerance`: ``1e-4`` / ``1e-5`` in float32).
    device_id
        The GPU (CUDA targets).
    """

    number: int = 20
    repeat: int = 5
    min_repeat_ms: int = 0
    rtol: float | None = None
    atol: float | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.number < 1 or self.repeat < 1:
            raise ValueError(f"need number >= 1 and repeat >= 1, got {self.number}, {self.repeat}")


@dataclass(frozen=True)
class Timing:
    """Samples of one candidate's end-to-end time (seconds): its median and how noisy it was."""

    samples: tuple[float, ...]

    @classmethod
    def of(cls, value: float | Sequence[float] | "Timing") -> "Timing":
        """A :class:`Timing` from samples, one number (a single sample) or a timing."""
        if isinstance(value, Timing):
            return value
        if isinstance(value, (int, float)):
            return cls((float(value),))
        samples = tuple(float(x) for x in value)
        if not samples:
            raise ValueError("a timing needs at least one sample")
        return cls(samples)

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def spread(self) -> float:
        """The range of the samples: slowest minus fastest (0 for one sample)."""
        return max(self.samples) - min(self.samples)

    @property
    def relative_spread(self) -> float:
        """:attr:`spread` over :attr:`median`."""
        return self.spread / self.median if self.median > 0 else 0.0


def same_within_noise(a: Timing, b: Timing) -> bool:
    """Whether ``a`` and ``b`` differ by no more than their noise: medians apart by at most the
    larger spread."""
    return abs(a.median - b.median) <= max(a.spread, b.spread)


def choose(candidates: Mapping[str, Any], time_of: Callable[[str, Any], float | Sequence[float]]
           ) -> tuple[str, dict[str, Timing]]:
    """Time every candidate with ``time_of(label, candidate)`` (its samples in seconds, or one
    number); return the label kept and every :class:`Timing`.

    The kept candidate is the first listed (the simplest) whose median is within the noise of
    the fastest one's (:func:`same_within_noise`); without noise (single samples) that is the
    fastest, ties going to the first listed.
    """
    timings = {label: Timing.of(time_of(label, c)) for label, c in candidates.items()}
    order = list(timings)
    fastest = min(order, key=lambda label: (timings[label].median, order.index(label)))
    kept = next(label for label in order if timings[label].median <= timings[fastest].median
                or same_within_noise(timings[label], timings[fastest]))
    return kept, timings


def pick_fastest(candidates: Mapping[str, Any], time_of: Callable[[str, Any], float | Sequence[float]]
                 ) -> tuple[str, dict[str, float]]:
    """:func:`choose`, with the median times instead of the timings."""
    kept, timings = choose(candidates, time_of)
    return kept, {label: t.median for label, t in timings.items()}


def end_to_end_timer(mod: tvm.IRModule, target: TargetLike, *, database: DatabaseLike = "auto",
                     config: EndToEndConfig = EndToEndConfig(), cuda_graph: bool = False
                     ) -> Callable[[str, Schedule | None], list[float]]:
    """``time_of(label, schedule)`` for :func:`choose`: builds ``mod`` with the schedule
    (``"sequential"``: the unscheduled baseline) in the build's launch mode (``cuda_graph``),
    checks its output against the sequential build's on one input, and returns the
    ``config.repeat`` end-to-end samples on the target's device (seconds each)."""
    device = require_device(target, config.device_id, "timing schedules end to end")
    rtol, atol = output_tolerance(model_dtype(mod))
    rtol = rtol if config.rtol is None else config.rtol
    atol = atol if config.atol is None else config.atol
    inputs = [tvm.runtime.tensor(x, device) for x in input_arrays(mod)]
    reference: list[Any] = []

    def time_of(label: str, schedule: Any) -> list[float]:
        logger.info("ios_tvm: timing the %s schedule end to end", label)
        vendor = recorded_kernels(schedule)["mode"] != "tvm"  # the baseline runs the same kernels
        ex = build(mod, target, None if label == "sequential" and not vendor else schedule, database=database,
                   cuda_graph=cuda_graph)
        out = relax.VirtualMachine(ex, device)["main"](*inputs)
        out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
        if not reference:
            reference.append(out)
        np.testing.assert_allclose(out, reference[0], rtol=rtol, atol=atol,
                                   err_msg=f"the {label} schedule's output differs from the sequential build's")
        return time_vm(ex, device, inputs, number=config.number, repeat=config.repeat,
                       min_repeat_ms=config.min_repeat_ms)

    return time_of


def keep_fastest(schedule: Schedule, graph: OpGraph, cost_model: CostModel, max_num_groups: int,
                 time_of: Callable[[str, Schedule | None], float | Sequence[float]],
                 fits: Callable[[str, Schedule], bool] | None = None) -> Schedule:
    """The fastest end to end of the sequential, greedy and IOS (``schedule``) schedules, the
    simpler one where they are equal within the noise (:func:`choose`), with the search's
    ``meta`` and ``meta["end_to_end"]``: ``times_s`` (medians) and ``spread_s`` (ranges of the
    samples) per candidate, ``samples`` (per candidate), ``chosen``, ``within_noise`` (whether a
    faster median lost to the noise) and ``ios_slower_by`` (IOS's median over the chosen one's,
    minus 1: 0 when IOS won, negative when IOS was faster but within the noise). ``fits(label,
    schedule)``: whether a candidate may be chosen (a memory budget); the others are not run."""
    candidates = {"sequential": Schedule.sequential(graph, cost_model),
                  "greedy": Schedule.greedy(graph, cost_model, max_num_groups),
                  "ios": schedule}
    for c in candidates.values():  # every candidate runs the kernels the search chose (and is planned with them)
        c.meta.setdefault("kernels", schedule.meta.get("kernels"))
    if fits is not None:
        candidates = {label: c for label, c in candidates.items() if label == "ios" or fits(label, c)}
    best, timings = choose(candidates, time_of)
    chosen = candidates[best]
    times = {label: t.median for label, t in timings.items()}
    within_noise = times[best] > min(times.values())
    lost = times["ios"] / times[best] - 1.0
    if best != "ios":
        if times["ios"] < times[best]:
            logger.warning("ios_tvm: the IOS schedule ran %.1f%% faster end to end than the %s schedule, less than "
                           "the measurement noise (%.1f%% spread over %d runs): the simpler %s schedule is returned "
                           "(times in schedule.meta['end_to_end'])", -100 * lost, best,
                           100 * max(timings["ios"].relative_spread, timings[best].relative_spread),
                           len(timings[best].samples), best)
        else:
            logger.warning("ios_tvm: the IOS schedule ran %.1f%% slower end to end than the %s schedule, which is "
                           "returned instead (times in schedule.meta['end_to_end'])", 100 * lost, best)
    predicted = {label: c.latency for label, c in candidates.items()}
    meta = {**schedule.meta, "strategy": best,
            "end_to_end": {"times_s": times, "spread_s": {label: t.spread for label, t in timings.items()},
                           "samples": len(timings[best].samples), "predicted_s": predicted, "chosen": best,
                           "within_noise": within_noise, "ios_slower_by": lost}}
    record_prediction(graph.fingerprint, meta)
    out = Schedule(chosen.stages, chosen.fingerprint, chosen.node_names, chosen.kernels, chosen.edges, meta,
                   dict(chosen.variants))
    out.validate(graph)
    return out


def record_prediction(fingerprint: str, meta: dict[str, Any], directory: str | os.PathLike | None = None) -> Path | None:
    """Append what was predicted and measured end to end for a model (its graph's
    ``fingerprint``) to ``predictions.jsonl`` in the stage cache directory (``directory``:
    another one): one JSON line per search, so how far a cost model is off is kept per model and
    setting. Returns the file's path (``None`` when it could not be written: a warning, never an
    error)."""
    e2e = meta["end_to_end"]
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "fingerprint": fingerprint, "target": meta.get("target"),
            "cost_model": meta.get("cost_model"), "measure": meta.get("measure"),
            "predicted_s": e2e["predicted_s"], "measured_s": e2e["times_s"], "spread_s": e2e.get("spread_s"),
            "chosen": e2e["chosen"]}
    path = Path(directory or default_cache_dir()) / "predictions.jsonl"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError as err:
        logger.warning("ios_tvm: could not record predicted vs measured latency in %s (%s)", path, err)
        return None
    return path


def read_predictions(fingerprint: str | None = None, directory: str | os.PathLike | None = None) -> list[dict[str, Any]]:
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
