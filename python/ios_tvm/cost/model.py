"""The interface between the search and whatever says how long a stage takes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..graph import OpGraph


@runtime_checkable
class CostModel(Protocol):
    """Latency of a candidate stage of a graph, in seconds.

    ``groups`` are tuples of node ids of ``graph``: each group runs its nodes in order on one
    stream, the groups run concurrently, the stage ends when all are done. The search calls
    :meth:`stage_latency` once per distinct stage.

    A model may also define ``prepare(graph, stages)``: the search then enumerates every
    candidate stage first and hands them over in one call before asking for latencies (a
    measuring model builds and times them in bulk).
    """

    name: str

    def stage_latency(self, graph: OpGraph, groups: tuple[tuple[int, ...], ...]) -> float:
        """Seconds from the stage's start to its join."""
        ...
