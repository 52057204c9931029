"""The search's model of activation memory: which tensors are alive between stages, and what a
stage adds while it runs. Pure (NumPy; no TVM).

Every kernel writes its outputs into fresh storage; nothing else is allocated (inputs and weights
are not activations). Between stages, with the set ``R`` of kernels done, a kernel's outputs are
*alive* when it is done and a kernel still to run reads them, or they are outputs of the model:
``live(R)`` depends on ``R`` only, which is what lets a dynamic program over ``R`` bound it. A
stage ``E`` run after ``R`` holds everything alive at ``R`` (its inputs among it) and allocates
all its kernels' outputs, kept to its join (the lowering's keep-alives):

``need(R, E) = live(R) + out(E)``

(a merge stage: ``2 out(E)``, its merged output and the split copies). A schedule's *peak* is the
largest ``need`` of its stages. TVM's static planner reuses storage by its own rules, so its plan
is not this number; ``ios_tvm.driver.budget`` checks the real plan and searches again when the
model was wrong.

The search runs block by block; :func:`block_memory` says, per block, what it must know of the
tensors of the rest of the graph: those of earlier blocks alive through the whole block (a
constant), and those last read inside the block (alive until their last reader runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .plan import StageTable

#: a merge stage holds its merged output and the split copies of it
MERGE_FACTOR = 2


def format_bytes(n: int) -> str:
    """``"41.42 MiB"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class BlockMemory:
    """Tensor sizes as one block's search needs them (local node ids).

    Attributes
    ----------
    out_bytes
        Bytes of each node's outputs.
    kept
        Mask of the nodes whose outputs outlive the block (read by a later block, or outputs of
        the model): alive from the moment they are done.
    succ
        Per node, the mask of its readers in the block.
    incoming
        ``(bytes, readers)`` of tensors made before the block and last read inside it: alive
        until every reader (a mask) is done.
    base
        Bytes of tensors made before the block and alive through all of it.
    """

    out_bytes: tuple[int, ...]
    kept: int
    succ: tuple[int, ...]
    incoming: tuple[tuple[int, int], ...] = ()
    base: int = 0

    def live(self, states: np.ndarray) -> np.ndarray:
        """``live(R)`` of each state (mask) of ``states``, in bytes (``int64``)."""
        states = np.asarray(states)
        out = np.full(len(states), self.base, dtype=np.int64)
        for nbytes, readers in self.incoming:
            out += nbytes * ((states & readers) != readers)
        for v, nbytes in enumerate(self.out_bytes):
            if not nbytes:
                continue
            done = ((states >> v) & 1).astype(bool)
            if self.kept >> v & 1:
                out += nbytes * done
            elif self.succ[v]:
                out += nbytes * (done & ((states & self.succ[v]) != self.succ[v]))
        return out

    def stage_bytes(self, table: StageTable) -> np.ndarray:
        """``out(E)`` of each stage of ``table`` (twice for merge stages), in bytes."""
        sizes = np.asarray(self.out_bytes + (0,), dtype=np.int64)  # -1 (empty slot) reads the 0
        out = sizes[table.nodes].sum(axis=1)
        return np.where(table.merge, MERGE_FACTOR * out, out)


def block_memory(num_nodes: int, edges: Sequence[tuple[int, int]], out_bytes: Sequence[int],
                 outputs: Sequence[int], blocks: Sequence[Sequence[int]]) -> list[BlockMemory]:
    """:class:`BlockMemory` of each block (in execution order) of a graph of ``num_nodes``
    kernels whose outputs take ``out_bytes`` and where ``outputs`` are the model's outputs."""
    block_of = [0] * num_nodes
    for b, block in enumerate(blocks):
        for v in block:
            block_of[v] = b
    readers: list[list[int]] = [[] for _ in range(num_nodes)]
    for u, v in sorted(set(edges)):
        readers[u].append(v)
    last_block = [max([block_of[w] for w in readers[v]] + [block_of[v]]) for v in range(num_nodes)]
    is_output = set(outputs)
    out = []
    for b, block in enumerate(blocks):
        index = {v: i for i, v in enumerate(block)}
        kept = 0
        succ = [0] * len(block)
        for v in block:
            i = index[v]
            if v in is_output or last_block[v] > b:
                kept |= 1 << i
            for w in readers[v]:
                if w in index:
                    succ[i] |= 1 << index[w]
        base = 0
        incoming = []
        for v in range(num_nodes):
            if block_of[v] >= b or not out_bytes[v]:
                continue
            if v in is_output or last_block[v] > b:
                base += int(out_bytes[v])
            elif last_block[v] == b:
                incoming.append((int(out_bytes[v]), sum(1 << index[w] for w in readers[v] if w in index)))
        out.append(BlockMemory(tuple(int(out_bytes[v]) for v in block), kept, tuple(succ), tuple(incoming), base))
    return out


def schedule_peak(num_nodes: int, edges: Sequence[tuple[int, int]], out_bytes: Sequence[int],
                  outputs: Sequence[int], stages: Sequence[Sequence[Sequence[int]]],
                  kinds: Sequence[str] | None = None) -> tuple[int, list[int]]:
    """``(peak, need per stage)`` of a schedule in this module's model: what the search bounds.
    """
    edges = sorted(set(edges))
    readers_left = [0] * num_nodes
    for u, _ in edges:
        readers_left[u] += 1
    read_by_any = [count > 0 for count in readers_left]
    preds: list[list[int]] = [[] for _ in range(num_nodes)]
    for u, v in edges:
        preds[v].append(u)
    kept = set(outputs)
    live = 0
    needs = []
    for i, stage in enumerate(stages):
        nodes = [v for g in stage for v in g]
        made = sum(int(out_bytes[v]) for v in nodes)
        factor = MERGE_FACTOR if kinds is not None and kinds[i] == "merge" else 1
        needs.append(live + factor * made)
        live += made
        for v in nodes:  # after the join: what nobody reads any more is freed
            for u in preds[v]:
                readers_left[u] -= 1
                if readers_left[u] == 0 and u not in kept:
                    live -= int(out_bytes[u])
        for v in nodes:
            if not read_by_any[v] and v not in kept:  # read by nobody: freed at once
                live -= int(out_bytes[v])
    return max(needs, default=0), needs


#: TVM's static planner reuses a free block of storage for a tensor within this factor of its size
MATCH_RANGE = 16


class PlanReplay:
    """Bytes of storage TVM's static memory planner gives a build of a schedule, replayed here
    without TVM: the rules of ``StaticPlanBlockMemory`` (``src/relax/transform/
    static_plan_block_memory.cc``, TVM 0.27) applied to the binding order the lowering makes.
    Made once per graph, called per schedule (milliseconds on the full-size zoo).

    Kernels run stage by stage, group by group; each allocates its outputs (``tensors[v]``:
    ``(bytes, dtype)`` per output), then releases the storage of every argument it used last
    (a multi-group stage's join, the keep-alive, uses every tensor of the stage). A request
    takes the smallest free block of its dtype at least as large and at most
    :data:`MATCH_RANGE` times larger, else the largest smaller one within that factor (which
    grows to fit), else new storage; the plan is the sum of the blocks. The model's outputs are
    not planned (they leave the function). Exact for kernels with one output each and no merge
    stages (checked against ``ios_tvm.planned_memory`` on the zoo); that is the real thing.
    """

    def __init__(self, num_nodes: int, edges: Sequence[tuple[int, int]],
                 tensors: Sequence[Sequence[tuple[int, str]]], outputs: Sequence[int]) -> None:
        self.preds: list[list[int]] = [[] for _ in range(num_nodes)]
        self.base_uses = [1] * num_nodes  # its own call, and one per reader
        for u, v in sorted(set(edges)):
            self.preds[v].append(u)
            self.base_uses[u] += 1
        self.tensors = [list(t) for t in tensors]
        self.unplanned = set(outputs)

    def __call__(self, stages: Sequence[Sequence[Sequence[int]]], keep_alive: bool = True) -> int:
        import bisect

        preds, tensors, unplanned = self.preds, self.tensors, self.unplanned
        uses = list(self.base_uses)
        joins: list[list[int] | None] = []
        for stage in stages:
            touched = None
            if len(stage) > 1 and keep_alive:
                touched = list(dict.fromkeys(u for group in stage for v in group for u in preds[v] + [v]))
                for u in touched:
                    uses[u] += 1
            joins.append(touched)
        free: dict[str, list[tuple[int, int]]] = {}  # dtype -> sorted (bytes, block id)
        size: list[int] = []
        holds: dict[int, list[tuple[str, int]]] = {}

        def request(nbytes: int, dtype: str) -> int:
            pool = free.setdefault(dtype, [])
            mid = bisect.bisect_left(pool, (nbytes, -1))
            if mid < len(pool) and pool[mid][0] <= nbytes * MATCH_RANGE:
                return pool.pop(mid)[1]
            low = bisect.bisect_left(pool, (nbytes // MATCH_RANGE, -1))
            if mid > low:
                block = pool.pop(mid - 1)[1]
                size[block] = nbytes
                return block
            size.append(nbytes)
            return len(size) - 1

        def used(u: int) -> None:
            uses[u] -= 1
            if uses[u] == 0:
                for dtype, block in holds.pop(u, ()):
                    bisect.insort(free[dtype], (size[block], block))

        for stage, touched in zip(stages, joins):
            for group in stage:
                for v in group:
                    if v not in unplanned:
                        holds[v] = [(dtype, request(nbytes, dtype)) for nbytes, dtype in tensors[v]]
                    for u in preds[v]:
                        used(u)
                    used(v)
            for u in touched or ():
                used(u)
        return sum(size)


def replay_plan(num_nodes: int, edges: Sequence[tuple[int, int]], tensors: Sequence[Sequence[tuple[int, str]]],
                outputs: Sequence[int], stages: Sequence[Sequence[Sequence[int]]], keep_alive: bool = True) -> int:
    """:class:`PlanReplay` of one schedule."""
    return PlanReplay(num_nodes, edges, tensors, outputs)(stages, keep_alive)
