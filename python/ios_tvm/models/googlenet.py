"""GoogLeNet (Szegedy et al., 2015) with torchvision's layer structure (its third branch uses a
3x3 conv, ceil-mode pooling), no auxiliary heads, batch norm folded. Paper size: 224x224."""

from __future__ import annotations

import tvm

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, scaled

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per inception module
_CONFIG = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(batch_size: int = 1, image_size: int = 224, width: float = 1.0,
              num_classes: int = 1000) -> tvm.IRModule:
    """Build GoogLeNet (``image_size >= 32``, ``width`` multiplies every channel count)."""
    if image_size < 32:
        raise InvalidArgumentError(f"googlenet needs image_size >= 32, got {image_size}")
    c = lambda n: scaled(n, width)  # noqa: E731
    nb = NetBuilder("googlenet", (batch_size, 3, image_size, image_size))
    with nb.scope() as x:
        x = nb.conv(x, c(64), 7, stride=2)
        x = nb.max_pool(x, 3, 2, ceil_mode=True)
        x = nb.conv(x, c(64), 1)
        x = nb.conv(x, c(192), 3)
        x = nb.max_pool(x, 3, 2, ceil_mode=True)

        def inception(x, cfg):
            o1, r3, o3, r5, o5, pp = (c(v) for v in cfg)
            b1 = nb.conv(x, o1, 1)
            b2 = nb.conv(nb.conv(x, r3, 1), o3, 3)
            b3 = nb.conv(nb.conv(x, r5, 1), o5, 3)
            b4 = nb.conv(nb.max_pool(x, 3, 1, 1, ceil_mode=True), pp, 1)
            return nb.concat([b1, b2, b3, b4])

        for name in ("3a", "3b"):
            x = inception(x, _CONFIG[name])
        x = nb.max_pool(x, 3, 2, ceil_mode=True)
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = inception(x, _CONFIG[name])
        x = nb.max_pool(x, 2, 2, ceil_mode=True)
        for name in ("5a", "5b"):
            x = inception(x, _CONFIG[name])
        nb.output(nb.classifier(x, num_classes))
    return nb.module()
