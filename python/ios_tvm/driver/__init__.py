"""From a model to its schedule: :func:`~ios_tvm.driver.optimize.optimize` (graph, cost model and
search put together), a memory budget checked against TVM's plan (:mod:`~ios_tvm.driver.budget`)
and the latency / memory trade-off (:func:`~ios_tvm.driver.sweep.memory_sweep`), the end-to-end
check that keeps the fastest of sequential, greedy and IOS (:mod:`~ios_tvm.driver.guard`), and
kernel variants chosen by measurement (:mod:`~ios_tvm.driver.variants`)."""

from .optimize import GraphSearch, SearchConfig, optimize, search_graph
from .sweep import memory_sweep
from .variants import select_variants

__all__ = ["GraphSearch", "SearchConfig", "memory_sweep", "optimize", "search_graph", "select_variants"]
