"""The IOS dynamic program against brute force, and the baseline schedules."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random

import pytest

from ios_tvm.core.dag import Dag
from ios_tvm.core.search import (
    check_stages,
    dynamic_program,
    greedy,
    schedule_latency,
    sequential,
    solve,
)


def random_dag(rng: random.Random, n: int, density: float) -> list[tuple[int, int]]:
    """Random DAG on n nodes: each forward pair (in a random order) is an edge with prob density."""
    order = list(range(n))
    rng.shuffle(order)
    return [(order[i], order[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < density]


def components(nodes: frozenset[int], edges) -> list[frozenset[int]]:
    """Weakly connected components by plain union-find (independent of stages.Dag)."""
    parent = {v: v for v in nodes}

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for u, v in edges:
        if u in nodes and v in nodes:
            parent[find(u)] = find(v)
    comps: dict[int, set[int]] = {}
    for v in nodes:
        comps.setdefault(find(v), set()).add(v)
    return [frozenset(c) for c in comps.values()]


def topo_in(group, edges, n):
    """Order a group's nodes topologically (Kahn, smallest first) without stages.Dag."""
    group = set(group)
    indeg = {v: 0 for v in group}
    for u, v in edges:
        if u in group and v in group:
            indeg[v] += 1
    out = []
    while indeg:
        v = min(x for x, d in indeg.items() if d == 0)
        out.append(v)
        del indeg[v]
        for a, b in edges:
            if a == v and b in indeg:
                indeg[b] -= 1
    return tuple(out)


def next_stages(n, edges, done: frozenset[int], r, s):
    """Every valid next stage after `done`, by trying every subset of the remaining nodes."""
    preds = {v: {u for u, w in edges if w == v} for v in range(n)}
    rest = [v for v in range(n) if v not in done]
    for k in range(1, len(rest) + 1):
        for subset in itertools.combinations(rest, k):
            stage = frozenset(subset)
            if any(not preds[v] <= (done | stage) for v in stage):
                continue  # done | stage must be predecessor-closed
            comps = components(stage, edges)
            if len(comps) > s or any(len(c) > r for c in comps):
                continue
            groups = tuple(sorted((topo_in(c, edges, n) for c in comps), key=min))
            yield stage, groups


def brute_force(n, edges, latency, r, s) -> float:
    """Minimum summed latency over every stage sequence (forward search, memoised on the done set)."""

    @functools.lru_cache(maxsize=None)
    def best(done: frozenset[int]) -> float:
        if len(done) == n:
            return 0.0
        return min(latency(groups) + best(done | stage) for stage, groups in next_stages(n, edges, done, r, s))

    return best(frozenset())


def exhaustive(n, edges, latency, r, s) -> float:
    """Minimum over literally every stage sequence (no memo): only for tiny graphs."""
    def walk(done):
        if len(done) == n:
            return 0.0
        return min(latency(groups) + walk(done | stage) for stage, groups in next_stages(n, edges, done, r, s))

    return walk(frozenset())


def random_latency(seed: int):
    """A stage latency that is an arbitrary (hash-random) function of the stage: not decomposable."""
    def latency(groups):
        key = f"{seed}:{groups}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little") / 2**32 + 0.01
    return latency


def additive_latency(seed: int, n: int):
    """Stage = longest group (sum of node costs) + a per-group overhead: the usual concurrency model."""
    rng = random.Random(seed)
    cost = [rng.uniform(0.1, 2.0) for _ in range(n)]
    def latency(groups):
        return max(sum(cost[v] for v in g) for g in groups) + 0.05 * len(groups)
    return latency


CASES = []
for i in range(320):
    rng = random.Random(1000 + i)
    n = 1 + i % 9
    density = [0.0, 0.15, 0.3, 0.5, 0.8][i % 5]
    r = [1, 2, 3, 3, 4][(i // 5) % 5]
    s = [1, 2, 3, 8][(i // 25) % 4]
    CASES.append((i, n, random_dag(rng, n, density), r, s))


@pytest.mark.parametrize("case", CASES, ids=[f"dag{c[0]}-n{c[1]}-r{c[3]}-s{c[4]}" for c in CASES])
def test_dp_equals_brute_force(case):
    i, n, edges, r, s = case
    for latency in (random_latency(i), additive_latency(i, n)):
        stages = solve(n, edges, latency, max_group_size=r, max_num_groups=s)
        check_stages(n, edges, stages, max_group_size=r, max_num_groups=s)
        got = schedule_latency(stages, latency)
        want = brute_force(n, edges, latency, r, s)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_brute_force_memo_equals_exhaustive(seed):
    """The memoised reference itself agrees with walking every sequence on tiny graphs."""
    rng = random.Random(seed)
    n = 1 + seed % 5
    edges = random_dag(rng, n, 0.3)
    lat = random_latency(seed)
    assert brute_force(n, edges, lat, 2, 2) == pytest.approx(exhaustive(n, edges, lat, 2, 2))


def test_stage_groups_are_components_in_topological_order():
    seen = []

    def latency(groups):
        seen.append(groups)
        return 1.0

    edges = [(0, 1), (1, 2), (3, 4), (0, 5)]
    solve(6, edges, latency, max_group_size=3, max_num_groups=3)
    for groups in seen:
        nodes = frozenset(v for g in groups for v in g)
        assert sorted(map(frozenset, groups), key=min) == sorted(components(nodes, edges), key=min)
        assert list(groups) == sorted(groups, key=min)
        for g in groups:
            assert g == topo_in(g, edges, 6)


def test_each_distinct_stage_is_costed_once():
    calls = []
    dag = Dag.from_edges(7, random_dag(random.Random(3), 7, 0.3))
    result = dynamic_program(dag, lambda g: calls.append(g) or 1.0, 3, 8)
    assert len(calls) == len(set(calls)) == result.stats.stages
    assert result.stats.states >= 2 and result.stats.transitions >= result.stats.stages


def test_limits_are_validated():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_group_size"):
            solve(2, [], lambda g: 1.0, max_group_size=bad)
        with pytest.raises(ValueError, match="max_num_groups"):
            solve(2, [], lambda g: 1.0, max_num_groups=bad)


def test_bad_graphs_and_latencies():
    with pytest.raises(ValueError, match="cycle"):
        solve(2, [(0, 1), (1, 0)], lambda g: 1.0)
    with pytest.raises(ValueError, match="outside"):
        solve(2, [(0, 5)], lambda g: 1.0)
    with pytest.raises(ValueError, match="finite"):
        solve(2, [], lambda g: math.nan)
    assert solve(0, [], lambda g: 1.0) == []


def test_sequential_and_greedy_are_valid():
    rng = random.Random(7)
    for n in range(1, 12):
        edges = random_dag(rng, n, 0.3)
        seq = sequential(n, edges)
        check_stages(n, edges, seq, max_group_size=1, max_num_groups=1)
        assert len(seq) == n
        g = greedy(n, edges)
        check_stages(n, edges, g, max_group_size=1)
        g3 = greedy(n, edges, max_num_groups=3)
        check_stages(n, edges, g3, max_group_size=1, max_num_groups=3)


def test_greedy_takes_all_ready_nodes():
    assert greedy(4, [(0, 3), (1, 3), (2, 3)]) == [[[0], [1], [2]], [[3]]]
    assert greedy(4, [(0, 3), (1, 3), (2, 3)], max_num_groups=2) == [[[0], [1]], [[2]], [[3]]]


def test_check_stages_rejects_invalid():
    edges = [(0, 1)]
    with pytest.raises(ValueError, match="concurrently"):
        check_stages(2, edges, [[[0], [1]]])
    with pytest.raises(ValueError, match="before its input"):
        check_stages(2, edges, [[[1]], [[0]]])
    with pytest.raises(ValueError, match="before its input"):
        check_stages(2, edges, [[[1, 0]]])
    with pytest.raises(ValueError, match="twice"):
        check_stages(2, edges, [[[0]], [[0, 1]]])
    with pytest.raises(ValueError, match="no stage"):
        check_stages(2, edges, [[[0]]])


def test_concurrency_is_chosen_when_it_pays():
    # Two independent chains; running them side by side halves the time under the max model.
    lat = lambda groups: max(len(g) for g in groups) + 0.01 * len(groups)
    stages = solve(4, [(0, 1), (2, 3)], lat, max_group_size=2, max_num_groups=2)
    assert stages == [[[0, 1], [2, 3]]]
    seq_only = solve(4, [(0, 1), (2, 3)], lat, max_group_size=1, max_num_groups=1)
    assert len(seq_only) == 4


def brute_force_with_merges(n, edges, latency, merge_lat, merges, r, s) -> float:
    """Forward search over every stage sequence, merge stages included."""
    preds = {v: {u for u, w in edges if w == v} for v in range(n)}

    @functools.lru_cache(maxsize=None)
    def best(done: frozenset[int]) -> float:
        if len(done) == n:
            return 0.0
        options = [latency(groups) + best(done | stage) for stage, groups in next_stages(n, edges, done, r, s)]
        for m in merges:
            if not (m & done) and all(preds[v] <= done for v in m):
                options.append(merge_lat(tuple(sorted(m))) + best(done | m))
        return min(options)

    return best(frozenset())


@pytest.mark.parametrize("seed", range(120))
def test_dp_with_merge_stages_equals_brute_force(seed):
    rng = random.Random(5000 + seed)
    n = 2 + seed % 7
    edges = random_dag(rng, n, [0.1, 0.3, 0.5][seed % 3])
    merges = set()
    for _ in range(rng.randint(1, 4)):
        k = rng.randint(2, min(3, n))
        merges.add(frozenset(rng.sample(range(n), k)))
    merges = sorted(merges, key=sorted)
    r, s = [(1, 1), (2, 2), (3, 8)][seed % 3]
    lat = random_latency(seed)
    merge_lat = random_latency(10_000 + seed)
    dag = Dag.from_edges(n, edges)
    masks = [sum(1 << v for v in m) for m in merges]
    result = dynamic_program(dag, lat, r, s, masks, merge_lat)
    check_stages(n, edges, result.stages)
    total = 0.0
    for stage, kind in zip(result.stages, result.kinds):
        if kind == "merge":
            assert frozenset(stage[0]) in merges
            total += merge_lat(tuple(sorted(stage[0])))
        else:
            assert len(stage) <= s and all(len(g) <= r for g in stage)
            total += lat(tuple(tuple(g) for g in stage))
    assert total == pytest.approx(result.latency)
    assert total == pytest.approx(brute_force_with_merges(n, edges, lat, merge_lat, merges, r, s), rel=1e-12)
