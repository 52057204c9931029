"""SqueezeNet v1.0 (Iandola et al., 2016) with the paper's *simple bypass* (identity shortcuts
around fire3, fire5, fire7 and fire9), as IOS evaluates it. Paper size: 224x224."""

from __future__ import annotations

import tvm
from tvm.relax import op as R

from ..errors import InvalidArgumentError
from ._builder import NetBuilder, scaled

# (squeeze, expand1x1, expand3x3) for fire2..fire9
_FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]


def squeezenet(batch_size: int = 1, image_size: int = 224, width: float = 1.0,
               num_classes: int = 1000, bypass: bool = True) -> tvm.IRModule:
    """Build SqueezeNet (``image_size >= 64``; ``bypass=False`` gives plain v1.0)."""
    if image_size < 64:
        raise InvalidArgumentError(f"squeezenet needs image_size >= 64, got {image_size}")
    c = lambda n: scaled(n, width)  # noqa: E731
    nb = NetBuilder("squeezenet", (batch_size, 3, image_size, image_size))
    with nb.scope() as x:
        x = nb.conv(x, c(96), 7, stride=2, padding="valid")
        x = nb.max_pool(x, 3, 2, ceil_mode=True)
        for i, (sq, e1, e3) in enumerate(_FIRES, start=2):
            s = nb.conv(x, c(sq), 1)
            y = nb.concat([nb.conv(s, c(e1), 1), nb.conv(s, c(e3), 3)])
            if bypass and i in (3, 5, 7, 9):
                y = nb.add(y, x)
            x = y
            if i in (4, 8):
                x = nb.max_pool(x, 3, 2, ceil_mode=True)
        x = nb.conv(x, num_classes, 1)
        n = nb.shape(x)[0]
        x = nb.emit(R.nn.adaptive_avg_pool2d(x, output_size=1))
        nb.output(nb.emit(R.reshape(x, (n, num_classes))))
    return nb.module()
