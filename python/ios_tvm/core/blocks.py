"""Partition a DAG into blocks the dynamic program can solve one at a time. Pure Python.

A *cut point* is a node that every path from a source to a sink crosses: every other node is
its ancestor or its descendant. Nothing can run concurrently with a cut point, so the schedule of
the whole graph is the concatenation of the schedules of the pieces between cut points; each
cut point closes the block before it (so it can still share a group with its predecessors).

Blocks larger than ``max_block_size`` are split by depth (longest path from the block's
sources): whole levels are packed into pieces while they fit, and a level wider than the limit
is cut by node id. Every piece is predecessor-closed with respect to the ones after it, so
dependencies are never broken; only stages that would straddle a split are lost (the DP stays
exact within each piece).

Node ids must be in topological order (``extract_graph`` numbers nodes by binding order).
"""

from __future__ import annotations

from typing import Sequence

from .dag import Dag


def cut_points(num_nodes: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Nodes comparable with every other node, in increasing id order."""
    dag = Dag.from_edges(num_nodes, edges)
    full = dag.full
    return [v for v in range(num_nodes) if (dag.anc[v] | dag.desc[v] | (1 << v)) == full]


def _check_topological(num_nodes: int, edges: Sequence[tuple[int, int]]) -> None:
    for u, v in edges:
        if not 0 <= u < v < num_nodes:
            raise ValueError(f"edge ({u}, {v}): node ids must be a topological order (u < v) within 0..{num_nodes - 1}")


def _split(nodes: list[int], preds: dict[int, list[int]], max_block_size: int) -> list[list[int]]:
    inside = set(nodes)
    depth: dict[int, int] = {}
    for v in nodes:  # ids are topological
        depth[v] = 1 + max((depth[u] for u in preds[v] if u in inside), default=-1)
    levels: dict[int, list[int]] = {}
    for v in nodes:
        levels.setdefault(depth[v], []).append(v)
    pieces: list[list[int]] = []
    current: list[int] = []
    for d in sorted(levels):
        level = levels[d]
        if len(current) + len(level) <= max_block_size:
            current.extend(level)
            continue
        if current:
            pieces.append(current)
            current = []
        while len(level) > max_block_size:
            pieces.append(level[:max_block_size])
            level = level[max_block_size:]
        current = list(level)
    if current:
        pieces.append(current)
    return [sorted(p) for p in pieces]


def partition(num_nodes: int, edges: Sequence[tuple[int, int]], max_block_size: int | None = None) -> list[list[int]]:
    """Blocks of node ids, in execution order.

    Parameters
    ----------
    num_nodes, edges
        The DAG; ``u < v`` for every edge.
    max_block_size
        Split blocks with more nodes than this (``None``: never split).
    """
    if max_block_size is not None and max_block_size < 1:
        raise ValueError(f"max_block_size must be >= 1, got {max_block_size}")
    _check_topological(num_nodes, edges)
    if num_nodes == 0:
        return []
    cuts = cut_points(num_nodes, edges)
    blocks: list[list[int]] = []
    start = 0
    for c in cuts:
        blocks.append(list(range(start, c + 1)))
        start = c + 1
    if start < num_nodes:
        blocks.append(list(range(start, num_nodes)))
    if max_block_size is None:
        return blocks
    preds: dict[int, list[int]] = {v: [] for v in range(num_nodes)}
    for u, v in edges:
        preds[v].append(u)
    out: list[list[int]] = []
    for block in blocks:
        out.extend(_split(block, preds, max_block_size) if len(block) > max_block_size else [block])
    return out


def sub_dag(block: Sequence[int], edges: Sequence[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """The block as a DAG of local ids ``0..len(block)-1`` (``local = block.index(global)``)."""
    index = {v: i for i, v in enumerate(block)}
    local = [(index[u], index[v]) for u, v in edges if u in index and v in index]
    return len(block), local


__all__ = ["cut_points", "partition", "sub_dag"]
