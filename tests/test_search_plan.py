"""The fast search (plans, NumPy, batched analytic costs) against the direct one it replaced
(``ios_tvm.core.reference``): the same stages, latencies and statistics, ties included."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
from test_search import additive_latency, random_dag, random_latency

from ios_tvm.core.dag import Dag
from ios_tvm.core.plan import PlanCache, build_plan, ideals
from ios_tvm.core.reference import reference_dynamic_program
from ios_tvm.core.search import candidate_stages, dynamic_program
from ios_tvm.core.stages import endings


def tied_latency(seed: int, n: int):
    """Small integer costs, longest group wins: most states have several equally fast endings, so
    the result depends on which one the search keeps."""
    rng = random.Random(seed)
    cost = [float(rng.randint(1, 3)) for _ in range(n)]
    return lambda groups: max(sum(cost[v] for v in g) for g in groups)


def same(a, b) -> bool:
    return (a.stages, a.latencies, a.kinds, a.stats) == (b.stages, b.latencies, b.kinds, b.stats)


def random_merges(rng: random.Random, n: int) -> list[int]:
    if n < 2:
        return []
    return [sum(1 << v for v in rng.sample(range(n), rng.randint(2, min(3, n)))) for _ in range(rng.randint(1, 3))]


CASES = []
for i in range(90):
    rng = random.Random(40_000 + i)
    n = 1 + i % 11
    CASES.append((i, n, random_dag(rng, n, [0.0, 0.15, 0.3, 0.5][i % 4]), [1, 2, 3, 4][(i // 4) % 4],
                  [1, 2, 3, 8][(i // 16) % 4], random_merges(rng, n) if i % 3 == 0 else []))


@pytest.mark.parametrize("case", CASES, ids=[f"dag{c[0]}-n{c[1]}-r{c[3]}-s{c[4]}" for c in CASES])
def test_fast_search_equals_the_direct_one(case):
    i, n, edges, r, s, merges = case
    dag = Dag.from_edges(n, edges)
    merge_lat = random_latency(9_000 + i) if merges else None
    for lat in (random_latency(i), additive_latency(i, n), tied_latency(i, n), lambda g: 1.0):
        want = reference_dynamic_program(dag, lat, r, s, merges, merge_lat)
        assert same(dynamic_program(dag, lat, r, s, merges, merge_lat), want)
        batched = dynamic_program(dag, lat, r, s, merges, merge_lat,
                                  stage_latencies=lambda t: [lat(t.groups(k)) for k in range(len(t))])
        assert same(batched, want)


@pytest.mark.parametrize("seed", range(25))
def test_plan_holds_every_state_and_each_ending_in_search_order(seed):
    rng = random.Random(seed)
    n = 2 + seed % 9
    dag = Dag.from_edges(n, random_dag(rng, n, 0.3))
    merges = random_merges(rng, n)
    r, s = [(1, 1), (2, 2), (3, 8), (4, 3)][seed % 4]
    plan = build_plan(dag, r, s, merges)
    closed = [m for m in range(1 << n) if dag.is_closed(m)]
    assert sorted(plan.states.tolist()) == closed
    assert [int(x).bit_count() for x in plan.states] == sorted(int(x).bit_count() for x in plan.states)
    table = plan.stages
    for i, state in enumerate(plan.states.tolist()):
        got = [(int(table.masks[k]), bool(table.merge[k])) for k in plan.stage[plan.ptr[i]:plan.ptr[i + 1]]]
        want = [(e, False) for e, _ in endings(dag, state, r, s)] if state else []
        want += [(m, True) for m in dict.fromkeys(merges) if state and m & state == m
                 and all(dag.desc[v] & state == 0 for v in range(n) if m >> v & 1)]
        assert got == want
        rests = plan.states[plan.rest[plan.ptr[i]:plan.ptr[i + 1]]].tolist()
        assert rests == [state & ~mask for mask, _ in got]
    for k in range(len(table)):  # groups: the components, by smallest node, each in order
        nodes = [v for v in range(n) if int(table.masks[k]) >> v & 1]
        groups = table.groups(k)
        assert sorted(v for g in groups for v in g) == nodes
        if not table.merge[k]:
            comps = dag.components(int(table.masks[k]))
            assert groups == tuple(dag.ordered(c) for c in comps)


def two_chains(length: int) -> list[tuple[int, int]]:
    """Two chains of ``length`` nodes, joined at the end by a last node."""
    edges = [(i, i + 1) for i in range(length - 1)] + [(length + i, length + i + 1) for i in range(length - 1)]
    return edges + [(length - 1, 2 * length), (2 * length - 1, 2 * length)]


@pytest.mark.parametrize("length", [12, 40])  # 25 nodes (int64 masks, sorted lookups), 81 (Python ints)
def test_wide_blocks_beyond_the_dense_and_int64_paths(length):
    n = 2 * length + 1
    dag = Dag.from_edges(n, two_chains(length))
    lat = tied_latency(length, n)
    want = reference_dynamic_program(dag, lat, 2, 2)
    got = dynamic_program(dag, lat, 2, 2)
    assert same(got, want)
    assert got.stats.states == (length + 1) ** 2 + 1


def test_plan_cache_shares_identical_blocks_and_stays_bounded():
    edges = random_dag(random.Random(5), 9, 0.3)
    plans = PlanCache()
    first = plans.get(Dag.from_edges(9, edges), 3, 8)
    assert plans.get(Dag.from_edges(9, edges), 3, 8) is first  # another Dag object, same DAG
    assert (plans.hits, plans.misses) == (1, 1)
    assert plans.get(Dag.from_edges(9, edges), 3, 2) is not first  # other limits, other plan
    small = PlanCache(max_transitions=first.transitions)
    small.get(Dag.from_edges(9, edges), 3, 8)
    small.get(Dag.from_edges(9, random_dag(random.Random(6), 9, 0.3)), 3, 8)
    assert len(small._plans) == 1  # the older plan went


def test_candidate_stages_are_the_stages_the_search_costs():
    dag = Dag.from_edges(8, random_dag(random.Random(11), 8, 0.25))
    asked = []
    dynamic_program(dag, lambda g: asked.append(g) or 1.0, 3, 4)
    assert sorted(candidate_stages(dag, 3, 4)) == sorted(asked)
    assert len(ideals(dag)) == dag.n + 1


def test_batched_latencies_are_checked():
    dag = Dag.from_edges(3, [(0, 2), (1, 2)])
    with pytest.raises(ValueError, match="finite"):
        dynamic_program(dag, lambda g: 1.0, stage_latencies=lambda t: [float("nan")] * len(t))
    with pytest.raises(ValueError, match="latencies for"):
        dynamic_program(dag, lambda g: 1.0, stage_latencies=lambda t: [1.0])


# -- the analytic cost model's batch against its formula, and the zoo against the direct search --

def fake_graph(n: int, edges, seed: int):
    from ios_tvm.ir.graph import Node, OpGraph

    rng = random.Random(seed)
    kinds = ["fused_conv2d_add_relu", "fused_matmul_add", "max_pool2d", "add"]
    nodes = []
    for v in range(n):
        shape = (1, rng.choice([8, 64, 256]), rng.choice([7, 14, 56]), rng.choice([7, 14, 56]))
        nodes.append(Node(v, f"lv{v}", rng.choice(kinds), "relax.call_tir", ((shape, "float32"),),
                          ((shape, "float32"),), rng.uniform(0, 5e9), rng.randint(1_000, 50_000_000)))
    return OpGraph(nodes, list(edges), "test")


@pytest.mark.parametrize("target", [{"kind": "cuda", "arch": "sm_90"}, {"kind": "llvm", "num-cores": 2}])
def test_analytic_batch_is_the_formula_to_the_bit(target):
    from ios_tvm.cost import AnalyticCostModel

    cost = AnalyticCostModel.for_target(target)
    for seed in range(4):
        n = 10
        edges = random_dag(random.Random(seed), n, 0.2)
        graph = fake_graph(n, edges, seed)
        table = build_plan(Dag.from_edges(n, edges), 3, 8).stages
        batch = np.asarray(cost.stage_latencies(graph, table))
        one_by_one = np.array([cost.stage_latency(graph, table.groups(k)) for k in range(len(table))])
        assert np.array_equal(batch, one_by_one)
        assert len(set(batch.tolist())) > 10  # not a constant


def _direct(dag, latency, r, s, merges=(), merge_latency=None, **_):
    return reference_dynamic_program(dag, latency, r, s, merges, merge_latency)


@pytest.mark.parametrize("target", [{"kind": "cuda", "arch": "sm_90"}, "llvm"])
def test_zoo_schedules_identical_to_the_direct_search(small_graphs, monkeypatch, target):
    from ios_tvm.cost import AnalyticCostModel
    from ios_tvm.driver.optimize import SearchConfig, search_graph

    cost = AnalyticCostModel.for_target(target)
    module = sys.modules["ios_tvm.driver.optimize"]
    for name, graph in small_graphs.items():
        config = SearchConfig(3, 8, 10 if name == "nasnet_a_large" else 16)
        got = search_graph(graph, cost, config)
        with monkeypatch.context() as m:
            m.setattr(module, "dynamic_program", _direct)
            want = search_graph(graph, cost, config)
        assert got == want, name
