"""The interface between the search and whatever says how long a stage takes, and the registry
that finds cost models by name."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import tvm

from ..compiler.databases import DatabaseLike
from ..core.plan import StageTable
from ..core.search import Groups
from ..errors import InvalidArgumentError
from ..ir.graph import OpGraph


class CostModel:
    """Latency of a candidate stage of a graph, in seconds. Subclass it and override
    :meth:`stage_latency` (and, where the model can, :meth:`prepare` and :meth:`merge_latency`).

    ``groups`` are tuples of node ids of ``graph``: each group runs its nodes in order on one
    stream, the groups run concurrently, the stage ends when all are done.

    Attributes
    ----------
    name
        Recorded in schedules (``schedule.meta["cost_model"]``).
    supports_merge
        Whether :meth:`merge_latency` costs merged kernels (convolutions, matmuls); without it
        the search leaves merge stages out (strategy ``"both"``) or refuses (strategy ``"merge"``).
    measures_here
        Whether its latencies are timings on this machine's device: then
        :func:`ios_tvm.optimize` checks the schedule end to end here by default.
    """

    name: str = "custom"
    supports_merge: bool = False
    measures_here: bool = False

    def measurement(self) -> dict[str, Any] | None:
        """How the stages were timed (recorded in ``schedule.meta["measure"]``), or ``None`` for
        latencies that were predicted, not measured."""
        return None

    def prediction_note(self, dtype: str = "float32") -> dict[str, str]:
        """What the latencies are and how far to trust them, for a model computing in ``dtype``:
        ``{"cost_model", "device", "known_error"}`` (``schedule.meta["prediction"]``, printed by
        the CLI). A custom model's accuracy is unknown to ios_tvm."""
        return {"cost_model": self.name, "device": "", "known_error": "unknown (a custom cost model)"}

    def stage_latency(self, graph: OpGraph, groups: Groups) -> float:
        """Seconds from the stage's start to its join."""
        raise NotImplementedError(f"{type(self).__name__} does not define stage_latency")

    def stage_latencies(self, graph: OpGraph, stages: StageTable) -> Sequence[float]:
        """Latency of every stage of ``stages`` (rows of node ids of ``graph``), in row order:
        what the search asks. Default: :meth:`stage_latency` of each; a model whose stage cost
        is a formula over its kernels' costs computes them all at once here."""
        return [self.stage_latency(graph, stages.groups(k)) for k in range(len(stages))]

    def prepare(self, graph: OpGraph, stages: Iterable[Groups]) -> None:
        """Called once by the search with every candidate stage (an iterable, produced as it is
        read) before it asks for latencies (a measuring model times them in bulk here).
        Default: nothing."""

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        """Seconds of the kernels ``nodes`` (convolutions or matmuls on one input) merged into one
        kernel (plus the split of its output), for models with :attr:`supports_merge`."""
        raise NotImplementedError(f"cost model {self.name!r} cannot cost merged kernels")


class _Wrapped(CostModel):
    """A plain object with ``stage_latency`` (and optionally ``prepare`` / ``merge_latency``), as
    a :class:`CostModel`: what ios_tvm accepted before the base class existed."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name = str(getattr(obj, "name", type(obj).__name__))
        self.supports_merge = callable(getattr(obj, "merge_latency", None))

    def stage_latency(self, graph: OpGraph, groups: Groups) -> float:
        return self.obj.stage_latency(graph, groups)

    def prepare(self, graph: OpGraph, stages: Iterable[Groups]) -> None:
        if callable(getattr(self.obj, "prepare", None)):
            self.obj.prepare(graph, list(stages))

    def merge_latency(self, graph: OpGraph, nodes: tuple[int, ...]) -> float:
        if not self.supports_merge:
            return super().merge_latency(graph, nodes)
        return self.obj.merge_latency(graph, nodes)


#: name -> factory(target, *, database, cuda_graph) of the cost models ``cost_model="<name>"`` selects
_REGISTRY: dict[str, Callable[..., CostModel]] = {}


def register_cost_model(name: str, factory: Callable[..., CostModel]) -> None:
    """Make ``cost_model=name`` (API) and ``--cost-model name`` (CLI) build
    ``factory(target, database=..., cuda_graph=...)``: ``database`` is the tuning database
    argument of the call, ``cuda_graph`` whether the build will replay the run as a CUDA graph."""
    _REGISTRY[name] = factory


def cost_model_names() -> list[str]:
    """Registered cost model names."""
    return sorted(_REGISTRY)


def as_cost_model(spec: str | CostModel | Any, target: tvm.target.Target, database: DatabaseLike = "auto",
                  cuda_graph: bool = False) -> CostModel:
    """A :class:`CostModel` from a registered name, a :class:`CostModel`, or any object with a
    ``stage_latency(graph, groups)`` method.

    Raises
    ------
    InvalidArgumentError
        An unknown name (a ``ValueError``).
    TypeError
        An object that cannot cost stages.
    """
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            raise InvalidArgumentError(f"unknown cost model {spec!r}; choose one of {cost_model_names()} "
                                       "or pass a CostModel")
        return _REGISTRY[spec](target, database=database, cuda_graph=cuda_graph)
    if isinstance(spec, CostModel):
        return spec
    if not callable(getattr(spec, "stage_latency", None)):
        raise TypeError("cost_model must be a name or have a stage_latency(graph, groups) method, "
                        f"got {type(spec).__name__}")
    return _Wrapped(spec)
