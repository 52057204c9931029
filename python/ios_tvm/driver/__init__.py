"""From a model to its schedule: :func:`~ios_tvm.driver.optimize.optimize` (graph, cost model and
search put together), the end-to-end check that keeps the fastest of sequential, greedy and IOS
(:mod:`~ios_tvm.driver.guard`), and kernel variants chosen by measurement
(:mod:`~ios_tvm.driver.variants`)."""

from .optimize import SearchConfig, optimize, search_graph
from .variants import select_variants

__all__ = ["SearchConfig", "optimize", "search_graph", "select_variants"]
