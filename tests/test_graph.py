"""Kernel-graph extraction from lowered Relax modules, and clear errors for bad models."""

from __future__ import annotations

import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from ios_tvm import models
from ios_tvm.errors import UnsupportedModelError
from ios_tvm.ir.graph import check_model, extract_graph


@I.ir_module
class TwoBranch:
    @R.function
    def main(x: R.Tensor((1, 8, 16, 16), "float32"), w1: R.Tensor((8, 8, 3, 3), "float32"),
             w2: R.Tensor((8, 8, 1, 1), "float32"), b1: R.Tensor((1, 8, 1, 1), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            a = R.nn.conv2d(x, w1, padding=1)
            a1 = R.add(a, b1)
            a2 = R.nn.relu(a1)
            c = R.nn.conv2d(x, w2)
            c1 = R.nn.relu(c)
            d = R.concat((a2, c1), axis=1)
            e = R.nn.max_pool2d(d, pool_size=(3, 3), strides=(2, 2), padding=(1, 1))
            f = R.reshape(e, (1, 16, 64))
            g = R.nn.softmax(f, axis=-1)
            R.output(g)
        return g


def test_nodes_are_fused_kernels_and_edges_follow_data():
    g = extract_graph(TwoBranch, "llvm")
    kernels = [n.kernel for n in g.nodes]
    # conv+add+relu and conv+relu fuse; the reshape between pool and softmax is a view, not a kernel
    assert kernels[0].startswith("fused_conv2d") and "relu" in kernels[0]
    assert kernels[1].startswith("fused_conv2d") and "relu" in kernels[1]
    assert kernels[2] == "concatenate"
    assert kernels[3] == "max_pool2d"
    assert "softmax" in kernels[-1]
    assert not any("reshape" in k for k in kernels)
    assert set(g.edges) >= {(0, 2), (1, 2), (2, 3), (3, 4)}
    assert (3, len(g.nodes) - 1) in g.edges or len(g.nodes) > 5
    assert g.nodes[0].outputs == (((1, 8, 16, 16), "float32"),)
    assert g.nodes[0].flops > 0 and g.nodes[0].bytes == 4 * (8 * 256 + 8 * 8 * 9 + 8 + 8 * 256)
    assert [b.var.name for b in g.bindings] == [n.name for n in g.nodes]


@I.ir_module
class TupleFlow:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w: R.Tensor((2, 2, 3, 3), "float32")):
        with R.dataflow():
            parts = R.split(x, 2, axis=1)
            p0 = parts[0]
            p1 = parts[1]
            a = R.nn.conv2d(p0, w)
            b = R.nn.conv2d(p1, w)
            t = (a, b)
            u = R.concat(t, axis=1)
            R.output(u)
        return u


def test_free_bindings_fold_into_edges():
    g = extract_graph(TupleFlow, "llvm")
    names = [n.kernel for n in g.nodes]
    split = next(i for i, k in enumerate(names) if "split" in k)
    cat = next(i for i, k in enumerate(names) if "concatenate" in k)
    mids = [i for i in range(len(g.nodes)) if i not in (split, cat)]
    assert len(mids) == 2
    for m in mids:  # split -> exp/sigmoid through tuple-get-item, -> concat through a tuple
        assert (split, m) in g.edges and (m, cat) in g.edges
    assert (split, cat) not in g.edges


def test_fingerprint_is_stable_and_specific():
    a = extract_graph(models.get("squeezenet", small=True), "llvm")
    b = extract_graph(models.get("squeezenet", small=True), "llvm")
    c = extract_graph(models.get("squeezenet", small=True, batch_size=2), "llvm")
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_cuda_target_graph_matches_structure():
    cpu = extract_graph(models.get("googlenet", small=True), "llvm")
    gpu = extract_graph(models.get("googlenet", small=True), {"kind": "cuda", "arch": "sm_90"})
    assert len(cpu.nodes) == len(gpu.nodes) and cpu.edges == gpu.edges


@I.ir_module
class Dynamic:
    @R.function
    def main(x: R.Tensor(("n", 4), "float32")):
        with R.dataflow():
            y = R.exp(x)
            R.output(y)
        return y


@I.ir_module
class NoDataflow:
    @R.function
    def main(x: R.Tensor((2, 4), "float32")):
        y = R.exp(x)
        return y


@I.ir_module
class ControlFlow:
    @R.function
    def main(x: R.Tensor((2, 4), "float32"), c: R.Tensor((), "bool")):
        if c:
            y = R.exp(x)
        else:
            y = R.sigmoid(x)
        return y


@I.ir_module
class Unlowerable:
    @R.function
    def main(x: R.Tensor((2, 4), "float32")):
        with R.dataflow():
            y = R.ewise_fma(x, x, x)
            R.output(y)
        return y


@pytest.mark.parametrize("mod, match", [
    (Dynamic, "dynamic shape.*BindSymbolicVars"),
    (NoDataflow, "no dataflow block"),
    (ControlFlow, "control flow"),
    (Unlowerable, "ewise_fma.*no TVM lowering"),
])
def test_bad_models_get_clear_errors(mod, match):
    with pytest.raises(UnsupportedModelError, match=match):
        extract_graph(mod, "llvm")


def test_not_a_module_or_no_main():
    with pytest.raises(TypeError):
        check_model("main")
    mod = tvm.IRModule({"other": TwoBranch["main"]})
    with pytest.raises(UnsupportedModelError, match="no Relax function 'main'"):
        check_model(mod)


def test_bad_target():
    with pytest.raises(ValueError, match="not a valid TVM target"):
        extract_graph(TwoBranch, "no-such-target")
