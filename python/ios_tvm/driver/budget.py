"""A peak-memory budget for the search: ``SearchConfig(memory_budget=...)``.

A budget is bytes of activation storage, or a multiple of what the sequential schedule's build
plans (``"1.25x"``, ``1.25``). The dynamic program bounds memory in its own model
(:mod:`ios_tvm.core.memory`: the tensors alive between stages depend on the state only), exactly.
TVM's static planner then packs those tensors into blocks of storage by its own rules: on the zoo
it plans 1.4x to 2.2x the model's peak, and how much more depends on the order, not only on the
peak. The real plan is the judge, in :func:`fit`:

1. the sequential schedule's plan is computed (the unit of relative budgets, and the fallback: it
   meets any budget of ``1.0x`` or more); a budget below the least peak any schedule reaches in
   the model is refused before any search (TVM's plan holds at least that much);
2. the unbounded schedule: if its plan fits, it is the answer;
3. the search under :data:`MAX_ATTEMPTS` internal budgets (model bytes) from that least peak up
   to the unbounded schedule's (a grid: TVM's plan is not monotone in the model's peak);
4. from the fastest schedule that still did not fit, and the one planning least, :func:`grow`: the sequential
   schedule, and their concurrent stages added one by one (most latency saved first, or fewest
   bytes written first), while the plan fits;
5. the fastest schedule whose plan fits is checked with TVM's own plan (``ios_tvm.planned_memory``);
   if none fits, the sequential schedule when it does, else :class:`MemoryBudgetError` with the
   smallest plan seen.

Steps 3 and 4 judge plans by replaying TVM's planner (:class:`~ios_tvm.core.memory.PlanReplay`,
milliseconds) where that is exact (no merge stages, one output per kernel); otherwise by TVM's
plan (seconds each: fewer attempts, no growing). A schedule returned under a budget always fits
it: TVM planned it with the same ``cuda_graph``, merges and keep-alives as its build.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..core.memory import PlanReplay, format_bytes, schedule_peak
from ..core.schedule import Schedule
from ..errors import MemoryBudgetError
from ..ir.activations import output_bytes, output_nodes
from ..ir.graph import tensor_bytes

logger = logging.getLogger("ios_tvm")

Stages = list[list[list[int]]]  #: stages -> groups -> node ids

#: searches under internal budgets, when plans are replayed (cheap) / made by TVM (seconds each)
MAX_ATTEMPTS = 4
MAX_TVM_ATTEMPTS = 3
#: the budgets of :func:`memory_sweep` by default (``None``: unbounded)
DEFAULT_SWEEP = ("1.0x", "1.1x", "1.25x", "1.5x", None)
#: schedules (the fastest that did not fit) :func:`grow` starts from
GROWN_FROM = 1
#: passes of :func:`grow` over the stages it may add
GROW_PASSES = 2

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

HOW = ("give bytes (an integer, or with a unit: 300MiB, 2GB, 512KiB) or a multiple of the sequential "
       "schedule's planned memory (1.25x, or a float such as 1.25)")


@dataclass(frozen=True)
class MemoryBudget:
    """A parsed budget: ``bytes`` (absolute) or ``relative`` (times the sequential schedule's
    planned activation memory), exactly one of them."""

    bytes: int | None = None
    relative: float | None = None

    @staticmethod
    def parse(value: int | float | str) -> "MemoryBudget":
        """``1_000_000`` (bytes), ``1.25`` (relative), ``"1.25x"``, ``"300MiB"``, ``"2GB"``,
        ``"123"`` (bytes).

        Raises
        ------
        MemoryBudgetError
            Not a size, or not above zero.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise MemoryBudgetError(f"memory budget {value!r} is not a size: {HOW}")
        if isinstance(value, int):
            return MemoryBudget(bytes=_positive(value, value))
        if isinstance(value, float):
            return MemoryBudget(relative=_positive(value, value))
        text = value.strip().lower()
        if text.endswith("x"):
            try:
                factor = float(text[:-1])
            except ValueError:
                raise MemoryBudgetError(f"memory budget {value!r} is not a size: {HOW}") from None
            return MemoryBudget(relative=_positive(factor, value))
        m = _SIZE.match(text)
        if m is None or m.group(2) not in _UNITS:
            raise MemoryBudgetError(f"memory budget {value!r} is not a size: {HOW}")
        number = float(m.group(1)) * _UNITS[m.group(2)]
        return MemoryBudget(bytes=_positive(int(number), value))

    def resolve(self, sequential_bytes: int) -> int:
        """The budget in bytes, given the sequential schedule's planned memory."""
        if self.bytes is not None:
            return self.bytes
        assert self.relative is not None
        return int(math.floor(self.relative * sequential_bytes))

    def __str__(self) -> str:
        return f"{self.relative:g}x" if self.relative is not None else format_bytes(int(self.bytes or 0))


def _positive(number: float, given: Any) -> Any:
    if not number > 0 or math.isinf(number):
        raise MemoryBudgetError(f"memory budget {given!r} must be a size above zero: {HOW}")
    return number


@dataclass
class Candidate:
    """A schedule the budget's loop found, with its latency and plan."""

    stages: Stages
    latencies: list[float]
    kinds: list[str]
    planned: int
    how: str  #: "unbounded", "search under N model bytes", "grown"
    internal: int | None = None

    @property
    def latency(self) -> float:
        return float(sum(self.latencies))

    def as_dict(self) -> dict[str, Any]:
        return {"how": self.how, "internal_budget": self.internal, "latency_s": self.latency,
                "planned_bytes": self.planned, "stages": len(self.stages)}


def _stage_dag_order(stages: Stages, edges: Sequence[tuple[int, int]]) -> Stages:
    """The same stages in another valid order: whenever several may run next, the one holding
    the smallest kernel id (the model's own order, which TVM's planner packs well)."""
    where = {v: i for i, st in enumerate(stages) for g in st for v in g}
    after: list[set[int]] = [set() for _ in stages]
    waiting = [0] * len(stages)
    for u, v in edges:
        a, b = where[u], where[v]
        if a != b and b not in after[a]:
            after[a].add(b)
            waiting[b] += 1
    first = [min(v for g in st for v in g) for st in stages]
    ready = [(first[i], i) for i in range(len(stages)) if waiting[i] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(stages[i])
        for b in after[i]:
            waiting[b] -= 1
            if waiting[b] == 0:
                heapq.heappush(ready, (first[b], b))
    return out


def grow(target: Candidate, limit: int, replay: Callable[[Stages], int], latency: Callable[[list[list[int]]], float],
         edges: Sequence[tuple[int, int]], smallest_first: bool = False,
         sizes: Sequence[int] = ()) -> Candidate | None:
    """From the sequential schedule toward ``target``: its concurrent stages, most latency saved
    first (``smallest_first``: those writing the fewest bytes, ``sizes`` per kernel, first), each
    kept when the replayed plan still fits ``limit`` (the other kernels run one by one; stages in
    :func:`_stage_dag_order`), over :data:`GROW_PASSES` passes. ``None`` when the sequential
    schedule itself does not fit. Any subset of a valid schedule's stages, the rest run kernel by
    kernel in their order, is a valid schedule."""
    singles = {v: [[v]] for st in target.stages for g in st for v in g}
    alone = {v: latency([[v]]) for v in singles}
    gain = []
    for st, lat, kind in zip(target.stages, target.latencies, target.kinds):
        if sum(map(len, st)) > 1:
            gain.append((sum(alone[v] for g in st for v in g) - lat, [list(g) for g in st], lat, kind))
    if smallest_first:
        gain.sort(key=lambda x: sum(sizes[v] for g in x[1] for v in g))
    else:
        gain.sort(key=lambda x: -x[0])
    kept: dict[int, tuple[list[list[int]], float, str]] = {}  # first kernel -> stage

    def schedule() -> tuple[Stages, list[float], list[str]]:
        units = []
        covered = {v for st, _, _ in kept.values() for g in st for v in g}
        units += [st for st, _, _ in kept.values()]
        units += [singles[v] for v in sorted(singles) if v not in covered]
        order = _stage_dag_order(units, edges)
        info = {id(st): (lat, kind) for st, lat, kind in kept.values()}
        return (order, [info[id(st)][0] if id(st) in info else alone[st[0][0]] for st in order],
                [info[id(st)][1] if id(st) in info else "concurrent" for st in order])

    stages, lats, kinds = schedule()
    plan = replay(stages)
    if plan > limit:
        return None
    for _ in range(GROW_PASSES):  # the plan is not monotone: a stage refused may fit after others
        added = False
        for saved, st, lat, kind in gain:
            first = min(v for g in st for v in g)
            if saved <= 0 or first in kept:
                continue
            kept[first] = (st, lat, kind)
            trial = schedule()
            trial_plan = replay(trial[0])
            if trial_plan <= limit:
                (stages, lats, kinds), plan = trial, trial_plan
                added = True
            else:
                del kept[first]
        if not added:
            break
    return Candidate(stages, lats, kinds, plan, "grown", target.internal)


def fit(search: Any, budget: MemoryBudget, plan: Callable[[Schedule | None], int],
        make: Callable[[tuple], Schedule], replayable: bool = True) -> tuple[Schedule, dict[str, Any]]:
    """The fastest schedule found whose planned memory fits ``budget`` (the module docstring
    says how), and what the loop did (``schedule.meta["memory"]``).

    Parameters
    ----------
    search
        A :class:`~ios_tvm.driver.optimize.GraphSearch` (``solve(memory_budget)``).
    plan
        TVM's planned activation bytes of a schedule's build (``None``: sequential), as
        :func:`ios_tvm.planned_memory` with the build's settings.
    make
        Makes a :class:`Schedule` from what ``search.solve`` returns.
    replayable
        Whether the build plans as :class:`~ios_tvm.core.memory.PlanReplay` replays; schedules
        with merge stages, and graphs with kernels of several outputs, are planned by TVM
        whatever this says. Either way the result is checked with ``plan``.

    Raises
    ------
    MemoryBudgetError
        The budget is below what any schedule needs (before the search under it), or no schedule
        found fits it; ``least`` is the smallest budget known to be met.
    """
    graph = search.graph
    n, edges = len(graph.nodes), graph.edges
    tensors = [[(tensor_bytes(s, d), d) for s, d in node.outputs] for node in graph.nodes]
    sizes, outputs = output_bytes(graph), output_nodes(graph)
    replay = PlanReplay(n, edges, tensors, outputs)
    replayable = replayable and all(len(t) == 1 for t in tensors)
    t0 = time.perf_counter()
    seq_planned = plan(None)
    limit = budget.resolve(seq_planned)
    least = search.least_budget()
    meta: dict[str, Any] = {"budget": str(budget), "budget_bytes": limit, "sequential_bytes": seq_planned,
                            "least_model_peak_bytes": least, "replayed": replayable, "candidates": []}
    if least > limit:  # TVM's plan holds at least the tensors the model counts
        raise MemoryBudgetError(
            f"memory budget {budget} ({format_bytes(limit)}) is below what any schedule needs: at least "
            f"{format_bytes(least)} of activations are alive at once whatever the order (the sequential "
            f"schedule plans {format_bytes(seq_planned)}); give at least {_suggest(least, seq_planned)}", least)
    tvm_plans: dict[tuple, int] = {}

    def tvm_plan(c: Candidate) -> int:
        key = (tuple(tuple(map(tuple, st)) for st in c.stages), tuple(c.kinds))
        if key not in tvm_plans:
            tvm_plans[key] = plan(make((c.stages, c.latencies, found0[2], found0[3], c.kinds)))
        return tvm_plans[key]

    def judged(found: tuple, how: str, internal: int | None) -> Candidate:
        stages, lats, _, _, kinds = found
        c = Candidate([[list(g) for g in st] for st in stages], list(lats), list(kinds), 0, how, internal)
        c.planned = replay(c.stages) if exact(c) else tvm_plan(c)
        meta["candidates"].append(c.as_dict())
        return c

    def exact(c: Candidate) -> bool:
        return replayable and "merge" not in c.kinds

    t_search = time.perf_counter()
    found0 = search.solve()
    found: list[Candidate] = [judged(found0, "unbounded", None)]
    if found[0].planned > limit:
        # internal budgets from the least peak to the unbounded schedule's: TVM's plan does not
        # follow the model's peak monotonically, so a grid rather than a bisection
        top = schedule_peak(n, edges, sizes, outputs, found0[0], found0[4])[0]
        steps = MAX_ATTEMPTS if replayable else MAX_TVM_ATTEMPTS
        for internal in sorted({least + (top - least) * i // steps for i in range(steps)}):
            found.append(judged(search.solve(internal), f"search under {internal} model bytes", internal))
        if replayable:
            def latency(stage: list[list[int]]) -> float:
                return float(search.cost_model.stage_latency(graph, tuple(tuple(g) for g in stage)))

            over = sorted((c for c in found if exact(c) and c.planned > limit), key=lambda c: c.latency)
            starts = over[:GROWN_FROM] + sorted(over[GROWN_FROM:], key=lambda c: c.planned)[:1]  # and the leanest
            for target in starts:
                for smallest_first in (False, True):
                    grown = grow(target, limit, replay, latency, edges, smallest_first, sizes)
                    if grown is not None:
                        found.append(grown)
                        meta["candidates"].append(grown.as_dict())
    meta["search_s"] = round(time.perf_counter() - t_search, 3)
    for c in sorted((c for c in found if c.planned <= limit), key=lambda c: (c.latency, c.planned)):
        real = tvm_plan(c)  # the judge
        if real <= limit:
            sched = make((c.stages, c.latencies, found0[2], found0[3], c.kinds))
            meta.update(chosen=c.how, planned_bytes=real, used=real / limit,
                        model_peak_bytes=schedule_peak(n, edges, sizes, outputs, c.stages, c.kinds)[0],
                        time_s=round(time.perf_counter() - t0, 3))
            return sched, meta
        logger.warning("ios_tvm: a schedule replayed at %s plans %s with TVM; trying the next", format_bytes(c.planned),
                       format_bytes(real))
    if seq_planned <= limit:
        logger.warning("ios_tvm: no concurrent schedule found fits the memory budget %s (%s); the sequential "
                       "schedule (%s) is returned", budget, format_bytes(limit), format_bytes(seq_planned))
        seq = Schedule.sequential(graph, search.cost_model)
        stages = [[list(g) for g in st.groups] for st in seq.stages]
        sched = make((stages, [float(st.latency or 0.0) for st in seq.stages], found0[2], found0[3],
                      ["concurrent"] * len(stages)))
        meta.update(chosen="sequential", planned_bytes=seq_planned, used=seq_planned / limit,
                    model_peak_bytes=schedule_peak(n, edges, sizes, outputs, stages)[0],
                    time_s=round(time.perf_counter() - t0, 3))
        return sched, meta
    smallest = min([c.planned for c in found] + [seq_planned])
    raise MemoryBudgetError(
        f"no schedule found fits the memory budget {budget} ({format_bytes(limit)}): the smallest planned was "
        f"{format_bytes(smallest)} (the sequential schedule plans {format_bytes(seq_planned)}); give at least "
        f"{_suggest(smallest, seq_planned)}", smallest)


def _suggest(nbytes: int, sequential: int) -> str:
    return f"{format_bytes(nbytes)} ({math.ceil(100 * nbytes / sequential) / 100:g}x the sequential schedule)"
