"""``ios_tvm.optimize``: from a Relax model to an IOS schedule (the graph, the cost model and the
search put together)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import tvm

from ..compiler.databases import DatabaseLike, resolve_database
from ..compiler.pipeline import planned_memory
from ..core import blocks as blocks_mod
from ..core.dag import Dag
from ..core.memory import BlockMemory, block_memory
from ..core.plan import PlanCache
from ..core.schedule import Schedule
from ..core.search import SearchStats, candidate_stages, dynamic_program, least_peak
from ..cost import CostModel, get_cost_model
from ..cost.gpus import device_memory
from ..errors import InvalidArgumentError, MemoryBudgetError
from ..ir.activations import output_bytes, output_nodes
from ..ir.footprint import check_fits
from ..ir.graph import OpGraph, extract_graph
from ..ir.merge_plan import node_merges
from ..ir.precision import convert, model_dtype
from ..ir.target import TargetLike, as_target
from .budget import MemoryBudget, fit
from .guard import EndToEndConfig, end_to_end_timer, keep_fastest
from .kernels import plan_kernels, refine_in_stages

logger = logging.getLogger("ios_tvm")


STRATEGIES = ("concurrent", "merge", "both")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the search (what the dynamic program may consider), apart from how stages
    are costed.

    Attributes
    ----------
    max_group_size
        ``r``: most kernels one stream runs within a stage (IOS default 3).
    max_num_groups
        ``s``: most concurrent streams in a stage (IOS default 8).
    max_block_size
        Blocks between cut points with more kernels than this are split (``None``: never). The
        DP's work grows exponentially with block width; 16 keeps full NASNet-A at about 2 s.
    strategy
        ``"concurrent"`` (stages of concurrent groups), ``"merge"`` (single kernels, or
        convolutions on the same input merged into one kernel), or ``"both"`` (default), as in
        the paper's IOS-Parallel / IOS-Merge / IOS-Both. Merging needs the weights bound as
        constants (``ios_tvm.models.bind_params``).
    memory_budget
        Most activation memory the build may plan: bytes (an int, or ``"300MiB"``, ``"2GB"``)
        or a multiple of the sequential schedule's plan (``"1.25x"``, or a float such as
        ``1.25``); ``None`` (default): unbounded. The search keeps to schedules that fit it in
        its memory model, and :func:`optimize` checks TVM's real plan of the result
        (:mod:`ios_tvm.driver.budget`).
    """

    max_group_size: int = 3
    max_num_groups: int = 8
    max_block_size: int | None = 16
    strategy: str = "both"
    memory_budget: int | float | str | None = None

    def __post_init__(self) -> None:
        for name in ("max_group_size", "max_num_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_block_size is not None and (not isinstance(self.max_block_size, int) or self.max_block_size < 1):
            raise InvalidArgumentError(f"max_block_size must be an integer >= 1 or None, got {self.max_block_size!r}")
        if self.strategy not in STRATEGIES:
            raise InvalidArgumentError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.memory_budget is not None:
            MemoryBudget.parse(self.memory_budget)  # a MemoryBudgetError now, not after the search


def search_config(search: SearchConfig | None, max_group_size: int | None = None,
                  max_num_groups: int | None = None) -> SearchConfig:
    """The one :class:`SearchConfig` of a call that takes ``search=`` or the flat ``r`` / ``s``
    shorthand: both at once is an error (one would silently lose)."""
    if search is None:
        return SearchConfig(3 if max_group_size is None else max_group_size,
                            8 if max_num_groups is None else max_num_groups)
    flat = [name for name, value in (("max_group_size", max_group_size), ("max_num_groups", max_num_groups))
            if value is not None]
    if flat:
        raise InvalidArgumentError(
            f"give the search settings once: {' and '.join(flat)} as keywords or in search=SearchConfig(...), not "
            f"both (e.g. search=SearchConfig(max_group_size={search.max_group_size if max_group_size is None else max_group_size}, "
            f"max_num_groups={search.max_num_groups if max_num_groups is None else max_num_groups}, "
            f"strategy={search.strategy!r}))")
    if not isinstance(search, SearchConfig):
        raise InvalidArgumentError(f"search must be an ios_tvm.SearchConfig, got {type(search).__name__}")
    return search


class GraphSearch:
    """The search of one graph with one cost model and :class:`SearchConfig`: its blocks, their
    plans (:class:`~ios_tvm.core.plan.PlanCache`) and their stages' latencies are found once;
    :meth:`solve` then runs the dynamic program, under a memory budget or not, as often as asked
    (the memory budget's loop, :mod:`ios_tvm.driver.budget`, solves several times)."""

    def __init__(self, graph: OpGraph, cost_model: CostModel, config: SearchConfig = SearchConfig()) -> None:
        self.graph, self.cost_model, self.config = graph, cost_model, config
        self.blocks = blocks_mod.partition(len(graph.nodes), graph.edges, config.max_block_size)
        self.r, self.s = (1, 1) if config.strategy == "merge" else (config.max_group_size, config.max_num_groups)
        merge_sets: list[tuple[int, ...]] = []
        if config.strategy != "concurrent" and graph.merges is not None:
            merge_sets = graph.merges.candidates()
            if merge_sets and not cost_model.supports_merge:
                if config.strategy == "merge":
                    raise TypeError(f"cost model {cost_model.name!r} cannot cost merged kernels (it has no "
                                    "merge_latency); use strategy='concurrent'")
                logger.warning("ios_tvm: cost model %r has no merge_latency; searching without merge stages",
                               cost_model.name)
                merge_sets = []
        self.dags = []
        for block in self.blocks:
            n, local_edges = blocks_mod.sub_dag(block, graph.edges)
            index = {v: i for i, v in enumerate(block)}
            local_merges = [sum(1 << index[v] for v in m) for m in merge_sets if all(v in index for v in m)]
            self.dags.append((block, Dag.from_edges(n, local_edges), local_merges))
        self.plans = PlanCache()  # identical blocks enumerate their states once
        self._latencies: dict[int, Any] = {}
        self._merge_latencies: dict[tuple[int, ...], float] = {}
        self._memory: list[BlockMemory] | None = None
        # lazily: a model that needs no preparation never pays for the enumeration
        cost_model.prepare(graph, (tuple(tuple(block[i] for i in g) for g in groups)
                                   for block, dag, local_merges in self.dags
                                   for groups in candidate_stages(dag, self.r, self.s, self.plans, local_merges)))

    def memory(self) -> list[BlockMemory]:
        """Tensor sizes per block (:func:`ios_tvm.core.memory.block_memory`)."""
        if self._memory is None:
            g = self.graph
            self._memory = block_memory(len(g.nodes), g.edges, output_bytes(g), output_nodes(g), self.blocks)
        return self._memory

    def least_budget(self) -> int:
        """The least peak (bytes, in the search's memory model) any schedule of the graph reaches:
        budgets below it have no schedule."""
        least = 0
        for (block, dag, local_merges), memory in zip(self.dags, self.memory()):
            plan = self.plans.get(dag, self.r, self.s, local_merges)
            need = memory.live(plan.states)[plan.rest] + memory.stage_bytes(plan.stages)[plan.stage]
            least = max(least, least_peak(plan, need))
        return least

    def solve(self, memory_budget: int | None = None) -> tuple[list, list, SearchStats, int, list[str]]:
        """Run the DP block by block; return ``(stages, latencies, stats, num_blocks, kinds)``
        with global node ids. ``memory_budget``: bytes no stage may need (in the search's memory
        model); :class:`~ios_tvm.errors.MemoryBudgetError` when no schedule fits, with the least
        budget that one does."""
        graph, cost_model = self.graph, self.cost_model
        stages: list = []
        latencies: list[float] = []
        kinds: list[str] = []
        stats = SearchStats()
        memories = self.memory() if memory_budget is not None else [None] * len(self.dags)
        for bi, ((block, dag, local_merges), memory) in enumerate(zip(self.dags, memories)):
            def latency(groups, block=block):
                return cost_model.stage_latency(graph, tuple(tuple(block[i] for i in g) for g in groups))

            def latencies_of(table, block=block, bi=bi):
                if bi not in self._latencies:
                    self._latencies[bi] = cost_model.stage_latencies(graph, table.relabel(block))
                return self._latencies[bi]

            def merge_latency(nodes, block=block):
                key = tuple(block[i] for i in nodes)
                if key not in self._merge_latencies:
                    self._merge_latencies[key] = cost_model.merge_latency(graph, key)
                return self._merge_latencies[key]

            try:
                result = dynamic_program(dag, latency, self.r, self.s, local_merges,
                                         merge_latency if local_merges else None, stage_latencies=latencies_of,
                                         plans=self.plans, memory=memory, memory_budget=memory_budget)
            except MemoryBudgetError:
                least = self.least_budget()
                raise MemoryBudgetError(f"no schedule fits {memory_budget:,} bytes of activations in the search's "
                                        f"memory model; the least any schedule needs is {least:,} bytes", least) from None
            for stage in result.stages:
                stages.append([[block[i] for i in g] for g in stage])
            latencies.extend(result.latencies)
            kinds.extend(result.kinds)
            stats = stats.add(result.stats)
            logger.debug("block %d/%d: %d kernels, %d states", bi + 1, len(self.blocks), len(block),
                         result.stats.states)
        return stages, latencies, stats, len(self.blocks), kinds


def search_graph(graph: OpGraph, cost_model: CostModel, config: SearchConfig = SearchConfig()
                 ) -> tuple[list, list, SearchStats, int, list[str]]:
    """Run the DP block by block; return ``(stages, latencies, stats, num_blocks, kinds)`` with
    global node ids. Merge candidates come from ``graph.merges`` (see :func:`optimize`)."""
    return GraphSearch(graph, cost_model, config).solve()


def optimize(
    mod: tvm.IRModule,
    target: TargetLike,
    *,
    max_group_size: int | None = None,
    max_num_groups: int | None = None,
    cost_model: str | CostModel | None = None,
    search: SearchConfig | None = None,
    graph: OpGraph | None = None,
    database: DatabaseLike = "auto",
    end_to_end: bool | EndToEndConfig | None = None,
    cuda_graph: bool = False,
    dtype: str | None = None,
    kernels: str = "tvm",
    tf32: bool = False,
) -> Schedule:
    """Find an IOS schedule for ``mod`` on ``target``.

    Parameters
    ----------
    mod
        A Relax module whose ``main`` has static shapes and one dataflow block.
    target
        ``"llvm"``, ``"cuda"``, a tag, a JSON dict such as ``{"kind": "cuda", "arch": "sm_90"}``
        or a ``tvm.target.Target``. Its fusion decides the kernels.
    max_group_size, max_num_groups
        ``r`` and ``s`` of the paper (default 3 and 8), a shorthand for
        ``search=SearchConfig(max_group_size, max_num_groups)``; give one or the other.
    cost_model
        A :class:`~ios_tvm.cost.CostModel` or a name: ``"analytic"`` (default for now).
    search
        Full search settings (also the strategy: concurrent / merge / both, and the block size).
    graph
        The model's graph if already extracted (``extract_graph(mod, target)``).
    database
        MetaSchedule records for the kernels a measuring cost model builds (see
        :func:`ios_tvm.pipeline`); ``"auto"``: the database shipped for the target, if any.
    end_to_end
        Build the sequential, greedy and IOS schedules, time them end to end on the device and
        return the fastest (:mod:`ios_tvm.driver.guard`; an :class:`ios_tvm.driver.guard.EndToEndConfig` sets
        how). ``None`` (default): when the stages were measured on this machine's device.
    cuda_graph
        The model will be built with ``cuda_graph=True`` (its run replayed as one CUDA graph):
        a measured cost model named here times every stage as a CUDA graph, and the end-to-end
        check builds with graphs.
    dtype
        ``"float16"`` or ``"bfloat16"``: schedule the model converted to that precision by
        :func:`ios_tvm.precision.convert` (``graph``, if given, must be the converted model's);
        build it with the same ``dtype``. ``None`` (default): the model as given, whatever its
        precision.

    Returns
    -------
    Schedule
        Validated, with predicted stage latencies; ``meta`` holds the search statistics, the
        same cost model's latency of the sequential and greedy baselines, under ``"prediction"``
        which cost model predicted, for which device, and how far it is known to be off
        (:meth:`ios_tvm.cost.CostModel.prediction_note`), ``meta["precision"]``: the dtype the model computes in and
        whether ``dtype`` converted it, and, after the end-to-end check, ``meta["end_to_end"]``:
        every candidate's time and which one won.

    Raises
    ------
    InvalidArgumentError
        Bad search settings (also ``search`` together with ``max_group_size`` /
        ``max_num_groups``), an unknown cost model name, or a model whose largest tensor alone
        outgrows the memory of the target's device (:func:`ios_tvm.ir.footprint.check_fits`).
    DatabaseError
        ``database`` names a directory that holds no tuning database.
    UnsupportedModelError
        A model ios_tvm cannot schedule (dynamic shapes, control flow, ...).
    PrecisionError
        A ``dtype`` ios_tvm cannot convert the model to.
    """
    if not isinstance(mod, tvm.IRModule):
        raise TypeError(f"optimize takes the model as a tvm.IRModule, got {type(mod).__name__}")
    if dtype is not None:
        converted = convert(mod, dtype)
        precision = {"dtype": model_dtype(converted), "converted": converted is not mod}
        mod = converted
    else:
        precision = {"dtype": model_dtype(mod), "converted": False}
    config = search_config(search, max_group_size, max_num_groups)
    tgt = as_target(target)
    check_fits(mod, *device_memory(tgt), "schedule it with a smaller batch size or input shape")
    if isinstance(database, (str, os.PathLike)) and str(database) != "auto":
        resolve_database(database, tgt)  # a mistyped database is an error even where the costs do not read it
    t0 = time.perf_counter()
    if graph is None:
        graph = extract_graph(mod, tgt)
    if config.strategy != "concurrent" and graph.merges is None:
        graph.merges = node_merges(mod, graph)
    t_graph = time.perf_counter() - t0
    base_model = get_cost_model(cost_model, tgt, database, cuda_graph)
    model, kernels_record = plan_kernels(mod, graph, tgt, base_model, kernels, tf32)
    launch = (model.measurement() or {}).get("launch")
    if launch is not None and launch != ("graph" if cuda_graph else "kernels"):
        logger.warning("ios_tvm: the cost model times stages with launch=%r, but the build %s a CUDA graph: its "
                       "costs may not predict the run", launch, "replays" if cuda_graph else "does not replay")
    t1 = time.perf_counter()
    searcher = GraphSearch(graph, model, config)  # first: a measured model times all stages in one batch
    seq = Schedule.sequential(graph, model)
    greedy = Schedule.greedy(graph, model, config.max_num_groups)
    measurement = model.measurement()

    def make(found: tuple) -> Schedule:
        stages, latencies, stats, num_blocks, kinds = found
        meta: dict[str, Any] = {
            "strategy": "ios",
            "cost_model": model.name,
            "target": str(tgt),
            "search": asdict(config),
            "stats": {"blocks": num_blocks, **asdict(stats)},
            "time_s": {"graph": round(t_graph, 4), "search": round(time.perf_counter() - t1, 4)},
            "baselines_s": {"sequential": seq.latency, "greedy": greedy.latency},
            "prediction": model.prediction_note(precision["dtype"]),
            "precision": precision,
            "kernels": kernels_record,
        }
        if measurement is not None:  # how the stages were timed
            meta["measure"] = measurement
        return Schedule.from_stages(graph, stages, latencies, meta, kinds)

    def plan(s: Schedule | None) -> int:
        if s is None and kernels_record["vendor"]:  # the sequential schedule runs the vendor calls too
            s = Schedule.sequential(graph)
            s.meta["kernels"] = kernels_record
        return planned_memory(mod, tgt, s, database=database, cuda_graph=cuda_graph)

    def with_plan(s: Schedule, memory: dict[str, Any]) -> dict[str, Any]:
        """``memory`` (a ``meta["memory"]`` record) with ``s``'s planned bytes."""
        planned = plan(s)
        return {**memory, "planned_bytes": planned, "used": planned / memory["budget_bytes"]}

    fits: Callable[[str, Schedule | None], bool] | None = None
    if config.memory_budget is None:
        sched = make(searcher.solve())
    else:
        # vendor calls plan workspaces PlanReplay does not know: TVM's plan judges every candidate
        sched, memory = fit(searcher, MemoryBudget.parse(config.memory_budget), plan, make,
                            replayable=not kernels_record["vendor"])
        sched.meta["memory"] = memory
        sched.meta["time_s"]["search"] = memory["search_s"]
        sched.meta["time_s"]["memory_budget"] = memory["time_s"]

        def fits(label: str, s: Schedule | None) -> bool:  # the end-to-end check's candidates
            if label == "ios":
                return True
            if label == "sequential" and (s is None or s.meta.get("kernels") in (None, kernels_record)):
                return memory["sequential_bytes"] <= memory["budget_bytes"]  # planned so already
            return plan(s) <= memory["budget_bytes"]
    sched.validate(graph, config.max_group_size, config.max_num_groups)
    refined = refine_in_stages(mod, graph, tgt, sched, base_model)  # kernels="auto": the choice inside the stages
    if refined is not sched and config.memory_budget is not None:
        memory = with_plan(refined, sched.meta["memory"])
        if memory["planned_bytes"] > memory["budget_bytes"]:
            logger.info("ios_tvm: the vendor kernels chosen inside the stages would not fit the memory budget; kept "
                        "as searched")
            refined = sched
        else:  # the memory record describes the schedule returned
            refined.meta["memory"] = memory
    sched = refined
    logger.debug("ios_tvm: %s", sched.summary())
    if end_to_end is None:
        end_to_end = model.measures_here
    if end_to_end:
        e2e = end_to_end if isinstance(end_to_end, EndToEndConfig) else EndToEndConfig()
        sched = keep_fastest(sched, graph, model, config.max_num_groups,
                             end_to_end_timer(mod, tgt, database=database, config=e2e, cuda_graph=cuda_graph),
                             fits=fits)
        if config.memory_budget is not None and sched.meta["end_to_end"]["chosen"] != "ios":
            sched.meta["memory"] = with_plan(sched, sched.meta["memory"])  # the record describes what is returned
    return sched
