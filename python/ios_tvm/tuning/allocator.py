"""Which kernel gets the next batch of tuning trials: :class:`TrialAllocator`, pure Python (the
MetaSchedule side that asks it is :mod:`ios_tvm.tuning.scheduler`).

The rule. A task's **weight** is
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
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


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
