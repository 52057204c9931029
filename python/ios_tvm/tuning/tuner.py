"""Kernel tuning with MetaSchedule (XGBoost cost model), feeding IOS's costs and builds.

``ios_tvm.tune(mod, target, work_dir)`` extracts the model's tasks (its fused PrimFuncs, the very
kernels IOS schedules) and tunes each until the database in ``work_dir`` holds
``max_trials_per_task`` records of it, so a second call continues where the first stopped (and
leaves alone what has enough); ``retune=True`` gives every task that many trials more.
``time_budget_s`` ends the call on time: extraction, compilation and search all count, no batch
starts that would not end before the deadline, and what was measured is on disk (see
:mod:`ios_tvm.tuning.allocator` for how trials are shared out: by each kernel's share of the
model's time, from the analytic cost model before measurements and the measured latency after).

``ios_tvm.tune_models(["inception_v3", "googlenet"], target, "tuning")`` tunes several models
with one budget into ``tuning/<arch>/<model>/``: a kernel several models launch is one task,
tuned once, and its records go to every one of those models' databases, so each directory stays
self-contained; records of other models' databases under ``tuning/<arch>/`` seed the search.

The databases are MetaSchedule's JSON databases (``database_workload.json``,
``database_tuning_record.json``; :mod:`ios_tvm.compiler.databases`): one made by any other MetaSchedule
run works as it is. Builds and measurements take ``database=`` (a directory or a
``ms.Database``): the pipeline applies it right after fusion (``MetaScheduleApplyDatabase``),
and dlight's default schedules cover what it lacks, so the sequential baseline, the stage costs
and the scheduled model all run the same tuned kernels. Databases shipped with ios_tvm live in
the repository's ``tuning/<arch>/<model>/`` (``arch`` is ``sm_90`` for CUDA targets, the LLVM
``mcpu`` or ``generic`` for CPUs); :func:`ios_tvm.compiler.databases.shipped_database` finds the ones matching a target.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from .. import models as zoo
from ..compiler.context import STORAGE_REWRITE_OFF
from ..compiler.databases import (
    exhausted_workloads,
    mark_exhausted,
    open_database,
    prune_database,
    record_seconds,
)
from ..cost.analytic import AnalyticCostModel
from ..errors import TuningError
from ..ir.graph import extract_graph, lower_for_graph
from ..ir.precision import HALF, convert, model_dtype
from ..ir.target import arch_of, require_device, tuning_target
from ..ir.tvm_private import fork_seed
from .allocator import TaskInfo, TrialAllocator
from .builder import default_builder, fast_tvmscript_parsing
from .scheduler import run_tasks, trace_key

logger = logging.getLogger("ios_tvm")

#: trials per task when no time budget is given, and the ceiling under one (the time decides)
DEFAULT_TRIALS = 64
DEFAULT_TRIALS_WITH_BUDGET = 512


@dataclass
class TuneReport:
    """What :func:`tune` / :func:`tune_models` did. Task names are MetaSchedule's (with
    ``@model`` appended where two models' different kernels share a name)."""

    work_dir: str  #: the database directory (:func:`tune`) or ``root/<arch>`` (:func:`tune_models`)
    tasks: list[str]  #: every task of the models, each distinct kernel once
    tuned: list[str]  #: tasks this call was allowed to spend trials on
    reused: list[str]  #: tasks left alone: enough schedules recorded, or all their search finds
    trial_budget: int
    seconds: float
    database: Any = field(default=None, repr=False)
    failed: list[str] = field(default_factory=list)  #: given trials now, yet no schedule that built and ran
    trials: dict[str, int] = field(default_factory=dict)  #: trials measured now, per task
    best_s: dict[str, float | None] = field(default_factory=dict)  #: best latency per task (any run)
    weights: dict[str, float] = field(default_factory=dict)  #: share of the models' time, per task
    stopped_by: str = "trials"  #: "time", "trials" (allowances or search spent), "interrupt", "nothing to tune"
    time_budget_s: float | None = None
    records_added: int = 0  #: new schedules recorded now (once per task, whatever its databases)
    databases: dict[str, str] = field(default_factory=dict)  #: model -> its database directory
    models: dict[str, list[str]] = field(default_factory=dict)  #: model -> its tasks

    def summary(self, top: int = 10) -> str:
        """A few lines: what stopped the run, trials and the heaviest tasks."""
        budget = f" of {self.time_budget_s:.0f} s" if self.time_budget_s else ""
        head = (f"{len(self.tasks)} tasks ({len(self.tuned)} tuned now, {len(self.reused)} left alone); "
                f"{sum(self.trials.values())} trials, {self.records_added} new schedules in {self.seconds:.1f} s"
                f"{budget}; stopped by {self.stopped_by}")
        lines = [head]
        for name in sorted(self.weights, key=self.weights.get, reverse=True)[:top]:
            best = self.best_s.get(name)
            lines.append(f"  {self.weights[name]:6.1%}  {self.trials.get(name, 0):5d} trials  "
                         f"{'-' if best is None else f'{best * 1e3:.4f} ms':>12}  {name}")
        waiting = [t for t in self.tuned if not self.trials.get(t) and self.best_s.get(t) is None]
        if waiting:
            lines.append(f"  {len(waiting)} tasks not reached (no record yet; builds use dlight's defaults for them)")
        if self.failed:
            lines.append(f"  no working schedule yet: {', '.join(self.failed[:8])}")
        return "\n".join(lines)


@dataclass
class _Entry:
    name: str
    mod: tvm.IRModule
    work_dir: Path


def _analytic_per_call(lowered: tvm.IRModule, target: tvm.target.Target) -> dict[str, float]:
    """Kernel name -> analytic seconds per call (:class:`~ios_tvm.cost.AnalyticCostModel`)."""
    graph = extract_graph(lowered, lowered=True)
    cm = AnalyticCostModel.for_target(target)
    out: dict[str, float] = {}
    for node in graph.nodes:
        out.setdefault(node.kernel, cm.kernel_times(graph, node.id)[0])
    return out


def _collect_tasks(entries: Sequence[_Entry], target: tvm.target.Target) -> list[TaskInfo]:
    """Distinct tasks of the models (by structural hash and equality of the task module)."""
    infos: list[TaskInfo] = []
    by_hash: dict[int, list[int]] = {}
    labels: set[str] = set()
    for entry in entries:
        lowered = lower_for_graph(entry.mod, target)
        per_call = _analytic_per_call(lowered, target)
        db = open_database(entry.work_dir)
        for task in ms.relax_integration.extract_tasks(lowered, target):
            mod = task.dispatched[0]
            h = tvm_ffi.structural_hash(mod)
            k = next((i for i in by_hash.get(h, []) if tvm_ffi.structural_equal(infos[i].mod, mod)), None)
            if k is None:
                label = task.task_name if task.task_name not in labels else f"{task.task_name}@{entry.name}"
                labels.add(label)
                k = len(infos)
                infos.append(TaskInfo(label, mod, {}, per_call.get(task.task_name), key=str(h)))
                by_hash.setdefault(h, []).append(k)
                if mod["main"].attrs is not None and mod["main"].attrs.get("tirx.is_scheduled", False):
                    infos[k].records = -1  # scheduled already (a library kernel): nothing to tune
            info = infos[k]
            info.calls[entry.name] = info.calls.get(entry.name, 0) + int(task.weight)
            if all(d is not db for d in info.databases):
                info.databases.append(db)
    return infos


def _share_records(infos: Sequence[TaskInfo], sources: Sequence[Any], seed_db: Any) -> int:
    """Gather each task's valid records from ``sources`` (the best of each schedule); copy the
    ones a task's own databases lack into them, and all into ``seed_db``. Sets ``best_s``,
    ``records`` and ``known``; returns the records copied between databases."""
    copied = 0
    for info in infos:
        if info.records < 0:
            continue
        found: dict[str, Any] = {}  # trace -> its fastest record
        held: dict[int, set[str]] = {}  # id(database) -> traces it has of this task
        for db in sources:
            keys = held.setdefault(id(db), set())
            if db.has_workload(info.mod):  # get_top_k: valid records, fastest first
                for rec in db.get_top_k(db.commit_workload(info.mod), 1 << 30):
                    key = trace_key(rec.trace)
                    keys.add(key)
                    if key not in found or record_seconds(rec.run_secs) < record_seconds(found[key].run_secs):
                        found[key] = rec
        secs = [s for s in (record_seconds(r.run_secs) for r in found.values()) if s is not None]
        info.records = len(secs)
        info.best_s = min(secs) if secs else None
        info.known = set(found)
        for db in [*info.databases, seed_db]:
            missing = [rec for key, rec in found.items() if key not in held.get(id(db), ())]
            if not missing:
                continue
            workload = db.commit_workload(info.mod)
            for rec in missing:
                db.commit_tuning_record(ms.database.TuningRecord(rec.trace, workload, rec.run_secs, rec.target,
                                                                 rec.args_info))
            copied += len(missing) if db is not seed_db else 0
    return copied


def _task_loggers(log_dir: Path, names: Sequence[str]) -> list[logging.Logger]:
    """One logger per task appending to ``log_dir/logs/task_<name>.log`` (MetaSchedule's own
    helper reconfigures logging process-wide and fails on a second call under pytest)."""
    logs = log_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        lg = logging.getLogger(f"ios_tvm.tune.task_{name[:100]}")
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        for h in list(lg.handlers):
            lg.removeHandler(h)
            h.close()
        handler = logging.FileHandler(logs / f"task_{name[:100]}.log", mode="a", delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        lg.addHandler(handler)
        out.append(lg)
    return out


def _close_loggers(loggers: Sequence[logging.Logger]) -> None:
    for lg in loggers:
        for h in list(lg.handlers):
            lg.removeHandler(h)
            h.close()


def _contexts(infos: Sequence[TaskInfo], target: tvm.target.Target, loggers: Sequence[logging.Logger],
              seed: int | None, strategy: Any) -> list[Any]:
    todo = [t for t in infos if t.allowance > 0]
    fast_tvmscript_parsing()
    return [ms.TuneContext(mod=t.mod, target=target, space_generator="post-order-apply", search_strategy=strategy,
                           task_name=t.name, logger=lg, rand_state=rs, num_threads="physical").clone()
            for t, lg, rs in zip(todo, loggers, fork_seed(seed, n=len(todo)))]


def _check_budget(time_budget_s: float | None, max_trials_per_task: int | None, num_trials_per_iter: int) -> int:
    if time_budget_s is not None and not time_budget_s > 0:
        raise TuningError(f"the time budget must be a positive number of seconds, got {time_budget_s}")
    if num_trials_per_iter < 1:
        raise TuningError(f"num_trials_per_iter must be >= 1, got {num_trials_per_iter}")
    if max_trials_per_task is None:
        return DEFAULT_TRIALS if time_budget_s is None else DEFAULT_TRIALS_WITH_BUDGET
    if max_trials_per_task < 1:
        raise TuningError(f"max_trials_per_task must be >= 1, got {max_trials_per_task}")
    return max_trials_per_task


def require_tuning_device(target: Any) -> None:
    """Tuning with the local runner measures every candidate on the target's device: refuse up
    front (:class:`~ios_tvm.errors.DeviceNotFoundError`, saying what to do) when it is absent."""
    tgt = tuning_target(target)
    require_device(tgt, 0, f"tuning for {tgt.kind.name} (MetaSchedule measures every candidate on the device)",
                   instead="give ios_tvm.tune a runner that reaches one "
                           "(runner=tvm.s_tir.meta_schedule.runner.RPCRunner(...))",
                   there=" (there `ios-tvm tune MODEL --target auto` describes it)")


def _tune(entries: Sequence[_Entry], target: Any, *, work_dir: Path, sources: Sequence[Path],
          time_budget_s: float | None, max_trials_global: int | None, max_trials_per_task: int | None,
          num_trials_per_iter: int, retune: bool, seed: int | None, runner: Any, builder: Any,
          build_timeout_s: float, progress: Callable[[str], None] | None, keep: int | None,
          strategy: Any = "evolutionary", cost_model: Any = "xgb") -> TuneReport:
    start = time.monotonic()
    per_task = _check_budget(time_budget_s, max_trials_per_task, num_trials_per_iter)
    deadline = None if time_budget_s is None else start + time_budget_s
    say = progress or logger.info
    tgt = tuning_target(target)
    if isinstance(runner, str) and runner == "local":  # without the device every candidate would fail to run
        require_tuning_device(tgt)
    infos = _collect_tasks(entries, tgt)
    source_dbs = [db for info in infos for db in info.databases]
    source_dbs = [db for i, db in enumerate(source_dbs) if all(db is not d for d in source_dbs[:i])]
    source_dbs += [open_database(d, create=False) for d in sources]
    seed_db = ms.database.MemoryDatabase()
    copied = _share_records(infos, source_dbs, seed_db)
    measured_out: dict[str, str] = {}
    for d in [*(e.work_dir for e in entries), *sources]:
        measured_out.update(exhausted_workloads(d))
    for info in infos:
        if info.records < 0:
            info.records, info.allowance = 0, 0
        elif info.key in measured_out and not retune:
            info.allowance = 0
        elif retune or info.best_s is None:
            info.allowance = per_task
        else:
            info.allowance = max(0, per_task - info.records)
    todo = [t for t in infos if t.allowance > 0]
    say(f"{len(infos)} tasks: {len(todo)} to tune, {len(infos) - len(todo)} with {per_task} schedules or all "
        "there are" + (f"; {copied} records shared between models" if copied else "")
        + f" ({time.monotonic() - start:.1f} s)")
    alloc = TrialAllocator(infos, num_trials_per_iter)
    trials = [0] * len(infos)
    best = [t.best_s for t in infos]
    stopped_by, written = "nothing to tune", 0
    if todo and deadline is not None and time.monotonic() >= deadline:
        stopped_by = "time"
    elif todo:
        own_builder = isinstance(builder, str) and builder == "local"
        if own_builder:  # its workers start (import TVM) while the search prepares the tasks
            builder = default_builder(build_timeout_s, _build_config(entries, tgt))
        loggers = _task_loggers(work_dir, [t.name for t in todo])
        result = None
        try:
            say(f"preparing the search of {len(todo)} tasks (MetaSchedule's design spaces; the first time in a "
                f"process this imports TVM's schedule rules, while the build workers start) "
                f"({time.monotonic() - start:.1f} s)")
            contexts = _contexts(infos, tgt, loggers, seed, strategy)
            if deadline is not None and time.monotonic() >= deadline:  # preparing took the whole budget
                say(f"the preparation took the whole time budget: nothing tuned ({time.monotonic() - start:.1f} s; "
                    "a larger --time-budget / time_budget_s leaves time for batches)")
            else:
                say(f"tuning in batches of {num_trials_per_iter} candidates (each searched, built on every core, then "
                    f"measured; a line per batch{'' if deadline is None else '; none started that would end after the budget'}) "
                    f"({time.monotonic() - start:.1f} s)")
                result = run_tasks(infos, contexts, tgt, deadline=deadline, start=start,
                                   max_trials_global=max_trials_global, num_trials_per_iter=num_trials_per_iter,
                                   builder=builder, runner=runner, database=seed_db, cost_model=cost_model,
                                   report=say, allocator=alloc)
        finally:
            _close_loggers(loggers)
            if own_builder:
                builder.shutdown()
        if result is None:
            stopped_by = "time"
        else:
            trials, best, stopped_by, written = result.trials, result.best_s, result.stopped_by, result.written
        for info, out in zip(infos, alloc.exhausted):
            for db in info.databases if out else ():
                mark_exhausted(Path(db.path_tuning_record).parent, {info.key: info.name})
    if keep:
        for entry in entries:
            before, after = prune_database(entry.work_dir, keep)
            if after < before:
                say(f"{entry.work_dir}: pruned to the best {keep} per workload ({before} -> {after} records)")
    weights = alloc.weights()
    names = [t.name for t in infos]
    failed = [t.name for t, n, b in zip(infos, trials, best) if t.allowance > 0 and n > 0 and b is None]
    if failed:
        logger.warning("ios_tvm.tune: %d of %d tasks have no schedule that built and ran (%s); builds use dlight's "
                       "defaults for them. See %s/logs; raise build_timeout_s or the budget and tune again (tasks "
                       "without a record are tuned again)", len(failed), len(todo), ", ".join(failed[:5]), work_dir)
    dbs = [open_database(e.work_dir) for e in entries]
    return TuneReport(
        str(work_dir), names, [t.name for t in todo], [t.name for t in infos if t.allowance == 0],
        sum(t.allowance for t in todo) if max_trials_global is None else max_trials_global,
        time.monotonic() - start, dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs), failed,
        dict(zip(names, trials)), dict(zip(names, best)), dict(zip(names, weights)), stopped_by, time_budget_s,
        written, {e.name: str(e.work_dir) for e in entries},
        {e.name: [t.name for t in infos if e.name in t.calls] for e in entries})


def tune(
    mod: tvm.IRModule,
    target: str | dict | tvm.target.Target,
    work_dir: str | os.PathLike,
    *,
    time_budget_s: float | None = None,
    max_trials_global: int | None = None,
    max_trials_per_task: int | None = None,
    num_trials_per_iter: int = 16,
    retune: bool = False,
    seed: int | None = 0,
    runner: Any = "local",
    builder: Any = "local",
    build_timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
    keep: int | None = None,
    search_strategy: Any = "evolutionary",
    cost_model: Any = "xgb",
) -> TuneReport:
    """Tune the kernels of ``mod`` for ``target`` into the JSON database in ``work_dir``.

    Parameters
    ----------
    mod
        A Relax model (bind its weights first if the builds will: constants can change kernels).
    target
        TVM target (CPU targets get ``num-cores``).
    work_dir
        The database directory (created if missing; MetaSchedule's logs go to ``work_dir/logs``).
    time_budget_s
        Wall-clock budget of the whole call (extraction and compilation count); no batch starts
        that would not end in time. ``None``: trials alone end the run.
    max_trials_global
        Trials over all tasks tuned now (default: the sum of their allowances).
    max_trials_per_task
        Records a task is tuned up to (counting those already in the database); with ``retune``,
        trials each task gets on top. Default 64, or 512 with a time budget (the time decides).
    num_trials_per_iter
        Candidates per batch (built in parallel on every CPU core).
    retune
        Also tune tasks that have enough records (extends them; nothing is lost).
    runner, builder
        MetaSchedule's (``"local"``, or e.g. an ``ms.runner.RPCRunner``); the local builder uses
        every CPU core.
    build_timeout_s
        Per-candidate build limit of the local builder (MetaSchedule's own default, 30 s, kills
        whole batches on a small or busy machine, leaving tasks without any schedule).
    progress
        Called with a line per measured batch (trials, best latency, time left); default: the
        ``ios_tvm`` logger.
    keep
        Prune the database to the best ``keep`` records per workload afterwards
        (:func:`~ios_tvm.compiler.databases.prune_database`); ``None``: keep everything.
    search_strategy, cost_model
        MetaSchedule's (names or objects). The search runs once per batch, so on a small machine
        or a short budget a smaller population
        (``ms.search_strategy.EvolutionarySearch(population_size=64)``) leaves more time to
        measure.

    Returns
    -------
    TuneReport

    Raises
    ------
    TuningError
        A budget or trial count out of range.
    """
    work = Path(work_dir)
    return _tune([_Entry("model", mod, work)], target, work_dir=work, sources=[], time_budget_s=time_budget_s,
                 max_trials_global=max_trials_global, max_trials_per_task=max_trials_per_task,
                 num_trials_per_iter=num_trials_per_iter, retune=retune, seed=seed, runner=runner, builder=builder,
                 build_timeout_s=build_timeout_s, progress=progress, keep=keep, strategy=search_strategy,
                 cost_model=cost_model)


def _build_config(entries: Sequence[Any], target: tvm.target.Target) -> dict[str, Any]:
    """``PassContext`` settings the candidates build under: the ones the models' own builds use
    (half-precision kernels for CUDA compile with ``StorageRewrite`` off in TVM 0.27, see
    :mod:`ios_tvm.compiler.context`)."""
    if target.kind.name == "cuda" and any(model_dtype(e.mod) in HALF for e in entries):
        return dict(STORAGE_REWRITE_OFF)
    return {}


def load_zoo_model(name: str, *, small: bool = False, batch_size: int = 1, dtype: str | None = None) -> tvm.IRModule:
    """A zoo model as builds see it: weights random (seed 0) and bound as constants; converted
    to ``dtype`` (``"float16"``, ``"bfloat16"``) by :func:`ios_tvm.precision.convert`."""
    mod = zoo.get(name, batch_size=batch_size, small=small)
    mod = zoo.bind_params(mod, zoo.random_params(mod))
    if dtype is not None and dtype != "float32":
        mod = convert(mod, dtype)
    return mod


def tune_models(
    models: Sequence[str] | Mapping[str, tvm.IRModule],
    target: str | dict | tvm.target.Target,
    root: str | os.PathLike = "tuning",
    *,
    time_budget_s: float | None = None,
    max_trials_per_task: int | None = None,
    num_trials_per_iter: int = 16,
    retune: bool = False,
    small: bool = False,
    batch_size: int = 1,
    dtype: str | None = None,
    seed: int | None = 0,
    runner: Any = "local",
    builder: Any = "local",
    build_timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
    keep: int | None = None,
    search_strategy: Any = "evolutionary",
    cost_model: Any = "xgb",
) -> TuneReport:
    """Tune several models with one budget into ``root/<arch>/<model>/``.

    A kernel that several models launch is one task: tuned once, weighted by its share of each
    model's time, and its records written to each of those models' databases (every directory
    stays self-contained). Records of the other databases under ``root/<arch>/`` seed the search
    too. MetaSchedule's logs go to ``root/<arch>/logs``. The other parameters are :func:`tune`'s.

    Parameters
    ----------
    models
        Zoo model names (random weights, seed 0, bound as builds bind them; ``small``,
        ``batch_size`` and ``dtype`` apply) or a mapping of name to Relax module. A model's
        half-precision kernels are other workloads than its float32 ones: both live in its
        directory, side by side.
    root
        Where the per-architecture directories live (the repository's ``tuning/``).

    Raises
    ------
    TuningError
        No models, or a budget or trial count out of range.
    ValueError
        An unknown zoo model.
    """
    if not models:
        raise TuningError("tune_models needs at least one model")
    _check_budget(time_budget_s, max_trials_per_task, num_trials_per_iter)
    named = dict(models) if isinstance(models, Mapping) else {
        n: load_zoo_model(n, small=small, batch_size=batch_size, dtype=dtype) for n in dict.fromkeys(models)}
    tgt = tuning_target(target)
    arch_dir = Path(root) / arch_of(tgt)
    entries = [_Entry(n, m, arch_dir / n) for n, m in named.items()]
    mine = {e.work_dir.resolve() for e in entries}
    sources = [p.parent for p in sorted(arch_dir.glob("*/database_tuning_record.json")) if p.parent.resolve() not in mine]
    return _tune(entries, tgt, work_dir=arch_dir, sources=sources, time_budget_s=time_budget_s,
                 max_trials_global=None, max_trials_per_task=max_trials_per_task,
                 num_trials_per_iter=num_trials_per_iter, retune=retune, seed=seed, runner=runner, builder=builder,
                 build_timeout_s=build_timeout_s, progress=progress, keep=keep, strategy=search_strategy,
                 cost_model=cost_model)
