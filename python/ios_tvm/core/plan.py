"""The structure of a DAG's dynamic program, built once and reused: every state, the endings of
each in the order the search tries them, and the distinct candidate stages, as arrays. Pure
(NumPy; no TVM).

What the search of :mod:`ios_tvm.core.search` computes depends on the latencies; what it looks at
does not. A :class:`Plan` is that second part, for one DAG and one ``(r, s, merges)``:

* the *states*: every predecessor-closed node set (each is reached: removing one sink at a time
  from the full set is a sequence of endings), sorted by size, so that ``S \\ E`` of every
  transition comes before ``S``;
* per state, its endings as :func:`ios_tvm.core.stages.endings` yields them, then the merge
  sets that end it in the order given: ties between equally fast endings go to the first one, as
  they always did, so the search returns the very stages it returned before plans existed;
* the *stages*: each distinct ending once, in a :class:`StageTable` (its groups as node slots) that
  a cost model can cost in one call (:meth:`ios_tvm.cost.CostModel.stage_latencies`).

Endings are enumerated from bit masks (:class:`~ios_tvm.core.stages.Walker`): the groups of a
state, for each the mask of later groups it may run beside (disjoint and not adjacent), and a
depth-first walk over those masks, once per distinct such *pattern* (:class:`~ios_tvm.core.stages.
Patterns`; NASNet's 17,381 states share 1,356); each state's endings then come out of its pattern
and its groups in NumPy. Identical blocks (the repeated cells of NASNet and Inception) share one
plan through a :class:`PlanCache`. Masks are ``int64`` up to 62 nodes, Python integers
(``object`` arrays) beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .dag import Dag
from .stages import Patterns, Walker

Groups = tuple[tuple[int, ...], ...]
"""A stage as the cost function sees it: groups of node ids, each in topological order."""

#: most nodes whose masks fit ``int64`` arrays (bit 63 is the sign; merges are stored as ``~mask``)
MAX_INT64_NODES = 62


def mask_dtype(n: int) -> type | np.dtype:
    """``np.int64`` for masks of ``n <= 62`` nodes, ``object`` (Python integers) beyond."""
    return np.int64 if n <= MAX_INT64_NODES else object


@dataclass(frozen=True, eq=False)
class StageTable:
    """Candidate stages as arrays: row ``k`` is one stage.

    Attributes
    ----------
    masks
        The stage's node set (a mask; ``object`` dtype above 62 nodes).
    merge
        Whether it is a merge stage (its nodes become one kernel) rather than concurrent groups.
    nodes
        ``[K, width]`` node ids in stage order: the groups by smallest node id, each group in
        topological order (:meth:`Dag.ordered`); ``-1`` fills the rest of the row. A merge
        stage's nodes are one group in increasing id order.
    group
        ``[K, width]``: the position of each slot's group within the stage (``-1``: empty slot).
    num_groups
        ``[K]`` groups per stage.
    """

    masks: np.ndarray
    merge: np.ndarray
    nodes: np.ndarray
    group: np.ndarray
    num_groups: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    def groups(self, k: int) -> Groups:
        """Stage ``k`` as the search's cost functions see it: a tuple of groups of node ids."""
        out: list[list[int]] = [[] for _ in range(int(self.num_groups[k]))]
        for v, g in zip(self.nodes[k].tolist(), self.group[k].tolist()):
            if v >= 0:
                out[g].append(v)
        return tuple(tuple(g) for g in out)

    def take(self, rows: np.ndarray) -> "StageTable":
        """The stages ``rows`` (indices or a boolean mask), in that order."""
        return StageTable(self.masks[rows], self.merge[rows], self.nodes[rows], self.group[rows],
                          self.num_groups[rows])

    def relabel(self, ids: Sequence[int]) -> "StageTable":
        """The same stages with node ``i`` renamed ``ids[i]`` (e.g. a block's local ids to the
        graph's); ``masks`` keep the old names."""
        lookup = np.asarray(list(ids) + [-1], dtype=np.int64)  # -1 (empty) indexes the last entry
        return StageTable(self.masks, self.merge, lookup[self.nodes], self.group, self.num_groups)


@dataclass(frozen=True, eq=False)
class Plan:
    """What the dynamic program of one DAG looks at (see the module docstring).

    Attributes
    ----------
    n, max_group_size, max_num_groups, merges
        The DAG's size and the search settings the plan is for.
    states
        ``[N]`` state masks, by size: ``states[levels[k]:levels[k + 1]]`` have ``k`` nodes; the
        empty state is first, the full set last.
    levels
        ``[n + 2]`` offsets into ``states``.
    ptr
        ``[N + 1]``: the transitions of state ``i`` are ``ptr[i]:ptr[i + 1]``, in the order the
        search tries them.
    rest
        ``[T]`` index (into ``states``) of the state a transition leads to, ``S \\ E``.
    stage
        ``[T]`` row of the transition's ending in ``stages``.
    stages
        The distinct endings (:class:`StageTable`), ordered by mask, merges first.
    """

    n: int
    max_group_size: int
    max_num_groups: int
    merges: tuple[int, ...]
    states: np.ndarray
    levels: np.ndarray
    ptr: np.ndarray
    rest: np.ndarray
    stage: np.ndarray
    stages: StageTable

    @property
    def transitions(self) -> int:
        """Number of (state, ending) pairs."""
        return len(self.rest)


def ideals(dag: Dag) -> list[list[int]]:
    """The predecessor-closed node sets of ``dag``, by size: entry ``k`` lists those of ``k`` nodes
    in increasing mask order."""
    desc = dag.desc
    current = {dag.full}
    out = [sorted(current)]
    for _ in range(dag.n):
        smaller: set[int] = set()
        for state in current:
            x = state
            while x:
                low = x & -x
                x ^= low
                if desc[low.bit_length() - 1] & state == 0:  # a sink of the state
                    smaller.add(state ^ low)
        current = smaller
        out.append(sorted(current))
    out.reverse()
    return out


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _index(values: np.ndarray, n: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct, position)``: the distinct ``values`` in increasing order, and where each of
    ``keys`` (all among ``values``) is in it; a dense lookup for masks of up to 20 nodes."""
    if n <= 20:
        present = np.zeros(1 << n, dtype=bool)
        present[values] = True
        distinct = np.flatnonzero(present)
        rank = np.cumsum(present, dtype=np.int64) - 1
        return distinct.astype(values.dtype), rank[keys]
    distinct = np.unique(values)
    return distinct, np.searchsorted(distinct, keys)


def _positions(values: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """Where each of ``keys`` is in ``values`` (distinct; every key among them)."""
    if n <= 20:
        lookup = np.full(1 << n, -1, dtype=np.int64)
        lookup[values] = np.arange(len(values))
        return lookup[keys]
    order = np.argsort(values, kind="stable")
    return order[np.searchsorted(values[order], keys)]


def _table(dag: Dag, group_masks: np.ndarray, masks: np.ndarray, merge_masks: np.ndarray,
           r: int) -> StageTable:
    """The :class:`StageTable` of concurrent stages ``masks`` (their groups: ``[K, s]`` masks,
    ``0`` for none, in any order) followed by merge stages ``merge_masks``."""
    k = len(group_masks)
    low = group_masks & -group_masks
    order = np.argsort(np.where(group_masks == 0, 1 << dag.n, low), axis=1, kind="stable")  # by smallest node
    group_masks = np.take_along_axis(group_masks, order, axis=1)
    universe, where = _index(group_masks.ravel(), dag.n, group_masks.ravel())
    where = where.reshape(group_masks.shape)
    sizes_u = np.array([int(g).bit_count() for g in universe], dtype=np.int64)
    slots_u = np.full((len(universe), max(r, 1)), -1, dtype=np.int32)
    for i, g in enumerate(universe.tolist()):
        members = dag.ordered(g)
        slots_u[i, :len(members)] = members
    sizes = sizes_u[where]  # 0 for no group
    start = np.cumsum(sizes, axis=1) - sizes
    merge_rows = [[v for v in range(dag.n) if m >> v & 1] for m in merge_masks.tolist()]
    width = max([int(sizes.sum(axis=1).max(initial=0)), 1] + [len(m) for m in merge_rows])
    total = k + len(merge_rows)
    nodes = np.full((total, width), -1, dtype=np.int32)
    group = np.full((total, width), -1, dtype=np.int32)
    rows = np.broadcast_to(np.arange(k)[:, None], group_masks.shape)
    position = np.broadcast_to(np.arange(group_masks.shape[1]), group_masks.shape)
    for i in range(r):
        sel = i < sizes
        nodes[rows[sel], start[sel] + i] = slots_u[where[sel], i]
        group[rows[sel], start[sel] + i] = position[sel]
    for row, members in enumerate(merge_rows, start=k):
        nodes[row, :len(members)] = members
        group[row, :len(members)] = 0
    num_groups = np.concatenate([(sizes > 0).sum(axis=1), np.ones(len(merge_rows), dtype=np.int64)])
    return StageTable(np.concatenate([masks, merge_masks]), np.arange(total) >= k, nodes, group,
                      num_groups.astype(np.int32))


def _prefixes(at: np.ndarray, base: np.ndarray, parent: np.ndarray, last: np.ndarray,
              groups: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For endings at pattern entries ``at`` of states whose groups start at ``base`` in
    ``groups``: ``(rows, group masks)`` per level, the last group added first, then the last of
    its prefix, and so on (``parent`` holds entries, ``-1`` at the root)."""
    rows = np.arange(len(at))
    while len(rows):
        yield rows, groups[base + last[at]]
        at = parent[at]
        keep = at >= 0
        rows, at, base = rows[keep], at[keep], base[keep]


def _merge_info(dag: Dag, merges: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(mask, descendants)`` per merge set: it ends a state when it lies in it and the state
    holds none of its descendants."""
    out = []
    for m in merges:
        d = 0
        for v in range(dag.n):
            if m >> v & 1:
                d |= dag.desc[v]
        out.append((m, d))
    return out


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(owner, local)`` of ``sum(counts)`` items in segments of ``counts``."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.arange(len(owner)) - _exclusive_cumsum(counts)[owner]


def build_plan(dag: Dag, max_group_size: int = 3, max_num_groups: int = 8, merges: Sequence[int] = (),
               patterns: Patterns | None = None) -> Plan:
    """The :class:`Plan` of ``dag`` under the limits ``r`` / ``s``, with merge sets ``merges``
    (masks; a merge set ends a state when it lies in it and nothing of the state descends from
    it). ``patterns`` may be shared between calls."""
    patterns = Patterns() if patterns is None else patterns
    merges = tuple(dict.fromkeys(merges))
    merge_info = _merge_info(dag, merges)
    dtype = mask_dtype(dag.n)
    walker = Walker(dag, max_group_size, max_num_groups)
    by_size = ideals(dag)
    states: list[int] = [s for level in by_size for s in level]
    levels = _exclusive_cumsum(np.array([len(level) for level in by_size], dtype=np.int64))
    # 1. per state (Python): its groups, and the pattern of its endings (enumerated once each)
    known: dict[tuple[int, ...], int] = {}
    entries: list[tuple[np.ndarray, np.ndarray]] = []  # (parent, last) per pattern of this plan
    state_pattern = [-1]
    groups_flat: list[int] = []
    group_count = [0]
    merge_ends: list[list[int]] = [[]]
    for state in states[1:]:
        closed, later = walker.pattern(state)
        pid = known.get(later)
        if pid is None:
            pid = known[later] = len(entries)
            entries.append(patterns.get(later, walker))
        state_pattern.append(pid)
        group_count.append(len(closed))
        groups_flat += closed
        merge_ends.append([m for m, d in merge_info if m & state == m and d & state == 0])
    # 2. every concurrent transition's ending: its state's groups picked by its pattern entry
    sizes = np.array([0] + [len(last) for _, last in entries], dtype=np.int64)  # pattern -1: none
    start = _exclusive_cumsum(sizes)[:-1] - sizes[0]
    parent = np.concatenate([np.zeros(0, np.int64)] + [np.where(p >= 0, p + s, -1) for (p, _), s
                                                       in zip(entries, start[1:])])
    last = np.concatenate([np.zeros(0, np.int64)] + [lst for _, lst in entries])
    pattern_of = np.array(state_pattern, dtype=np.int64) + 1
    conc_count = sizes[pattern_of]
    owner, local = _segments(conc_count)
    at = start[pattern_of[owner]] + local
    base = _exclusive_cumsum(np.array(group_count, dtype=np.int64))[owner]
    groups_arr = np.array(groups_flat, dtype=dtype)
    ends = np.zeros(len(at), dtype=dtype)
    for rows, masks in _prefixes(at, base, parent, last, groups_arr):
        ends[rows] |= masks
    # 3. transitions in order (a state's concurrent endings, then its merges), stages by mask
    merge_count = np.array([len(e) for e in merge_ends], dtype=np.int64)
    ptr = _exclusive_cumsum(conc_count + merge_count)
    merge_owner, merge_local = _segments(merge_count)
    merge_arr = np.array([m for e in merge_ends for m in e] or [0], dtype=dtype)[:len(merge_owner)]
    conc_masks, conc_stage = _index(ends, dag.n, ends)
    merge_masks = np.unique(merge_arr)
    stage = np.empty(int(ptr[-1]), dtype=np.int64)
    stage[ptr[owner] + local] = conc_stage
    stage[ptr[merge_owner] + conc_count[merge_owner] + merge_local] = (
        len(conc_masks) + np.searchsorted(merge_masks, merge_arr))
    state_arr = np.array(states, dtype=dtype)
    rest_masks = np.empty(len(stage), dtype=dtype)
    rest_masks[ptr[owner] + local] = state_arr[owner] ^ ends
    rest_masks[ptr[merge_owner] + conc_count[merge_owner] + merge_local] = state_arr[merge_owner] ^ merge_arr
    rest = _positions(state_arr, dag.n, rest_masks)
    # 4. the stage table: each distinct ending's groups, read off one transition that ends so
    rep = np.empty(len(conc_masks), dtype=np.int64)
    rep[conc_stage] = np.arange(len(conc_stage))
    group_masks = np.zeros((len(rep), max(1, min(max_num_groups, dag.n))), dtype=dtype)
    for column, (rows, masks) in enumerate(_prefixes(at[rep], base[rep], parent, last, groups_arr)):
        group_masks[rows, column] = masks
    table = _table(dag, group_masks, conc_masks, merge_masks, max_group_size)
    return Plan(dag.n, max_group_size, max_num_groups, merges, state_arr, levels, ptr, rest, stage, table)


class PlanCache:
    """Plans by DAG and settings, so that identical blocks (and a search run again on the same
    graph, e.g. under another memory budget) enumerate their states once. Bounded: beyond
    ``max_transitions`` in all, the oldest plans are dropped."""

    def __init__(self, max_transitions: int = 20_000_000) -> None:
        self.max_transitions = max_transitions
        self._plans: dict[tuple, Plan] = {}
        self.patterns = Patterns()
        self.hits = 0
        self.misses = 0

    def get(self, dag: Dag, max_group_size: int, max_num_groups: int, merges: Sequence[int] = ()) -> Plan:
        """The plan of ``dag`` (built on first use)."""
        key = (dag.n, dag.pred, max_group_size, max_num_groups, tuple(dict.fromkeys(merges)))
        plan = self._plans.pop(key, None)
        if plan is None:
            self.misses += 1
            plan = build_plan(dag, max_group_size, max_num_groups, merges, self.patterns)
        else:
            self.hits += 1
        self._plans[key] = plan  # most recent last
        total = sum(p.transitions for p in self._plans.values())
        while total > self.max_transitions and len(self._plans) > 1:
            oldest = next(iter(self._plans))
            total -= self._plans.pop(oldest).transitions
        return plan
