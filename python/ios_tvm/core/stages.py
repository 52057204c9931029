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
"""

from __future__ import annotations

from typing import Iterator

from .dag import Dag, bits, popcount


def groups(dag: Dag, state: int, max_group_size: int) -> list[int]:
    """All connected, successor-closed-in-``state`` node sets of at most ``max_group_size``
    nodes, as masks, in a deterministic order."""
    closure: dict[int, int] = {}
    for v in bits(state):
        c = (1 << v) | (dag.desc[v] & state)
        if popcount(c) <= max_group_size:
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
        size = popcount(g)
        if size == max_group_size:
            continue
        around = 0
        for v in bits(g):
            around |= dag.adj[v]
        around &= ~g
        for u in bits(around):
            c = closure.get(u)
            if c is None:
                continue
            h = g | c
            if h not in seen and popcount(h) <= max_group_size:
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
