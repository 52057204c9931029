"""Models imported through TVM's ONNX frontend (batch norm, LRN, dropout, softmax, flatten,
concat, pads, a bypass add) schedule, build and match both the sequential TVM build and
onnxruntime; the zoo's SqueezeNet 1.0 and GoogLeNet get merge stages."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm.core.schedule import Schedule

onnx = pytest.importorskip("onnx", reason="the test extra installs onnx")
ort = pytest.importorskip("onnxruntime", reason="the test extra installs onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ios_tvm.driver.optimize import SearchConfig  # noqa: E402

from onnx_models import (  # noqa: E402
    INCEPTION_V1_MODULES,
    SQUEEZENET_FIRES,
    inception_v1,
    squeezenet1_0,
)


def _inception_like(rng: np.random.Generator) -> bytes:
    """Two-branch CNN block: conv-BN-relu | pad-conv-relu | maxpool, concat, flatten, gemm, softmax."""
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    c = 8
    nodes = [
        helper.make_node("Conv", ["x", const("w1", rng.normal(0, 0.3, (c, 3, 1, 1)))], ["a0"]),
        helper.make_node("BatchNormalization", ["a0", const("g", rng.uniform(0.5, 1.5, c)), const("b", rng.normal(0, 0.1, c)),
                                                const("m", rng.normal(0, 0.1, c)), const("v", rng.uniform(0.5, 1.5, c))], ["a1"]),
        helper.make_node("Relu", ["a1"], ["a"]),
        helper.make_node("Pad", ["x", "pads"], ["xp"]),
        helper.make_node("Conv", ["xp", const("w2", rng.normal(0, 0.3, (c, 3, 3, 3)))], ["b0"]),
        helper.make_node("Relu", ["b0"], ["bb"]),
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Concat", ["a", "bb", "p"], ["cat"], axis=1),
        helper.make_node("Flatten", ["cat"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", const("fc", rng.normal(0, 0.05, (19 * 8 * 8, 10))), const("fcb", rng.normal(0, 0.1, 10))], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    graph = helper.make_graph(nodes, "two_branch",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _fire_like(rng: np.random.Generator) -> bytes:
    """SqueezeNet-style fire module with a bypass: conv-LRN, squeeze, expand 1x1 | 3x3, concat,
    add (bypass), dropout, global average pool, flatten."""
    inits = []

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr).astype(dtype), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("w0", rng.normal(0, 0.3, (8, 3, 3, 3)))], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("LRN", ["r0"], ["n0"], size=3, alpha=1e-3, beta=0.75, bias=1.0),
        helper.make_node("Conv", ["n0", const("ws", rng.normal(0, 0.3, (4, 8, 1, 1))), const("bs", rng.normal(0, 0.1, 4))], ["s0"]),
        helper.make_node("Relu", ["s0"], ["s"]),
        helper.make_node("Conv", ["s", const("we1", rng.normal(0, 0.3, (4, 4, 1, 1)))], ["e1"]),
        helper.make_node("Conv", ["s", const("we3", rng.normal(0, 0.3, (4, 4, 3, 3)))], ["e3"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["rc"]),
        helper.make_node("Add", ["rc", "n0"], ["byp"]),
        helper.make_node("Dropout", ["byp"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "fire",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("make", [_inception_like, _fire_like], ids=["inception_like", "fire_like"])
def test_onnx_model_schedules_builds_and_matches(make):
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(0)
    blob = make(rng)
    mod = from_onnx(onnx.load_from_string(blob), keep_params_in_input=False)
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    graph = ios_tvm.extract_graph(mod, "llvm")
    ios = ios_tvm.optimize(mod, {"kind": "cuda", "arch": "sm_90"}, graph=graph)
    greedy = Schedule.greedy(graph)
    assert greedy.max_streams >= 2

    def run(sched):
        vm = relax.VirtualMachine(ios_tvm.build(mod, "llvm", sched), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    seq = run(None)
    want = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(seq, want, rtol=1e-4, atol=1e-6)
    for sched in (ios, greedy):
        np.testing.assert_allclose(run(sched), seq, rtol=1e-5, atol=1e-6)


#: the merges each zoo model's structure offers: per family (node order), the output channels
#: and kernel sizes of its convolutions; every family reads one input
ZOO_FAMILIES = {
    "squeezenet1.0": [[(e, 1), (e, 3)] for _, e in SQUEEZENET_FIRES],  # expand1x1 + expand3x3
    "inception_v1": [[(m[0], 1), (m[1], 1), (m[3], 1)]  # 1x1, 3x3 reduce, 5x5 reduce
                     for m in INCEPTION_V1_MODULES if m != "pool"],
}


@pytest.mark.parametrize("name", ["squeezenet1.0", "inception_v1"])
def test_zoo_cnns_get_merge_stages_and_match(name, free_merges):
    """Merge stages on the zoo's CNNs as TVM imports them (bias through a reshape), at 64x64.

    The search runs with merges made cheap (``free_merges``): on a 2-core CPU merging does not pay
    (measured: GoogLeNet's 1x1 merges run 0.96-1.04x as fast as their kernels apart, SqueezeNet's
    1x1 + 3x3 merges half as fast), and the calibrated analytic model no longer picks them. The merged
    model equals the sequential build to float32 rounding (the zero-padded taps add exact zeros;
    rtol 1e-5) and onnxruntime to 1e-4: both sum long float32 reductions in their own orders
    over some sixty layers (differences of a few 1e-6 here), far below what a wrong merge does.
    """
    from tvm.relax.frontend.onnx import from_onnx

    size = 64
    blob = {"squeezenet1.0": squeezenet1_0, "inception_v1": inception_v1}[name](size)
    mod = from_onnx(onnx.load_from_string(blob), keep_params_in_input=False)
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = ios_tvm.optimize(mod, {"kind": "llvm", "num-cores": 2}, graph=graph, cost_model=free_merges,
                             search=SearchConfig(strategy="both"))

    merges = graph.merges
    assert [[(merges.units[v].channels, merges.units[v].kernel[0]) for v in fam] for fam in merges.families] \
        == ZOO_FAMILIES[name]
    assert len(merges.candidates()) == sum(2 ** len(f) - len(f) - 1 for f in merges.families)  # 8, 36
    assert sched.merges and all(any(set(m) <= set(f) for f in merges.families) for m in sched.merges)
    assert sorted(map(sorted, sched.merges)) == merges.families  # cheap merges: every family merges whole

    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)

    def run(s):
        return relax.VirtualMachine(ios_tvm.build(mod, "llvm", s), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    seq = run(None)
    want = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(seq, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(run(sched), seq, rtol=1e-5, atol=1e-8)
