"""Block partition at cut points and splitting of large blocks."""

from __future__ import annotations

import random

import pytest

from ios_tvm.core.blocks import cut_points, partition, sub_dag
from ios_tvm.core.search import check_stages, solve


def random_topo_dag(rng, n, density):
    return [(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < density]


def test_chain_every_node_is_a_cut_point():
    edges = [(i, i + 1) for i in range(5)]
    assert cut_points(6, edges) == list(range(6))
    assert partition(6, edges) == [[i] for i in range(6)]


def test_inception_like_block():
    # 0 -> {1, 2 -> 3, 4} -> 5 -> 6
    edges = [(0, 1), (0, 2), (2, 3), (0, 4), (1, 5), (3, 5), (4, 5), (5, 6)]
    assert cut_points(7, edges) == [0, 5, 6]
    assert partition(7, edges) == [[0], [1, 2, 3, 4, 5], [6]]


def test_independent_sources_have_no_cut_point():
    assert cut_points(3, []) == []
    assert partition(3, []) == [[0, 1, 2]]


@pytest.mark.parametrize("seed", range(40))
def test_split_blocks_keep_dependencies(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    edges = random_topo_dag(rng, n, rng.choice([0.05, 0.1, 0.3]))
    limit = rng.randint(1, 8)
    blocks = partition(n, edges, limit)
    assert sorted(v for b in blocks for v in b) == list(range(n))
    assert all(1 <= len(b) <= limit for b in blocks)
    where = {v: i for i, b in enumerate(blocks) for v in b}
    assert all(where[u] <= where[v] for u, v in edges)
    # solving block by block gives a valid schedule of the whole graph
    stages = []
    for b in blocks:
        k, local = sub_dag(b, edges)
        stages += [[[b[i] for i in g] for g in st] for st in solve(k, local, lambda g: 1.0)]
    check_stages(n, edges, stages, 3, 8)


def test_bad_input():
    with pytest.raises(ValueError, match="topological"):
        partition(2, [(1, 0)])
    with pytest.raises(ValueError, match="max_block_size"):
        partition(2, [], 0)
    assert partition(0, []) == []
