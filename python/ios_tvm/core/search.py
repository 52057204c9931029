"""The IOS dynamic program and the two baseline schedules of the paper. Pure: no TVM, no I/O.

A schedule here is a list of stages; a stage is a list of groups; a group is a list of node ids in
topological order. Groups of a stage run concurrently, the nodes of a group run one after another.

>>> from ios_tvm.core.search import solve
>>> longest_group = lambda groups: float(max(len(g) for g in groups))
>>> solve(3, [(0, 2), (1, 2)], longest_group)   # two sources feed one sink
[[[0], [1]], [[2]]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .dag import Dag, bits
from .stages import endings

Groups = tuple[tuple[int, ...], ...]
"""A stage as the cost function sees it: groups of node ids, each in topological order."""

StageLatency = Callable[[Groups], float]
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

    @property
    def latency(self) -> float:
        return float(sum(self.latencies))


def _check_limits(max_group_size: int, max_num_groups: int) -> None:
    for name, value in (("max_group_size (r)", max_group_size), ("max_num_groups (s)", max_num_groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _to_groups(dag: Dag, group_masks: Sequence[int]) -> Groups:
    ordered = sorted(group_masks, key=lambda g: (g & -g))
    return tuple(dag.ordered(g) for g in ordered)


def dynamic_program(
    dag: Dag,
    stage_latency: StageLatency,
    max_group_size: int = 3,
    max_num_groups: int = 8,
    merges: Sequence[int] = (),
    merge_latency: Callable[[tuple[int, ...]], float] | None = None,
) -> DPResult:
    """Run the IOS dynamic program on ``dag``: ``cost(S) = min_E cost(S \\ E) + latency(E)``.

    Exact under ``stage_latency`` (any function of the stage, not necessarily additive). The
    latency of each distinct stage is asked for once. Among stage sequences of equal cost the
    first one found is kept, so the result is deterministic.

    ``merges`` are node sets (masks) that may also run as one *merge* stage (several operators
    become one kernel) whenever the set is an ending of the state; ``merge_latency(nodes)`` costs
    them. Merge stages come back as one group with kind ``"merge"`` in :attr:`DPResult.kinds`.
    """
    _check_limits(max_group_size, max_num_groups)
    if merges and merge_latency is None:
        raise ValueError("merges need a merge_latency function")
    # a merge set is an ending of S when it lies in S and no node of S descends from it
    merge_info = []
    for m in dict.fromkeys(merges):
        d = 0
        for v in bits(m):
            d |= dag.desc[v]
        merge_info.append((m, d))
    # latency per ending: key e for concurrent stages, ~e (negative) for merge stages
    latency_of: dict[int, float] = {}
    best_cost: dict[int, float] = {0: 0.0}
    best_end: dict[int, int] = {}
    transitions = 0

    def check(lat: float, what: Any) -> float:
        if not lat >= 0.0 or math.isinf(lat):  # also rejects NaN
            raise ValueError(f"stage latency {lat!r} for {what}; latencies must be finite and >= 0")
        return lat

    # Iterative post-order over states (a recursion depth of n could exceed Python's limit).
    full = dag.full
    pending: list[tuple[int, list[tuple[int, Any]] | None]] = [(full, None)]
    while pending:
        state, ends = pending.pop()
        if state in best_cost:
            continue
        if ends is None:
            ends = list(endings(dag, state, max_group_size, max_num_groups))
            ends += [(~m, None) for m, d in merge_info if m & state == m and d & state == 0]
            missing = [(state & ~(e if e >= 0 else ~e), None) for e, _ in ends
                       if (state & ~(e if e >= 0 else ~e)) not in best_cost]
            if missing:
                pending.append((state, ends))
                pending.extend(missing)
                continue
        best = math.inf
        arg = 0
        for e, groups in ends:
            lat = latency_of.get(e)
            if lat is None:
                if e >= 0:
                    stage = _to_groups(dag, groups)
                    lat = check(float(stage_latency(stage)), stage)
                else:
                    nodes = tuple(bits(~e))
                    lat = check(float(merge_latency(nodes)), ("merge", nodes))  # type: ignore[misc]
                latency_of[e] = lat
            c = best_cost[state & ~(e if e >= 0 else ~e)] + lat
            if c < best:
                best, arg = c, e
        transitions += len(ends)
        best_cost[state] = best
        best_end[state] = arg

    stages: StageList = []
    lats: list[float] = []
    kinds: list[str] = []
    state = full
    while state:
        e = best_end[state]
        if e >= 0:
            stages.append([list(g) for g in _to_groups(dag, dag.components(e))])
            kinds.append("concurrent")
            state &= ~e
        else:
            stages.append([list(bits(~e))])
            kinds.append("merge")
            state &= e
        lats.append(latency_of[e])
    stages.reverse()
    lats.reverse()
    kinds.reverse()
    stats = SearchStats(nodes=dag.n, states=len(best_cost), transitions=transitions, stages=len(latency_of))
    return DPResult(stages, lats, stats, kinds)


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



def candidate_stages(dag: Dag, max_group_size: int = 3, max_num_groups: int = 8) -> list[Groups]:
    """Every distinct stage :func:`dynamic_program` can ask the latency of, in discovery order.

    For cost models that measure in bulk: enumerate first, measure, then solve.
    """
    _check_limits(max_group_size, max_num_groups)
    seen_states = {dag.full}
    todo = [dag.full]
    stages: dict[int, Groups] = {}
    while todo:
        state = todo.pop()
        for e, groups in endings(dag, state, max_group_size, max_num_groups):
            if e not in stages:
                stages[e] = _to_groups(dag, groups)
            rest = state & ~e
            if rest and rest not in seen_states:
                seen_states.add(rest)
                todo.append(rest)
    return list(stages.values())
