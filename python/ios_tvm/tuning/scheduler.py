"""Trials where they pay, within a time budget: the task scheduling behind :func:`ios_tvm.tune`.

MetaSchedule tunes a list of tasks (kernels) in batches of candidates; a *task scheduler*
picks the task of each batch. Its own schedulers stop on a trial count only and weigh tasks by
call count and recent gains. Here:

* :class:`~ios_tvm.tuning.allocator.TrialAllocator` (pure Python) decides who gets the next batch
  (its rule: :mod:`ios_tvm.tuning.allocator`).
* :class:`BudgetScheduler`, a MetaSchedule ``PyTaskScheduler``, asks the allocator and ends the
  run (returns -1) when one more batch would end past the deadline: stopping costs the join of
  the batch under way, another batch a cycle more (both the median of the last three). A run
  ends before its deadline, within about a cycle of it (the first batch, whose length nothing
  tells yet, excepted).
* :class:`RecordSink`, a measure callback, sees every measured batch: it feeds the allocator,
  writes each valid record to every database holding the task's workload and reports progress.

:func:`run_tasks` puts them together around ``TaskScheduler.tune``; Ctrl-C (SIGINT) during a run
ends it cleanly after the batch under way (a second one aborts), every measured record on disk.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

from ..compiler.databases import record_seconds
from .allocator import TaskInfo, TrialAllocator
from .builder import default_builder

logger = logging.getLogger("ios_tvm")


def trace_key(trace: Any) -> str:
    """A schedule's identity in a database: its trace as JSON text. (MetaSchedule's search avoids
    re-measuring what it measured in the same run only, so a continued run meets schedules the
    database already has.)"""
    return json.dumps(trace.as_json(), default=_plain)


def _plain(obj: Any) -> Any:
    """JSON for the TVM objects in a trace's JSON form (numbers, arrays, strings)."""
    if hasattr(obj, "value"):
        return obj.value
    try:
        return list(obj)
    except TypeError:
        return str(obj)


def _run_seconds(result: Any) -> float | None:
    if result.error_msg is not None:
        return None
    return record_seconds(result.run_secs)


@derived_object
class RecordSink(PyMeasureCallback):
    """After each measured batch: update the allocator, write valid records to the task's
    databases, report progress.

    Parameters
    ----------
    allocator
        The run's :class:`TrialAllocator`.
    order
        ``order[i]`` is the allocator index of MetaSchedule's task ``i``.
    target
        Recorded with each record.
    report
        Called with each progress line.
    clock
        ``() -> (elapsed_s, left_s or None)``.
    """

    def __init__(self, allocator: TrialAllocator, order: Sequence[int], target: tvm.target.Target,
                 report: Callable[[str], None], clock: Callable[[], tuple[float, float | None]]) -> None:
        self.allocator = allocator
        self.order = list(order)
        self.target = target
        self.report = report
        self.clock = clock
        self.written = 0  #: new schedules recorded (once per task, whatever its databases)
        self._workloads: dict[tuple[int, int], Any] = {}

    def _workload(self, k: int, j: int, db: Any) -> Any:
        if (k, j) not in self._workloads:
            self._workloads[(k, j)] = db.commit_workload(self.allocator.tasks[k].mod)
        return self._workloads[(k, j)]

    def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
              runner_results: Any) -> None:
        k = self.order[task_id]
        secs = [_run_seconds(r) for r in runner_results]
        self.allocator.record(k, secs)
        if not secs:
            return
        task = self.allocator.tasks[k]
        new = known = 0
        for cand, result, s in zip(measure_candidates, runner_results, secs):
            if s is None:
                continue
            key = trace_key(cand.sch.trace)
            if key in task.known:
                known += 1
                continue
            task.known.add(key)
            new += 1
            for j, db in enumerate(task.databases):
                db.commit_tuning_record(ms.database.TuningRecord(
                    cand.sch.trace, self._workload(k, j, db), result.run_secs, self.target, cand.args_info))
        self.written += new
        if known == len(secs) < self.allocator.batch:  # a short batch, all known: nothing new left
            self.allocator.exhaust(k)
        elapsed, left = self.clock()
        alloc = self.allocator
        best = alloc.best[k]
        share = alloc.weights()[k]
        when = f"{elapsed:6.1f} s" + (f", {left:5.1f} s left" if left is not None else "")
        self.report(f"[{when}] {sum(alloc.trials):5d} trials | {task.name}: {alloc.trials[k]} trials, best "
                    f"{'-' if best is None else f'{best * 1e3:.4f} ms'}, weight {share:.1%}")


@derived_object
class WhileRunning(PyMeasureCallback):
    """Apply the measure callback ``inner`` while ``running()`` is true."""

    def __init__(self, inner: Any, running: Callable[[], bool]) -> None:
        self.inner = inner
        self.running = running

    def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
              runner_results: Any) -> None:
        if self.running():
            self.inner.apply(task_scheduler, task_id, measure_candidates, builder_results, runner_results)


@derived_object
class BudgetScheduler(PyTaskScheduler):
    """MetaSchedule task scheduler: :class:`TrialAllocator` picks, a deadline stops.

    Parameters
    ----------
    allocator
        Decides the task of each batch.
    order
        ``order[i]`` is the allocator index of MetaSchedule's task ``i``.
    deadline
        ``time.monotonic()`` value after which no batch starts, or ``None``.
    ready
        Called before the first decision: waits for the builder's workers to start, so that the
        first batch, whose length is not known yet, does not also carry their start.
    """

    def __init__(self, allocator: TrialAllocator, order: Sequence[int], deadline: float | None,
                 ready: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.allocator = allocator
        self.order = list(order)
        self.deadline = deadline
        self.ready = ready
        self.stopped_by: str | None = None  #: "time", "trials" or "interrupt" once it returned -1
        self.interrupted = False  #: set by Ctrl-C: no further batch starts
        self.cycles: list[float] = []  #: seconds between consecutive picks (one batch each)
        self.joins: list[float] = []  #: seconds spent joining finished batches (callbacks included)
        self._last: float | None = None

    @staticmethod
    def _recent(values: list[float]) -> float:
        return statistics.median(values[-3:]) if values else 0.0

    def next_task_id(self) -> int:
        sched = self._outer()
        tasks = sched.tasks_
        now = time.monotonic()
        if self._last is not None:
            self.cycles.append(now - self._last)
        if self._last is None and self.ready is not None:
            if self.deadline is not None and now >= self.deadline:
                self.stopped_by = "time"
                return -1
            self.ready()
        for i in range(len(tasks)):  # join the batches that have finished (feeds the allocator)
            sched.touch_task(i)
        if self._last is not None:
            self.joins.append(time.monotonic() - now)
        if self.interrupted:
            self.stopped_by = "interrupt"
            return -1
        # stopping now ends after joining the batch under way (a join); one more batch ends a cycle
        # later: take it only when that still ends by the deadline (a budget is not exceeded)
        if self.deadline is not None:
            end_if_stopped = time.monotonic() + self._recent(self.joins)
            if end_if_stopped + self._recent(self.cycles) > self.deadline:
                self.stopped_by = "time"
                return -1
        live = [self.order[i] for i, t in enumerate(tasks) if not t.is_terminated]
        k = self.allocator.pick(live)
        if k is None:
            self.stopped_by = "trials"
            return -1
        i = self.order.index(k)
        if tasks[i].runner_futures is not None:
            sched.join_running_task(i)
        self.allocator.issue(k)
        self._last = time.monotonic()
        return i


@dataclass
class RunResult:
    """What :func:`run_tasks` did."""

    trials: list[int]
    best_s: list[float | None]
    weights: list[float]
    stopped_by: str
    written: int  #: new schedules recorded (once per task, whatever its databases)
    cycles: list[float]


def make_cost_model(kind: str) -> Any:
    """MetaSchedule's cost model ``kind``; ``"xgb"`` without xgboost installed becomes ``"random"``
    with a warning (XGBoost is imported only when the model first trains, which would end the run
    after its first batch; a machine without a package index may lack it)."""
    if kind == "xgb" and importlib.util.find_spec("xgboost") is None:
        logger.warning("ios_tvm: xgboost is not installed: tuning with MetaSchedule's random cost model instead "
                       "of XGBoost (candidates are measured unranked, so the same trials find slower kernels); "
                       "pip install xgboost")
        kind = "random"
    return ms.cost_model.CostModel.create(kind, num_tuning_cores=os.cpu_count() or 1)


def run_tasks(
    tasks: Sequence[TaskInfo],
    contexts: Sequence[Any],
    target: tvm.target.Target,
    *,
    deadline: float | None = None,
    start: float | None = None,
    max_trials_global: int | None = None,
    num_trials_per_iter: int = 16,
    builder: Any = "local",
    runner: Any = "local",
    database: Any = None,
    cost_model: Any = "xgb",
    build_timeout_s: float = 120.0,
    report: Callable[[str], None] | None = None,
    allocator: TrialAllocator | None = None,
) -> RunResult:
    """Tune ``contexts`` (MetaSchedule ``TuneContext``\\ s of the tasks with an allowance, in the
    order of ``tasks``) until the allowances, ``max_trials_global`` or the deadline end it.

    Parameters
    ----------
    tasks
        Every task (see :class:`TaskInfo`); those with ``allowance > 0`` have a context.
    deadline, start
        ``time.monotonic()`` values: no batch starts after ``deadline``; progress lines count
        from ``start``.
    database
        The database the search reads elites from and MetaSchedule adds records to (default: an
        empty ``MemoryDatabase``); the tasks' own databases get the valid records either way.
    builder, runner, cost_model
        MetaSchedule's; ``"local"`` builder: :func:`~ios_tvm.tuning.builder.default_builder` (every
        CPU core, one pool for the run).
    report
        Called with a progress line per batch (default: the ``ios_tvm`` logger).
    allocator
        A :class:`TrialAllocator` of ``tasks`` (default: one with default settings).
    """
    start = time.monotonic() if start is None else start
    order = [k for k, t in enumerate(tasks) if t.allowance > 0]
    if len(order) != len(contexts):
        raise ValueError(f"{len(contexts)} contexts for {len(order)} tasks with an allowance")
    alloc = allocator or TrialAllocator(tasks, num_trials_per_iter)
    own_builder = isinstance(builder, str) and builder == "local"
    if own_builder:
        builder = default_builder(build_timeout_s)
    if isinstance(runner, str):
        runner = ms.runner.Runner.create(runner)
    if isinstance(cost_model, str):
        cost_model = make_cost_model(cost_model)
    database = ms.database.MemoryDatabase() if database is None else database

    def clock() -> tuple[float, float | None]:
        now = time.monotonic()
        return now - start, (None if deadline is None else max(0.0, deadline - now))

    sink = RecordSink(alloc, order, target, report or logger.info, clock)
    sched = BudgetScheduler(alloc, order, deadline, getattr(builder, "wait_ready", None))
    allowances = [tasks[k].allowance for k in order]
    budget = sum(allowances) if max_trials_global is None else max_trials_global
    # MetaSchedule's default callbacks, with the cost model left untrained on the batches joined
    # after the run stopped (training then only delays the end)
    callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact(),
                 WhileRunning(ms.measure_callback.UpdateCostModel(), lambda: sched.stopped_by is None), sink]
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum: int, frame: Any) -> None:
            if sched.interrupted:  # a second Ctrl-C aborts at once
                raise KeyboardInterrupt
            sched.interrupted = True
            (report or logger.info)("interrupted: stopping after the batch under way (Ctrl-C again aborts)")

        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        sched.tune(tasks=list(contexts), task_weights=[float(sum(tasks[k].calls.values())) for k in order],
                   max_trials_global=budget, max_trials_per_task=max(allowances),
                   num_trials_per_iter=num_trials_per_iter, builder=builder, runner=runner,
                   measure_callbacks=callbacks, database=database, cost_model=cost_model)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if own_builder:
            builder.shutdown()
    return RunResult(alloc.trials, alloc.best, alloc.weights(), sched.stopped_by or "trials", sink.written,
                     sched.cycles)
