"""The activation tensors of a kernel graph, as the search's memory model counts them
(:mod:`ios_tvm.core.memory`): the bytes each kernel writes, and which kernels write the model's
outputs."""

from __future__ import annotations

from typing import Any

from tvm import relax

from .graph import OpGraph, tensor_bytes


def output_nodes(graph: OpGraph) -> list[int]:
    """Kernels whose results leave ``main``'s dataflow block (the model's outputs), directly or
    through free bindings (tuples, views); without the lowered module, the graph's sinks."""
    if graph.mod is None or not graph.bindings:
        has_reader = {u for u, _ in graph.edges}
        return [v for v in range(len(graph.nodes)) if v not in has_reader]
    node_of = {b.var: i for i, b in enumerate(graph.bindings)}
    producers: dict[Any, set[int]] = {}
    outputs: set[int] = set()
    for block in graph.mod["main"].body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            continue
        for b in block.bindings:
            if b.var in node_of:
                made = {node_of[b.var]}
            else:
                made = set().union(*(producers.get(v, set()) for v in relax.analysis.free_vars(b.value)))
            producers[b.var] = made
            if not isinstance(b.var, relax.DataflowVar):
                outputs |= made
    return sorted(outputs)


def output_bytes(graph: OpGraph) -> list[int]:
    """Bytes of the tensors each kernel writes."""
    return [sum(tensor_bytes(shape, dtype) for shape, dtype in n.outputs) for n in graph.nodes]
