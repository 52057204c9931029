"""Candidate stages of the IOS dynamic program: the endings of a state, over bit sets
(:class:`ios_tvm.core.dag.Dag`). Pure Python, no TVM.

Definitions (the IOS dynamic program):

* a *state* ``S`` is a predecessor-closed node set (what has run after some prefix of stages);
* an *ending* ``E`` of ``S`` is a non-empty subset such that ``S \\ E`` is still
  predecessor-closed, i.e. no node of ``S \\ E`` depends on a node of ``E``;
* the *groups* of ``E`` are its weakly connected components (under the edges among nodes of
  ``E``); each group runs on one stream in topological order, the groups run concurrently.

With at most ``r`` nodes per group and at most ``s`` groups per stage.

How endings are enumerated: a group ``G`` of an ending is connected and *successor-closed in S*
(every successor in ``S`` of a node of ``G`` is in ``G``: it is in ``E`` because ``E`` is an
ending, and in ``G`` because the edge connects them). Conversely any set of ``<= s`` pairwise
disjoint, pairwise non-adjacent such groups is an ending whose components are exactly those
groups. A successor-closed connected set is a union of *closures* ``c(v) = {v} | (desc(v) & S)``
and can be grown one closure at a time from any of its closures, each step adding a node adjacent
to what is there; that is how :func:`groups` builds them, only from nodes whose closure has at
most ``r`` nodes.

:func:`groups` and :func:`endings` are the definitions, written plainly; :class:`Walker` yields the
same endings in the same order from bit masks, fast, for :mod:`ios_tvm.core.plan`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from .dag import Dag, bits


def groups(dag: Dag, state: int, max_group_size: int) -> list[int]:
    """All connected, successor-closed-in-``state`` node sets of at most ``max_group_size``
    nodes, as masks, in a deterministic order."""

    def neighbours(g: int) -> int:
        around = 0
        for v in bits(g):
            around |= dag.adj[v]
        return around & ~g

    return closed_groups(dag.desc, state, max_group_size, bits, neighbours)


def closed_groups(desc: list[int], state: int, max_group_size: int, bits_of: Callable[[int], Iterable[int]],
                  neighbours: Callable[[int], int]) -> list[int]:
    """:func:`groups` given how to list a mask's nodes and a group's neighbours outside it (the
    search's :class:`Walker` remembers both)."""
    closure: dict[int, int] = {}
    for v in bits_of(state):
        c = (1 << v) | (desc[v] & state)
        if c.bit_count() <= max_group_size:
            closure[v] = c
    seen: set[int] = set()
    order: list[int] = []
    stack = sorted(set(closure.values()), reverse=True)
    while stack:
        g = stack.pop()
        if g in seen:
            continue
        seen.add(g)
        order.append(g)
        if g.bit_count() == max_group_size:
            continue
        for u in bits_of(neighbours(g)):
            c = closure.get(u)
            if c is None:
                continue
            h = g | c
            if h not in seen and h.bit_count() <= max_group_size:
                stack.append(h)
    return order


def endings(dag: Dag, state: int, max_group_size: int, max_num_groups: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """Yield every ending of ``state`` within the limits as ``(mask, group_masks)``.

    Each ending is yielded exactly once; ``group_masks`` are its groups (its weakly connected
    components) ordered by smallest node id.
    """
    closed = groups(dag, state, max_group_size)
    blocked = []
    for g in closed:
        b = g
        for v in bits(g):
            b |= dag.adj[v]
        blocked.append(b)
    m = len(closed)
    # Depth-first over index-increasing combinations of compatible groups.
    stack: list[tuple[int, int, int, tuple[int, ...]]] = [(0, 0, 0, ())]
    while stack:
        start, union, block, chosen = stack.pop()
        for i in range(m - 1, start - 1, -1):
            g = closed[i]
            if g & block:
                continue
            new_union = union | g
            new_chosen = chosen + (g,)
            yield new_union, new_chosen
            if len(new_chosen) < max_num_groups:
                stack.append((i + 1, new_union, block | blocked[i], new_chosen))


class Walker:
    """The endings of the states of one DAG, enumerated fast, in :func:`endings`' order (the
    search's order, which decides its ties): per state its groups (:meth:`state_groups`) and the
    mask of later groups each may share a stage with (:meth:`pattern`); the endings depend on the
    state only through that *pattern*, and :meth:`combinations` lists them once per pattern, in
    index space. Caches are shared across the DAG's states."""

    def __init__(self, dag: Dag, max_group_size: int, max_num_groups: int) -> None:
        self.dag = dag
        self.r = max_group_size
        self.s = max_num_groups
        self._bits: dict[int, tuple[int, ...]] = {}
        self._around: dict[int, int] = {}  # group -> its neighbours outside it
        self._reach: dict[int, tuple[int, ...]] = {}  # group -> nodes of it and its neighbours
        self._down: dict[int, tuple[int, ...]] = {}  # candidate mask -> its indices, decreasing

    def bits(self, mask: int) -> tuple[int, ...]:
        out = self._bits.get(mask)
        if out is None:
            found = []
            x = mask
            while x:
                low = x & -x
                found.append(low.bit_length() - 1)
                x ^= low
            out = self._bits[mask] = tuple(found)
        return out

    def _neighbours(self, g: int) -> int:
        around = self._around.get(g)
        if around is None:
            adj = self.dag.adj
            around = 0
            for v in self.bits(g):
                around |= adj[v]
            around = self._around[g] = around & ~g
        return around

    def state_groups(self, state: int) -> list[int]:
        """:func:`ios_tvm.core.stages.groups` of ``state``: same sets, same order."""
        return closed_groups(self.dag.desc, state, self.r, self.bits, self._neighbours)

    def pattern(self, state: int) -> tuple[list[int], tuple[int, ...]]:
        """``(groups, later)`` of ``state``: its groups (:meth:`state_groups`) and, per group
        ``i``, the mask of the groups ``j > i`` that may share a stage with it (disjoint, not
        adjacent). The endings depend on the state only through ``later``."""
        closed = self.state_groups(state)
        m = len(closed)
        member = [0] * self.dag.n  # node -> mask of the groups (by index) holding it
        for i, g in enumerate(closed):
            bit = 1 << i
            for v in self.bits(g):
                member[v] |= bit
        full = (1 << m) - 1
        later = []
        for i, g in enumerate(closed):
            reach = self._reach.get(g)
            if reach is None:
                reach = self._reach[g] = self.bits(g | self._neighbours(g))
            conflict = 0
            for v in reach:
                conflict |= member[v]
            later.append(full & ~conflict & ~((2 << i) - 1))
        return closed, tuple(later)

    def combinations(self, later: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The endings of a state whose groups relate as ``later`` says, in the order of
        :func:`ios_tvm.core.stages.endings`, as ``(parent, last)``: ending ``k`` is ending
        ``parent[k]`` (``-1``: none) plus group ``last[k]``.

        Depth first: a prefix yields its extensions by decreasing group index, then extends
        them, smallest index first."""
        parent: list[int] = []
        last: list[int] = []
        down = self._down
        s = self.s
        stack = [((1 << len(later)) - 1, -1, 1)]
        while stack:
            cand, p, depth = stack.pop()
            js = down.get(cand)
            if js is None:
                js = down[cand] = self.bits(cand)[::-1]
            base = len(last)
            parent.extend([p] * len(js))
            last.extend(js)
            if depth < s:
                for i, j in enumerate(js):
                    c = cand & later[j]
                    if c:
                        stack.append((c, base + i, depth + 1))
        return parent, last


class Patterns:
    """Endings in index space (:meth:`Walker.combinations`) by group relation ``later`` and
    ``s``: states of any DAG whose groups relate alike share them."""

    def __init__(self) -> None:
        self._known: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, later: tuple[int, ...], walker: "Walker") -> tuple[np.ndarray, np.ndarray]:
        """``(parent, last)`` of the pattern, enumerated on first use."""
        key = (later, walker.s)
        got = self._known.get(key)
        if got is None:
            parent, last = walker.combinations(later)
            got = self._known[key] = (np.array(parent, dtype=np.int64), np.array(last, dtype=np.int64))
        return got
