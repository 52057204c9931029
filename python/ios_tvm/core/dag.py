"""DAGs over bit sets: nodes ``0..n-1``, sets of nodes as ``int`` masks (bit ``i`` set means node
``i`` is in the set), with the relations the IOS search needs precomputed. Pure Python, no TVM."""

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
