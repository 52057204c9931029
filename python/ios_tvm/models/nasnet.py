"""NASNet-A (Zoph et al., 2018), the cell structure of TF-slim's ``nasnet.py`` (normal and
reduction cells, ``separable_kxk_2`` = two ReLU-sepconv-BN, factorized reduction of the previous
cell's output), batch norm folded, no auxiliary head, no drop-path.
Paper size ("large"): 331x331, 6 normal cells per stack, penultimate filters 4032 (6@4032).
"""

from __future__ import annotations

import tvm

from ..errors import InvalidArgumentError
from ._builder import NetBuilder

_NORMAL = (
    ["sep5", "sep3", "sep5", "sep3", "avg3", "none", "avg3", "avg3", "sep3", "none"],
    [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
    [1, 0, 0, 0, 0, 0, 0],
)
_REDUCTION = (
    ["sep5", "sep7", "max3", "sep7", "avg3", "sep5", "none", "avg3", "sep3", "max3"],
    [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
    [1, 1, 1, 0, 0, 0, 0],
)


def nasnet_a_large(batch_size: int = 1, image_size: int = 331, num_cells: int = 6,
                   penultimate_filters: int = 4032, stem_filters: int = 96,
                   num_classes: int = 1000) -> tvm.IRModule:
    """Build NASNet-A.

    Parameters
    ----------
    num_cells
        Normal cells per stack (3 stacks; the paper's "6@4032" has 6).
    penultimate_filters
        Channels of the last cell's output (4032); must be a multiple of 24.
    """
    if penultimate_filters % 24:
        raise InvalidArgumentError(f"penultimate_filters must be a multiple of 24, got {penultimate_filters}")
    if num_cells < 1:
        raise InvalidArgumentError(f"num_cells must be >= 1, got {num_cells}")
    if image_size < 3:
        raise InvalidArgumentError(f"nasnet_a_large needs image_size >= 3, got {image_size}")
    filters = penultimate_filters // 24
    nb = NetBuilder("nasnet_a_large", (batch_size, 3, image_size, image_size))

    def op(kind: str, x, f: int, stride: int):
        if kind.startswith("sep"):
            k = int(kind[3:])
            for i in range(2):
                x = nb.sep_conv(nb.relu(x), f, k, stride=stride if i == 0 else 1)
            return x
        if kind.startswith("avg"):
            return nb.avg_pool(x, 3, stride, 1)
        if kind.startswith("max"):
            return nb.max_pool(x, 3, stride, 1)
        if stride != 1:  # "none" on a reduced input: strided 1x1 conv keeps shapes aligned
            return nb.conv(nb.relu(x), f, 1, stride=stride, relu=False)
        return x

    def factorized_reduction(x, f: int):
        a = nb.conv(nb.avg_pool(x, 1, 2), f // 2, 1, relu=False, bias=False)
        b = nb.conv(nb.avg_pool(nb.shift_hw(x), 1, 2), f - f // 2, 1, relu=False, bias=False)
        return nb.concat([a, b])

    def cell(x, prev, f: int, spec, stride: int):
        ops, idx, used = spec
        if prev is None:
            prev = x
        if nb.shape(prev)[2] != nb.shape(x)[2]:
            prev = factorized_reduction(nb.relu(prev), f)
        elif nb.shape(prev)[1] != f:
            prev = nb.conv(nb.relu(prev), f, 1, relu=False)
        cur = nb.conv(nb.relu(x), f, 1, relu=False)
        states = [cur, prev]
        used = list(used)
        for i in range(5):
            pair = []
            for j in (2 * i, 2 * i + 1):
                h = idx[j]
                pair.append(op(ops[j], states[h], f, stride if h < 2 else 1))
            states.append(nb.add(pair[0], pair[1]))
        return nb.concat([s for s, u in zip(states, used) if not u])

    with nb.scope() as x:
        stem = nb.conv(x, stem_filters, 3, stride=2, padding="valid", relu=False)
        s0 = cell(stem, None, filters // 4, _REDUCTION, 2)
        s1 = cell(s0, stem, filters // 2, _REDUCTION, 2)
        outputs = [s0, s1]
        scale = 1
        for stack in range(3):
            if stack > 0:
                scale *= 2
                outputs.append(cell(outputs[-1], outputs[-2], filters * scale, _REDUCTION, 2))
            for _ in range(num_cells):
                outputs.append(cell(outputs[-1], outputs[-2], filters * scale, _NORMAL, 1))
        nb.output(nb.classifier(nb.relu(outputs[-1]), num_classes))
    return nb.module()
