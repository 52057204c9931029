"""Inception-v3 (Szegedy et al., 2016), the layer structure of torchvision's ``inception_v3``
(without the auxiliary head), batch norm folded into conv biases. Paper size: 299x299."""

from __future__ import annotations

import tvm

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, scaled


def inception_v3(batch_size: int = 1, image_size: int = 299, width: float = 1.0,
                 num_classes: int = 1000) -> tvm.IRModule:
    """Build Inception-v3.

    Parameters
    ----------
    batch_size, image_size
        Input is ``(batch_size, 3, image_size, image_size)``; ``image_size >= 75``.
    width
        Channel multiplier (1.0 = the paper's widths).
    """
    if image_size < 75:
        raise InvalidArgumentError(f"inception_v3 needs image_size >= 75, got {image_size}")
    c = lambda n: scaled(n, width)  # noqa: E731
    nb = NetBuilder("inception_v3", (batch_size, 3, image_size, image_size))
    with nb.scope() as x:
        x = nb.conv(x, c(32), 3, stride=2, padding="valid")
        x = nb.conv(x, c(32), 3, padding="valid")
        x = nb.conv(x, c(64), 3)
        x = nb.max_pool(x, 3, 2)
        x = nb.conv(x, c(80), 1)
        x = nb.conv(x, c(192), 3, padding="valid")
        x = nb.max_pool(x, 3, 2)

        def block_a(x, pool_features):
            b1 = nb.conv(x, c(64), 1)
            b5 = nb.conv(nb.conv(x, c(48), 1), c(64), 5)
            b3 = nb.conv(nb.conv(nb.conv(x, c(64), 1), c(96), 3), c(96), 3)
            bp = nb.conv(nb.avg_pool(x, 3, 1, 1), c(pool_features), 1)
            return nb.concat([b1, b5, b3, bp])

        def block_b(x):
            b3 = nb.conv(x, c(384), 3, stride=2, padding="valid")
            bd = nb.conv(nb.conv(nb.conv(x, c(64), 1), c(96), 3), c(96), 3, stride=2, padding="valid")
            bp = nb.max_pool(x, 3, 2)
            return nb.concat([b3, bd, bp])

        def block_c(x, c7):
            b1 = nb.conv(x, c(192), 1)
            b7 = nb.conv(nb.conv(nb.conv(x, c(c7), 1), c(c7), (1, 7)), c(192), (7, 1))
            bd = nb.conv(x, c(c7), 1)
            for k, ch in (((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192)):
                bd = nb.conv(bd, c(ch), k)
            bp = nb.conv(nb.avg_pool(x, 3, 1, 1), c(192), 1)
            return nb.concat([b1, b7, bd, bp])

        def block_d(x):
            b3 = nb.conv(nb.conv(x, c(192), 1), c(320), 3, stride=2, padding="valid")
            b7 = nb.conv(nb.conv(nb.conv(x, c(192), 1), c(192), (1, 7)), c(192), (7, 1))
            b7 = nb.conv(b7, c(192), 3, stride=2, padding="valid")
            bp = nb.max_pool(x, 3, 2)
            return nb.concat([b3, b7, bp])

        def block_e(x):
            b1 = nb.conv(x, c(320), 1)
            b3 = nb.conv(x, c(384), 1)
            b3 = nb.concat([nb.conv(b3, c(384), (1, 3)), nb.conv(b3, c(384), (3, 1))])
            bd = nb.conv(nb.conv(x, c(448), 1), c(384), 3)
            bd = nb.concat([nb.conv(bd, c(384), (1, 3)), nb.conv(bd, c(384), (3, 1))])
            bp = nb.conv(nb.avg_pool(x, 3, 1, 1), c(192), 1)
            return nb.concat([b1, b3, bd, bp])

        for pf in (32, 64, 64):
            x = block_a(x, pf)
        x = block_b(x)
        for c7 in (128, 160, 160, 192):
            x = block_c(x, c7)
        x = block_d(x)
        x = block_e(x)
        x = block_e(x)
        nb.output(nb.classifier(x, num_classes))
    return nb.module()
