"""The search under a memory budget against brute force: among the schedules whose every stage
fits the budget (in the search's memory model, ``ios_tvm.core.memory``), the fastest; among equally
fast ones, the lowest peak."""

from __future__ import annotations

import functools
import math
import random

import pytest
from test_search import next_stages, random_dag, random_latency
from test_search_plan import tied_latency

from ios_tvm.core.dag import Dag
from ios_tvm.core.memory import block_memory, schedule_peak
from ios_tvm.core.reference import reference_dynamic_program
from ios_tvm.core.search import dynamic_program
from ios_tvm.errors import MemoryBudgetError


def live(done, sizes, readers, outputs) -> int:
    return sum(sizes[v] for v in done if v in outputs or not readers[v] <= done)


def brute_force(n, edges, latency, r, s, sizes, outputs, budget):
    """``(latency, peak)`` least in that order over every stage sequence whose stages each need
    at most ``budget`` (live tensors before the stage plus its outputs); ``(inf, inf)``: none."""
    readers = {v: {w for u, w in edges if u == v} for v in range(n)}

    @functools.lru_cache(maxsize=None)
    def best(done: frozenset[int]) -> tuple[float, float]:
        if len(done) == n:
            return 0.0, 0
        options = []
        for stage, groups in next_stages(n, edges, done, r, s):
            need = live(done, sizes, readers, outputs) + sum(sizes[v] for v in stage)
            if need > budget:
                continue
            lat, peak = best(done | stage)
            options.append((latency(groups) + lat, max(need, peak)))
        return min(options, default=(math.inf, math.inf))

    return best(frozenset())


def problem(seed: int):
    rng = random.Random(70_000 + seed)
    n = 2 + seed % 8
    edges = random_dag(rng, n, [0.15, 0.3, 0.5][seed % 3])
    sizes = [rng.choice([0, 1, 2, 4, 8]) for _ in range(n)]
    sinks = [v for v in range(n) if not any(u == v for u, _ in edges)]
    outputs = set(sinks) | {v for v in range(n) if rng.random() < 0.1}
    r, s = [(1, 1), (2, 2), (3, 8), (2, 3)][seed % 4]
    return n, edges, sizes, outputs, r, s


@pytest.mark.parametrize("seed", range(80))
def test_budgeted_search_equals_brute_force(seed):
    n, edges, sizes, outputs, r, s = problem(seed)
    dag = Dag.from_edges(n, edges)
    (memory,) = block_memory(n, edges, sizes, sorted(outputs), [list(range(n))])
    # integer latencies add up exactly in any order, so ties in latency are ties, and the peak
    # decides; random ones tie only to within rounding, and only the latency is compared
    for exact, latency in ((True, tied_latency(seed, n)), (False, random_latency(seed))):
        unbounded = brute_force(n, edges, latency, r, s, sizes, outputs, math.inf)
        for budget in sorted({unbounded[1], unbounded[1] - 1, unbounded[1] - 4, sum(sizes)}):
            want = brute_force(n, edges, latency, r, s, sizes, outputs, budget)
            if math.isinf(want[0]):
                with pytest.raises(MemoryBudgetError) as err:
                    dynamic_program(dag, latency, r, s, memory=memory, memory_budget=budget)
                assert err.value.least > budget
                assert brute_force(n, edges, latency, r, s, sizes, outputs, err.value.least)[0] < math.inf
                continue
            got = dynamic_program(dag, latency, r, s, memory=memory, memory_budget=budget)
            assert got.latency == pytest.approx(want[0], rel=1e-12, abs=1e-12)
            assert got.peak <= budget
            if exact:
                assert (got.latency, got.peak) == want
            peak, needs = schedule_peak(n, edges, sizes, sorted(outputs), got.stages, got.kinds)
            assert (peak, needs) == (got.peak, got.memory)


@pytest.mark.parametrize("seed", range(20))
def test_sizes_without_a_budget_change_nothing(seed):
    n, edges, sizes, outputs, r, s = problem(seed)
    dag = Dag.from_edges(n, edges)
    (memory,) = block_memory(n, edges, sizes, sorted(outputs), [list(range(n))])
    latency = tied_latency(seed, n)
    got = dynamic_program(dag, latency, r, s, memory=memory)
    want = reference_dynamic_program(dag, latency, r, s)
    assert (got.stages, got.latencies, got.kinds) == (want.stages, want.latencies, want.kinds)
    assert (got.peak, got.memory) == schedule_peak(n, edges, sizes, sorted(outputs), got.stages, got.kinds)


def test_blocks_see_the_tensors_of_the_others():
    """Block by block, the needs add up to those of the whole schedule."""
    rng = random.Random(3)
    n = 12
    edges = [(u, v) for u, v in random_dag(rng, n, 0.3) if u < v] + [(0, 11)]  # ids topological
    sizes = [rng.randint(1, 9) for _ in range(n)]
    blocks = [list(range(0, 5)), list(range(5, 9)), list(range(9, 12))]
    outputs = [11, 3]
    mems = block_memory(n, edges, sizes, outputs, blocks)
    stages, kinds, needs = [], [], []
    for block, memory in zip(blocks, mems):
        index = {v: i for i, v in enumerate(block)}
        local = [(index[u], index[v]) for u, v in edges if u in index and v in index]
        res = dynamic_program(Dag.from_edges(len(block), local), random_latency(1), 2, 2, memory=memory)
        stages += [[[block[i] for i in g] for g in st] for st in res.stages]
        kinds += res.kinds
        needs += res.memory
    assert schedule_peak(n, edges, sizes, outputs, stages, kinds)[1] == needs


def test_a_budget_needs_sizes():
    with pytest.raises(ValueError, match="tensor sizes"):
        dynamic_program(Dag.from_edges(2, []), lambda g: 1.0, memory_budget=10)
