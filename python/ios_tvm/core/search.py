"""The IOS dynamic program and the two baseline schedules of the paper. Pure: no TVM, no I/O.

A schedule here is a list of stages; a stage is a list of groups; a group is a list of node ids in
topological order. Groups of a stage run concurrently, the nodes of a group run one after another.

>>> from ios_tvm.core.search import solve
>>> longest_group = lambda groups: float(max(len(g) for g in groups))
>>> solve(3, [(0, 2), (1, 2)], longest_group)   # two sources feed one sink
[[[0], [1]], [[2]]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import MemoryBudgetError
from .dag import Dag
from .memory import BlockMemory
from .plan import Groups, Plan, PlanCache, StageTable

StageLatency = Callable[[Groups], float]
BatchLatency = Callable[[StageTable], Sequence[float]]
StageList = list[list[list[int]]]


@dataclass
class SearchStats:
    """What one dynamic program did (summed over blocks by :func:`add`)."""

    nodes: int = 0
    states: int = 0
    transitions: int = 0
    stages: int = 0  # distinct candidate stages whose latency was asked for

    def add(self, other: "SearchStats") -> "SearchStats":
        return SearchStats(
            self.nodes + other.nodes,
            self.states + other.states,
            self.transitions + other.transitions,
            self.stages + other.stages,
        )


@dataclass
class DPResult:
    """Optimal stages of one DAG, their latencies and the search statistics."""

    stages: StageList
    latencies: list[float]
    stats: SearchStats = field(default_factory=SearchStats)
    kinds: list[str] = field(default_factory=list)  #: "concurrent" or "merge" per stage
    #: bytes each stage needs in the search's memory model (:mod:`ios_tvm.core.memory`), when
    #: the search was given tensor sizes
    memory: list[int] = field(default_factory=list)

    @property
    def latency(self) -> float:
        return float(sum(self.latencies))

    @property
    def peak(self) -> int:
        """The largest :attr:`memory` of a stage (0 without tensor sizes)."""
        return max(self.memory, default=0)


def _check_limits(max_group_size: int, max_num_groups: int) -> None:
    for name, value in (("max_group_size (r)", max_group_size), ("max_num_groups (s)", max_num_groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def stage_costs(table: StageTable, stage_latency: StageLatency,
                merge_latency: Callable[[tuple[int, ...]], float] | None = None,
                stage_latencies: BatchLatency | None = None) -> np.ndarray:
    """Latency of every stage of ``table``: concurrent stages by ``stage_latencies(table)`` (all
    at once) when given, else one ``stage_latency(groups)`` call each; merge stages by
    ``merge_latency(nodes)``.

    Raises
    ------
    ValueError
        A latency that is not finite and >= 0 (named with its stage).
    """
    lat = np.empty(len(table), dtype=np.float64)
    concurrent = np.flatnonzero(~table.merge)
    if stage_latencies is not None and len(concurrent):
        got = np.asarray(stage_latencies(table.take(concurrent)), dtype=np.float64)
        if got.shape != (len(concurrent),):
            raise ValueError(f"stage_latencies returned {got.shape[0] if got.ndim else 'a scalar'} latencies "
                             f"for {len(concurrent)} stages")
        lat[concurrent] = got
    else:
        for k in concurrent.tolist():
            lat[k] = float(stage_latency(table.groups(k)))
    for k in np.flatnonzero(table.merge).tolist():
        assert merge_latency is not None
        lat[k] = float(merge_latency(table.groups(k)[0]))
    bad = np.flatnonzero(~(lat >= 0.0) | np.isinf(lat))  # also NaN
    if len(bad):
        k = int(bad[0])
        what = ("merge", table.groups(k)[0]) if table.merge[k] else table.groups(k)
        raise ValueError(f"stage latency {float(lat[k])!r} for {what}; latencies must be finite and >= 0")
    return lat


def solve_plan(plan: Plan, lat: np.ndarray, need: np.ndarray | None = None,
               budget: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(best, choice, peak)`` per state of ``plan`` under stage latencies ``lat``: the least
    summed latency of a stage sequence that runs the state, and the transition (index into
    ``plan.rest`` / ``plan.stage``) of its last stage; ties go to the first transition in the
    plan's order. States of one size are solved together (each depends on smaller ones only).

    With ``need`` (bytes per transition) and a ``budget``, only transitions needing at most the
    budget are taken (``best`` is ``inf`` where none fits), ties in latency go to the lower
    ``peak`` (the largest need along the sequence), then to the first transition."""
    best = np.zeros(len(plan.states), dtype=np.float64)
    choice = np.full(len(plan.states), -1, dtype=np.int64)
    peak = None if need is None else np.zeros(len(plan.states), dtype=np.int64)
    for k in range(1, len(plan.levels) - 1):
        a, b = int(plan.levels[k]), int(plan.levels[k + 1])
        t0, t1 = int(plan.ptr[a]), int(plan.ptr[b])
        rest = plan.rest[t0:t1]
        cost = best[rest] + lat[plan.stage[t0:t1]]
        starts = plan.ptr[a:b] - t0
        counts = np.diff(plan.ptr[a:b + 1])
        if peak is not None:
            reach = np.maximum(peak[rest], need[t0:t1])
            if budget is not None:
                cost = np.where(need[t0:t1] <= budget, cost, np.inf)
        low = np.minimum.reduceat(cost, starts)
        ties = cost == np.repeat(low, counts)
        if peak is not None:
            least = np.minimum.reduceat(np.where(ties, reach, np.iinfo(np.int64).max), starts)
            ties &= reach == np.repeat(least, counts)
            peak[a:b] = least
        best[a:b] = low
        choice[a:b] = np.minimum.reduceat(np.where(ties, np.arange(t0, t1), t1), starts)
    return best, choice, peak


def least_peak(plan: Plan, need: np.ndarray) -> int:
    """The smallest peak (largest need along a stage sequence) any schedule of the plan's DAG
    reaches: the least budget under which it has a schedule."""
    peak = np.zeros(len(plan.states), dtype=np.int64)
    for k in range(1, len(plan.levels) - 1):
        a, b = int(plan.levels[k]), int(plan.levels[k + 1])
        t0, t1 = int(plan.ptr[a]), int(plan.ptr[b])
        reach = np.maximum(peak[plan.rest[t0:t1]], need[t0:t1])
        peak[a:b] = np.minimum.reduceat(reach, plan.ptr[a:b] - t0)
    return int(peak[-1])


def dynamic_program(
    dag: Dag,
    stage_latency: StageLatency,
    max_group_size: int = 3,
    max_num_groups: int = 8,
    merges: Sequence[int] = (),
    merge_latency: Callable[[tuple[int, ...]], float] | None = None,
    *,
    stage_latencies: BatchLatency | None = None,
    plans: PlanCache | None = None,
    memory: BlockMemory | None = None,
    memory_budget: int | None = None,
) -> DPResult:
    """Run the IOS dynamic program on ``dag``: ``cost(S) = min_E cost(S \\ E) + latency(E)``.

    Exact under ``stage_latency`` (any function of the stage, not necessarily additive). The
    latency of each distinct stage is asked for once. Among stage sequences of equal cost the
    first one found is kept, so the result is deterministic (and the one of
    :func:`ios_tvm.core.reference.reference_dynamic_program`, the direct implementation).

    ``merges`` are node sets (masks) that may also run as one *merge* stage (several operators
    become one kernel) whenever the set is an ending of the state; ``merge_latency(nodes)`` costs
    them. Merge stages come back as one group with kind ``"merge"`` in :attr:`DPResult.kinds`.

    ``stage_latencies(table)``, when given, costs all concurrent stages at once from a
    :class:`~ios_tvm.core.plan.StageTable` (one latency per row) instead of ``stage_latency``
    per stage. ``plans`` shares the enumeration of states between calls (identical blocks, a
    search run again); by default each call enumerates its own.

    ``memory`` (tensor sizes, :class:`~ios_tvm.core.memory.BlockMemory`) makes the result say
    what each stage needs (:attr:`DPResult.memory`); with ``memory_budget`` (bytes) too, the
    search keeps to schedules whose every stage needs at most that: the fastest of them, and
    among equally fast ones the one with the lowest peak (then the first found).

    Raises
    ------
    MemoryBudgetError
        No schedule fits ``memory_budget``; its ``least`` is the smallest budget one fits.
    """
    _check_limits(max_group_size, max_num_groups)
    if merges and merge_latency is None:
        raise ValueError("merges need a merge_latency function")
    plan = (plans or PlanCache()).get(dag, max_group_size, max_num_groups, merges)
    table = plan.stages
    lat = stage_costs(table, stage_latency, merge_latency, stage_latencies)
    need = None
    if memory is not None:
        need = memory.live(plan.states)[plan.rest] + memory.stage_bytes(table)[plan.stage]
    elif memory_budget is not None:
        raise ValueError("a memory budget needs the tensor sizes (memory=BlockMemory(...))")
    # without a budget, the stages are today's (memory only reported): ties stay first-found
    best, choice, _ = solve_plan(plan, lat, None if memory_budget is None else need, memory_budget)
    if memory_budget is not None and not np.isfinite(best[-1]):
        least = least_peak(plan, need)
        raise MemoryBudgetError(f"no schedule fits {memory_budget} bytes of activations (in the search's memory "
                                f"model); the least any schedule needs is {least} bytes", least)
    stages: StageList = []
    lats: list[float] = []
    kinds: list[str] = []
    needs: list[int] = []
    state = len(plan.states) - 1
    while state > 0:
        t = int(choice[state])
        k = int(plan.stage[t])
        stages.append([list(g) for g in table.groups(k)])
        kinds.append("merge" if table.merge[k] else "concurrent")
        lats.append(float(lat[k]))
        if need is not None:
            needs.append(int(need[t]))
        state = int(plan.rest[t])
    stages.reverse()
    lats.reverse()
    kinds.reverse()
    needs.reverse()
    stats = SearchStats(nodes=dag.n, states=len(plan.states), transitions=plan.transitions, stages=len(table))
    return DPResult(stages, lats, stats, kinds, needs)


def solve(
    num_nodes: int,
    edges: Sequence[tuple[int, int]],
    stage_latency: StageLatency,
    max_group_size: int = 3,
    max_num_groups: int = 8,
) -> StageList:
    """Optimal IOS schedule of a DAG under a stage latency function.

    Parameters
    ----------
    num_nodes
        Nodes are ``0..num_nodes-1``.
    edges
        ``(u, v)`` pairs: ``u`` must run before ``v``.
    stage_latency
        ``stage_latency(groups) -> float``, ``groups`` a tuple of tuples of node ids, each group in
        topological order (canonically: among ready nodes of the group the smallest id first),
        groups ordered by their smallest node id.
    max_group_size, max_num_groups
        The IOS pruning limits ``r`` (nodes per group) and ``s`` (groups per stage), both >= 1.

    Returns
    -------
    list of stages, each a list of groups, each a list of node ids, minimising the summed
    latency of the stages.
    """
    dag = Dag.from_edges(num_nodes, edges)
    return dynamic_program(dag, stage_latency, max_group_size, max_num_groups).stages


def sequential(num_nodes: int, edges: Sequence[tuple[int, int]]) -> StageList:
    """One node per stage, in topological order (smallest ready id first)."""
    dag = Dag.from_edges(num_nodes, edges)
    return [[[v]] for v in dag.topo]


def greedy(num_nodes: int, edges: Sequence[tuple[int, int]], max_num_groups: int | None = None) -> StageList:
    """The paper's greedy baseline: each stage runs every ready node, each on its own stream.

    With ``max_num_groups`` a stage takes at most that many ready nodes (smallest ids first).
    """
    if max_num_groups is not None:
        _check_limits(1, max_num_groups)
    dag = Dag.from_edges(num_nodes, edges)
    done = 0
    stages: StageList = []
    while done != dag.full:
        ready = [v for v in range(dag.n) if not done >> v & 1 and dag.pred[v] & ~done == 0]
        if max_num_groups is not None:
            ready = ready[:max_num_groups]
        stages.append([[v] for v in ready])
        for v in ready:
            done |= 1 << v
    return stages


def schedule_latency(stages: StageList, stage_latency: StageLatency) -> float:
    """Summed latency of a list of stages."""
    return float(sum(stage_latency(tuple(tuple(g) for g in stage)) for stage in stages))


def check_stages(num_nodes: int, edges: Sequence[tuple[int, int]], stages: StageList,
                 max_group_size: int | None = None, max_num_groups: int | None = None) -> None:
    """Raise ``ValueError`` unless ``stages`` is a valid schedule of the DAG.

    Valid: every node exactly once; an edge either goes to a later stage or stays inside one group
    in order; groups within the limits when given.
    """
    where: dict[int, tuple[int, int, int]] = {}
    for si, stage in enumerate(stages):
        if not stage:
            raise ValueError(f"stage {si} is empty")
        if max_num_groups is not None and len(stage) > max_num_groups:
            raise ValueError(f"stage {si} has {len(stage)} groups, more than max_num_groups={max_num_groups}")
        for gi, group in enumerate(stage):
            if not group:
                raise ValueError(f"stage {si} group {gi} is empty")
            if max_group_size is not None and len(group) > max_group_size:
                raise ValueError(f"stage {si} group {gi} has {len(group)} nodes, more than max_group_size={max_group_size}")
            for pos, v in enumerate(group):
                if not 0 <= v < num_nodes:
                    raise ValueError(f"stage {si} names node {v}, outside 0..{num_nodes - 1}")
                if v in where:
                    raise ValueError(f"node {v} appears twice (stages {where[v][0]} and {si})")
                where[v] = (si, gi, pos)
    missing = sorted(set(range(num_nodes)) - set(where))
    if missing:
        raise ValueError(f"nodes {missing[:10]}{'...' if len(missing) > 10 else ''} are in no stage")
    for u, v in edges:
        su, gu, pu = where[u]
        sv, gv, pv = where[v]
        if su < sv:
            continue
        if su == sv and gu == gv and pu < pv:
            continue
        if su == sv and gu != gv:
            raise ValueError(f"nodes {u} -> {v} depend on each other but run concurrently in stage {su} "
                             f"(groups {gu} and {gv})")
        raise ValueError(f"node {v} runs before its input {u} (stage {sv} vs {su})")



def candidate_stages(dag: Dag, max_group_size: int = 3, max_num_groups: int = 8,
                     plans: PlanCache | None = None, merges: Sequence[int] = ()) -> list[Groups]:
    """Every distinct concurrent stage :func:`dynamic_program` can ask the latency of (ordered
    by node set; merge stages, costed by ``merge_latency``, are not among them).

    For cost models that measure in bulk: enumerate first, measure, then solve (with the same
    ``plans`` and ``merges``, the search does not enumerate again).
    """
    _check_limits(max_group_size, max_num_groups)
    table = (plans or PlanCache()).get(dag, max_group_size, max_num_groups, merges).stages
    return [table.groups(k) for k in np.flatnonzero(~table.merge).tolist()]
