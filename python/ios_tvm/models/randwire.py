"""RandWire-WS (Xie et al., 2019), small regime: random-graph stages whose nodes aggregate their
inputs by sum, then ReLU -> 3x3 separable conv -> (folded) BN. Watts-Strogatz graphs
WS(N, K=4, P=0.75) from networkx with a fixed seed per stage; edges point from lower to higher
node index; nodes without inputs read the stage input (with stride 2), the stage output is the
mean of the nodes without outputs. Paper size: 224x224, C=78, N=32.
"""

from __future__ import annotations

import networkx as nx
import tvm

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, scaled


def ws_dag(num_nodes: int, k: int, p: float, seed: int) -> list[tuple[int, int]]:
    """Edges of a connected Watts-Strogatz graph oriented from lower to higher index."""
    g = nx.connected_watts_strogatz_graph(num_nodes, k, p, tries=200, seed=seed)
    return sorted((min(u, v), max(u, v)) for u, v in g.edges())


def randwire(batch_size: int = 1, image_size: int = 224, channels: int = 78, num_nodes: int = 32,
             num_stages: int = 3, k: int = 4, p: float = 0.75, seed: int = 0, width: float = 1.0,
             num_classes: int = 1000) -> tvm.IRModule:
    """Build RandWire (small regime).

    Parameters
    ----------
    channels
        ``C`` of the paper (78 in the small regime); ``width`` multiplies it.
    num_nodes
        ``N`` nodes per random stage (32); ``num_stages`` random stages (3: conv3..conv5).
    k, p, seed
        Watts-Strogatz parameters; stage ``i`` uses ``seed + i``.
    """
    if num_nodes <= k:
        raise InvalidArgumentError(f"randwire needs num_nodes > k, got num_nodes={num_nodes}, k={k}")
    cc = scaled(channels, width)
    nb = NetBuilder("randwire", (batch_size, 3, image_size, image_size))
    with nb.scope() as x:
        x = nb.conv(x, max(1, cc // 2), 3, stride=2)  # conv1
        x = nb.conv(x, cc, 3, stride=2)  # conv2
        for stage in range(num_stages):
            out_ch = cc * 2 ** stage
            edges = ws_dag(num_nodes, k, p, seed + stage)
            preds: dict[int, list[int]] = {v: [] for v in range(num_nodes)}
            has_succ = set()
            for u, v in edges:
                preds[v].append(u)
                has_succ.add(u)
            outs: dict[int, object] = {}
            for v in range(num_nodes):
                if preds[v]:
                    agg = outs[preds[v][0]]
                    for u in preds[v][1:]:
                        agg = nb.add(agg, outs[u])
                    outs[v] = nb.sep_conv(nb.relu(agg), out_ch, 3)
                else:
                    outs[v] = nb.sep_conv(nb.relu(x), out_ch, 3, stride=2)
            sinks = [outs[v] for v in range(num_nodes) if v not in has_succ]
            y = sinks[0]
            for s in sinks[1:]:
                y = nb.add(y, s)
            x = nb.scale(y, 1.0 / len(sinks)) if len(sinks) > 1 else y
        x = nb.conv(nb.relu(x), 1280, 1)
        nb.output(nb.classifier(x, num_classes))
    return nb.module()
