"""Trials where they pay, within a time budget: the task scheduling behind :func:`ios_tvm.tune`.

MetaSchedule tunes a list of tasks (kernels) in batches of candidates; a *task scheduler*
picks the task of each batch. Its own schedulers stop on a trial count only and weigh tasks by
call count and recent gains. Here:

* :class:`TrialAllocator` (pure Python) decides who gets the next batch. A task's **weight** is
  what its kernel costs the models: ``w_k = sum_m c_km L_k / T_m``, over the models ``m`` that
  call it ``c_km`` times, with ``L_k`` its time per call and ``T_m = sum_k c_km L_k`` the model's
  time (each model counts equally). ``L_k`` is the best measured latency once the task has one
  (from earlier records or this run); before that, the analytic cost model's estimate scaled by
  the median ratio of first measured latency to estimate of the measured tasks. A task's
  **potential** ``p_k`` is 1 until it has ``window`` batches in this run, then its best
  latency's relative gain over its last ``window`` batches divided by ``full_gain``, clamped to
  ``[floor, 1]``: a task that stopped improving keeps ``floor`` of its share (evolutionary
  search does jump after plateaus). Batches go by stride scheduling on the rates ``w_k p_k``:
  each task has a virtual
  time ``v_k``; the next batch goes to the task whose batch would end first in virtual time,
  ``v_k + b / (w_k p_k)``, and a batch of ``n`` trials adds ``n / (w_k p_k)`` to ``v_k``. So
  trials follow ``w_k p_k`` within about a batch per task, and heavy tasks start first (a short
  budget may never reach the lightest ones: they keep dlight's default schedules).
* :class:`BudgetScheduler`, a MetaSchedule ``PyTaskScheduler``, asks the allocator and ends the
  run (returns -1) when one more batch would end further past the deadline than stopping now
  ends before it: stopping costs the join of the batch under way, another batch a cycle more
  (both the median of the last three). A run ends within about half a cycle of its deadline.
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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

from .tune_builder import default_builder
from .tuning_db import record_seconds

logger = logging.getLogger("ios_tvm")


@dataclass
class TaskInfo:
    """One workload to tune; identical kernels of several models are one task.

    Attributes
    ----------
    name
        Label in reports and progress lines.
    mod
        The workload: an ``IRModule`` with the kernel as ``main`` (MetaSchedule's task module).
    calls
        Model name -> how many times the model launches this kernel.
    estimate_s
        Analytic estimate of one call (seconds), ``None`` when unknown.
    best_s
        Best measured latency of one call so far (seconds), ``None`` without a valid record.
    records
        Distinct schedules (traces) of it with a valid record, before this run.
    allowance
        Trials this run may spend on it (0: left alone).
    databases
        Where its new records are written (every per-model database of a model calling it).
    known
        :func:`trace_key` of every schedule recorded for it: a candidate with a known schedule is
        not written again, and a short batch (the search found fewer candidates than asked) of
        nothing new, like an empty one, ends the task's run (:attr:`TrialAllocator.exhausted`).
    """

    name: str
    mod: Any
    calls: dict[str, int]
    estimate_s: float | None = None
    best_s: float | None = None
    records: int = 0
    allowance: int = 0
    databases: list[Any] = field(default_factory=list, repr=False)
    known: set[str] = field(default_factory=set, repr=False)
    key: str = ""  #: the workload's structural hash (as MetaSchedule's workload file writes it)


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


class TrialAllocator:
    """Which task gets the next batch (the rule is in the module docstring).

    Parameters
    ----------
    tasks
        All tasks of the models, including those with ``allowance`` 0 (they count in the
        models' times).
    batch
        Trials per batch (MetaSchedule's ``num_trials_per_iter``).
    window, full_gain, floor
        Potential: batches looked back on, the relative gain that counts as fully alive, and the
        share a task that stopped improving keeps (``floor=1`` turns potential off).
    """

    def __init__(self, tasks: Sequence[TaskInfo], batch: int, *, window: int = 3, full_gain: float = 0.05,
                 floor: float = 0.2) -> None:
        self.tasks = list(tasks)
        self.batch = batch
        self.window, self.full_gain, self.floor = window, full_gain, floor
        n = len(self.tasks)
        self.best: list[float | None] = [t.best_s for t in self.tasks]
        self.trials = [0] * n  #: trials measured in this run
        self.pending = [0] * n  #: trials handed out and not yet measured
        self.vtime = [0.0] * n
        self.history: list[list[float | None]] = [[t.best_s] for t in self.tasks]  #: best after each batch
        self._rate_at_issue = [0.0] * n
        self.exhausted = [False] * n  #: the search ran out of new candidates for it

    # -- weights -------------------------------------------------------------------------------
    def latencies(self) -> list[float]:
        """``L_k``: best measured time per call, else the estimate calibrated by the tasks
        measured so far (their first measured best over their estimate: an unmeasured task is
        about as far from tuned as a task at its first batch)."""
        firsts = [next((x for x in h if x is not None), None) for h in self.history]
        ratios = [f / t.estimate_s for f, t in zip(firsts, self.tasks) if f is not None and t.estimate_s]
        scale = statistics.median(ratios) if ratios else 1.0
        out: list[float | None] = [b if b is not None else (t.estimate_s * scale if t.estimate_s else None)
                                   for b, t in zip(self.best, self.tasks)]
        known = [x for x in out if x]
        fill = statistics.median(known) if known else 1.0
        return [x if x else fill for x in out]

    def weights(self) -> list[float]:
        """``w_k``: the task's share of each model's time, summed over the models."""
        lat = self.latencies()
        totals: dict[str, float] = {}
        for t, x in zip(self.tasks, lat):
            for model, c in t.calls.items():
                totals[model] = totals.get(model, 0.0) + c * x
        return [sum(c * x / totals[m] for m, c in t.calls.items() if totals[m] > 0)
                for t, x in zip(self.tasks, lat)]

    def potential(self, k: int) -> float:
        """``p_k`` in ``[floor, 1]``: recent relative gain of task ``k``'s best latency."""
        h = self.history[k]
        if len(h) - 1 < self.window:
            return 1.0
        old, new = h[-1 - self.window], h[-1]
        if old is None or new is None:  # still looking for (or just found) a working schedule
            return 1.0
        gain = (old - new) / old if old > 0 else 0.0
        return min(1.0, max(self.floor, gain / self.full_gain))

    def rates(self) -> list[float]:
        """``w_k p_k`` of every task."""
        return [max(w, 1e-12) * self.potential(k) for k, w in enumerate(self.weights())]

    # -- decisions -----------------------------------------------------------------------------
    def can_take(self, k: int) -> bool:
        """Whether task ``k`` has allowance left for another batch (a partial one counts)."""
        return not self.exhausted[k] and self.trials[k] + self.pending[k] < self.tasks[k].allowance

    def pick(self, live: Iterable[int]) -> int | None:
        """The task among ``live`` (with allowance left) whose next batch ends first in virtual
        time; ``None`` when there is none. Ties go to the heavier task."""
        rates = self.rates()
        best, best_key = None, None
        for k in live:
            if not self.can_take(k):
                continue
            key = (self.vtime[k] + self.batch / rates[k], -rates[k])
            if best_key is None or key < best_key:
                best, best_key = k, key
        if best is not None:
            self._rate_at_issue[best] = rates[best]
        return best

    def issue(self, k: int, n: int | None = None) -> None:
        """Task ``k`` got a batch of ``n`` trials (default: a whole batch, capped by allowance)."""
        left = self.tasks[k].allowance - self.trials[k]
        self.pending[k] = min(self.batch if n is None else n, max(left, 0))

    def exhaust(self, k: int) -> None:
        """Task ``k``'s search has nothing new: no further batches for it in this run."""
        self.exhausted[k] = True

    def record(self, k: int, latencies: Sequence[float | None]) -> None:
        """Results of task ``k``'s batch: seconds per candidate, ``None`` for failures. An empty
        batch (the search found nothing new: a small design space) ends the task's run."""
        n = len(latencies)
        if n == 0:
            self.exhausted[k] = True
            self.pending[k] = 0
            return
        rate = self._rate_at_issue[k] or self.rates()[k]
        self.trials[k] += n
        self.pending[k] = 0
        self.vtime[k] += n / rate
        valid = [x for x in latencies if x is not None]
        if valid and (self.best[k] is None or min(valid) < self.best[k]):
            self.best[k] = min(valid)
        self.history[k].append(self.best[k])


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
        # later: take the batch when that lands nearer the deadline
        if self.deadline is not None:
            end_if_stopped = time.monotonic() + self._recent(self.joins)
            if end_if_stopped + 0.5 * self._recent(self.cycles) > self.deadline:
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
        MetaSchedule's; ``"local"`` builder: :func:`~ios_tvm.tune_builder.default_builder` (every
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
