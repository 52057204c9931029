"""Today's dynamic program, kept as the reference the fast one (:mod:`ios_tvm.core.search`) is
checked against: the same definitions, written the direct way (endings enumerated per state by
:func:`ios_tvm.core.stages.endings`, a dictionary per state and per stage). Pure Python.

``tests/test_search_plan.py`` and ``benchmarks/search_cost.py --reference`` compare the two: the
same stages, the same latencies, the same statistics.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .dag import Dag, bits
from .search import DPResult, Groups, SearchStats, StageLatency, StageList, _check_limits
from .stages import endings


def _to_groups(dag: Dag, group_masks: Sequence[int]) -> Groups:
    ordered = sorted(group_masks, key=lambda g: (g & -g))
    return tuple(dag.ordered(g) for g in ordered)


def reference_dynamic_program(
    dag: Dag,
    stage_latency: StageLatency,
    max_group_size: int = 3,
    max_num_groups: int = 8,
    merges: Sequence[int] = (),
    merge_latency: Callable[[tuple[int, ...]], float] | None = None,
) -> DPResult:
    """The IOS dynamic program as it was written first (see the module docstring); same
    arguments and result as :func:`ios_tvm.core.search.dynamic_program`.

    Run the IOS dynamic program on ``dag``: ``cost(S) = min_E cost(S \\ E) + latency(E)``.

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
