"""Real CNNs written as ONNX graphs with ``onnx.helper``, layer for layer as the ONNX model zoo
has them, with random weights: SqueezeNet 1.0 (``squeezenet1.0``) and GoogLeNet
(``inception_v1``, the BVLC model: LRN, ``1x1`` / ``3x3_reduce`` / ``5x5_reduce`` branches on
one input). Convolutions carry their bias as the third ``Conv`` input, as in the zoo.

Layers, channel counts, kernels, strides and paddings are the zoo models'; the max pools round
up as Caffe's do (``ceil_mode`` for SqueezeNet, ``pads=[0, 0, 1, 1]`` for GoogLeNet) and both
heads end in flatten + softmax. Only the image is smaller than 224x224 (an argument), so that
tests build and run fast; GoogLeNet's final average pool covers the whole last feature map
(7x7 at 224) whatever its size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class OnnxNet:
    """Append ONNX nodes one at a time; weights are random initializers (He-normal)."""

    def __init__(self, name: str, input_shape: Sequence[int], seed: int = 0) -> None:
        self.name = name
        self.input_shape = [int(d) for d in input_shape]
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.channels: dict[str, int] = {"x": self.input_shape[1]}
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, arr: np.ndarray, prefix: str = "w") -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: Sequence[str], channels: int, **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        self.channels[out] = channels
        return out

    def conv(self, x: str, out_channels: int, kernel: int, stride: int = 1, pad: int = 0,
             relu: bool = True) -> str:
        """``Conv`` with its bias as the third input (as the zoo models have it) (+ ``Relu``)."""
        cin = self.channels[x]
        w = self.rng.normal(0, np.sqrt(2 / (cin * kernel * kernel)), (out_channels, cin, kernel, kernel))
        b = self.rng.normal(0, 0.1, out_channels)
        y = self.node("Conv", [x, self.const(w.astype(np.float32)), self.const(b.astype(np.float32), "b")],
                      out_channels, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
        return self.node("Relu", [y], out_channels) if relu else y

    def max_pool(self, x: str, kernel: int, stride: int, pads: Sequence[int] = (0, 0, 0, 0),
                 ceil: bool = False) -> str:
        return self.node("MaxPool", [x], self.channels[x], kernel_shape=[kernel, kernel],
                         strides=[stride, stride], pads=list(pads), ceil_mode=int(ceil))

    def lrn(self, x: str) -> str:
        return self.node("LRN", [x], self.channels[x], size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def concat(self, xs: Sequence[str]) -> str:
        return self.node("Concat", xs, sum(self.channels[x] for x in xs), axis=1)

    def model(self, y: str, out_shape: Sequence[int]) -> bytes:
        """The serialized, checked model with input ``x`` and output ``y``."""
        graph = helper.make_graph(self.nodes, self.name,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.input_shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(out_shape))],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model)
        return model.SerializeToString()


def _fire(net: OnnxNet, x: str, squeeze: int, expand: int) -> str:
    s = net.conv(x, squeeze, 1)
    return net.concat([net.conv(s, expand, 1), net.conv(s, expand, 3, pad=1)])


#: (squeeze, expand) channels of fire2 .. fire9, with a max pool before fire4 and fire8 is done
SQUEEZENET_FIRES = [(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)]


def squeezenet1_0(image_size: int = 224, seed: int = 0) -> bytes:
    """SqueezeNet 1.0: conv1 (96, 7x7/2), max pool, fire2-4, max pool, fire5-8, max pool, fire9,
    dropout, conv10 (1000, 1x1) + relu, global average pool, flatten, softmax. Every fire
    module's ``expand1x1`` and ``expand3x3`` read its ``squeeze1x1``."""
    net = OnnxNet("squeezenet1.0", (1, 3, image_size, image_size), seed)
    y = net.max_pool(net.conv("x", 96, 7, stride=2), 3, 2, ceil=True)
    for i, (squeeze, expand) in enumerate(SQUEEZENET_FIRES):
        if i in (3, 7):
            y = net.max_pool(y, 3, 2, ceil=True)
        y = _fire(net, y, squeeze, expand)
    y = net.node("Dropout", [y], net.channels[y])
    y = net.conv(y, 1000, 1)
    y = net.node("GlobalAveragePool", [y], 1000)
    y = net.node("Flatten", [y], 1000, axis=1)
    return net.model(net.node("Softmax", [y], 1000, axis=1), (1, 1000))


#: GoogLeNet inception modules: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); "pool" marks
#: the stride-2 max pools between them
INCEPTION_V1_MODULES = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


def _inception(net: OnnxNet, x: str, spec: tuple[int, ...]) -> str:
    c1, r3, c3, r5, c5, proj = spec
    b1 = net.conv(x, c1, 1)
    b3 = net.conv(net.conv(x, r3, 1), c3, 3, pad=1)
    b5 = net.conv(net.conv(x, r5, 1), c5, 5, pad=2)
    bp = net.conv(net.max_pool(x, 3, 1, pads=(1, 1, 1, 1)), proj, 1)
    return net.concat([b1, b3, b5, bp])


def inception_v1(image_size: int = 224, seed: int = 0) -> bytes:
    """GoogLeNet (BVLC): conv1 (64, 7x7/2), max pool, LRN, conv2 reduce (64, 1x1) and conv2
    (192, 3x3), LRN, max pool, inception 3a-3b, max pool, 4a-4e, max pool, 5a-5b, average pool
    over the last feature map, dropout, flatten, fully connected (1000), softmax. The caffe max
    pools round up: ``pads=[0, 0, 1, 1]`` as in the zoo's model."""
    net = OnnxNet("inception_v1", (1, 3, image_size, image_size), seed)
    caffe_pool = dict(kernel=3, stride=2, pads=(0, 0, 1, 1))
    y = net.lrn(net.max_pool(net.conv("x", 64, 7, stride=2, pad=3), **caffe_pool))
    y = net.conv(net.conv(y, 64, 1), 192, 3, pad=1)
    y = net.max_pool(net.lrn(y), **caffe_pool)
    size = _pooled(_pooled((image_size + 1) // 2))
    for spec in INCEPTION_V1_MODULES:
        if spec == "pool":
            y, size = net.max_pool(y, **caffe_pool), _pooled(size)
        else:
            y = _inception(net, y, spec)  # type: ignore[arg-type]
    y = net.node("AveragePool", [y], net.channels[y], kernel_shape=[size, size], strides=[1, 1])
    y = net.node("Dropout", [y], net.channels[y])
    y = net.node("Flatten", [y], net.channels[y], axis=1)
    fc = net.rng.normal(0, np.sqrt(1 / net.channels[y]), (net.channels[y], 1000)).astype(np.float32)
    y = net.node("Gemm", [y, net.const(fc), net.const(np.zeros(1000, np.float32), "b")], 1000)
    return net.model(net.node("Softmax", [y], 1000, axis=1), (1, 1000))


def _pooled(size: int) -> int:
    """Spatial size after a 3x3/2 max pool padded ``[0, 0, 1, 1]``."""
    return (size + 1 - 3) // 2 + 1
