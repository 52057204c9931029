"""Candidate stages of the IOS dynamic program, over bit sets.

Pure Python, no TVM: a DAG is given by node count and edges; sets of nodes are ``int`` bit masks
(bit ``i`` set means node ``i`` is in the set).

Definitions (DESIGN.md, "The dynamic program"):

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
to what is there; that is how :meth:`Dag.groups` builds them, only from nodes whose closure has at
most ``r`` nodes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator, Sequence


def bits(mask: int) -> Iterator[int]:
    """Yield the indices of the set bits of ``mask`` in increasing order."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def popcount(mask: int) -> int:
    """Number of set bits."""
    return bin(mask).count("1")


@dataclass(frozen=True)
class Dag:
    """A DAG over nodes ``0..n-1`` with precomputed bit-mask relations.

    Build it with :meth:`from_edges`. Node ids need not be in topological order.
    """

    n: int
    pred: tuple[int, ...]
    succ: tuple[int, ...]
    adj: tuple[int, ...]
    desc: tuple[int, ...]
    anc: tuple[int, ...]
    topo: tuple[int, ...]

    @staticmethod
    def from_edges(num_nodes: int, edges: Sequence[tuple[int, int]]) -> "Dag":
        """Check the input and precompute predecessor/successor/descendant masks.

        Raises
        ------
        ValueError
            For a negative node count, an edge naming a node outside ``0..n-1``, a self loop or
            a cycle.
        """
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        pred = [0] * num_nodes
        succ = [0] * num_nodes
        for u, v in edges:
            if not (0 <= u < num_nodes and 0 <= v < num_nodes):
                raise ValueError(f"edge ({u}, {v}) names a node outside 0..{num_nodes - 1}")
            if u == v:
                raise ValueError(f"edge ({u}, {v}) is a self loop")
            pred[v] |= 1 << u
            succ[u] |= 1 << v
        # Kahn's algorithm, smallest ready id first (deterministic).
        indeg = [popcount(p) for p in pred]
        ready = [v for v in range(num_nodes) if indeg[v] == 0]
        topo: list[int] = []
        heapq.heapify(ready)
        while ready:
            v = heapq.heappop(ready)
            topo.append(v)
            for w in bits(succ[v]):
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(ready, w)
        if len(topo) != num_nodes:
            raise ValueError("the edges contain a cycle")
        desc = [0] * num_nodes
        for v in reversed(topo):
            d = succ[v]
            for w in bits(succ[v]):
                d |= desc[w]
            desc[v] = d
        anc = [0] * num_nodes
        for v in topo:
            a = pred[v]
            for w in bits(pred[v]):
                a |= anc[w]
            anc[v] = a
        adj = [p | s for p, s in zip(pred, succ)]
        return Dag(num_nodes, tuple(pred), tuple(succ), tuple(adj), tuple(desc), tuple(anc), tuple(topo))

    @property
    def full(self) -> int:
        """Mask of all nodes."""
        return (1 << self.n) - 1

    def is_closed(self, state: int) -> bool:
        """Whether ``state`` is predecessor-closed."""
        return all(self.pred[v] & ~state == 0 for v in bits(state))

    def components(self, mask: int) -> list[int]:
        """Weakly connected components of the subgraph induced by ``mask``, as masks, ordered by
        their smallest node id."""
        comps = []
        rest = mask
        while rest:
            low = rest & -rest
            comp = low
            frontier = low
            while frontier:
                grow = 0
                for v in bits(frontier):
                    grow |= self.adj[v]
                grow &= rest & ~comp
                comp |= grow
                frontier = grow
            comps.append(comp)
            rest &= ~comp
        return comps

    def ordered(self, mask: int) -> tuple[int, ...]:
        """Nodes of ``mask`` in topological order of the induced subgraph, smallest ready id
        first (a canonical order: it depends only on the nodes and the edges among them)."""
        out: list[int] = []
        rest = mask
        while rest:
            for v in bits(rest):
                if self.pred[v] & rest == 0:
                    out.append(v)
                    rest &= ~(1 << v)
                    break
        return tuple(out)

    def groups(self, state: int, max_group_size: int) -> list[int]:
        """All connected, successor-closed-in-``state`` node sets of at most ``max_group_size``
        nodes, as masks, in a deterministic order."""
        closure: dict[int, int] = {}
        for v in bits(state):
            c = (1 << v) | (self.desc[v] & state)
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
                around |= self.adj[v]
            around &= ~g
            for u in bits(around):
                c = closure.get(u)
                if c is None:
                    continue
                h = g | c
                if h not in seen and popcount(h) <= max_group_size:
                    stack.append(h)
        return order

    def endings(self, state: int, max_group_size: int, max_num_groups: int) -> Iterator[tuple[int, tuple[int, ...]]]:
        """Yield every ending of ``state`` within the limits as ``(mask, group_masks)``.

        Each ending is yielded exactly once; ``group_masks`` are its groups (its weakly connected
        components) ordered by smallest node id.
        """
        groups = self.groups(state, max_group_size)
        blocked = []
        for g in groups:
            b = g
            for v in bits(g):
                b |= self.adj[v]
            blocked.append(b)
        m = len(groups)
        # Depth-first over index-increasing combinations of compatible groups.
        stack: list[tuple[int, int, int, tuple[int, ...]]] = [(0, 0, 0, ())]
        while stack:
            start, union, block, chosen = stack.pop()
            for i in range(m - 1, start - 1, -1):
                g = groups[i]
                if g & block:
                    continue
                new_union = union | g
                new_chosen = chosen + (g,)
                yield new_union, new_chosen
                if len(new_chosen) < max_num_groups:
                    stack.append((i + 1, new_union, block | blocked[i], new_chosen))
