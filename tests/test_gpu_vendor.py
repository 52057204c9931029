"""On an NVIDIA GPU: vendor kernels (cuDNN, cuBLASLt) compute what TVM's kernels and PyTorch
compute, scheduled on several streams and captured as one CUDA graph they replay bit-identically,
and ``kernels="auto"`` chooses by measurement. Skipped without a GPU (and, with the reason, where
cuDNN / cuBLASLt are not installed: ``pip install 'ios-tvm[vendor]'``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import ios_tvm
from ios_tvm import models
from ios_tvm.errors import CUDAGraphWarning, MissingDependencyError

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def libraries():
    from ios_tvm.runtime import vendor

    try:
        return vendor.check()
    except MissingDependencyError as err:  # the machine lacks the libraries, not the code a feature
        pytest.skip(f"vendor kernels cannot run here: {err}")


@pytest.fixture(scope="module")
def target():
    from ios_tvm.ir.target import local_target

    return local_target()


def run(ex, *arrays, times=1):
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(ex, dev)
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    return [vm["main"](*args).numpy() for _ in range(times)]


def vendor_calls(ex) -> int:
    return ex.as_text().count("call  ios_tvm.vendor.")


@I.ir_module
class Convs:  # NCHW + bias + relu (fused by cuDNN where it can), grouped, dilated, asymmetric padding
    @R.function
    def main(x: R.Tensor((2, 16, 20, 20), "float32"), w1: R.Tensor((32, 16, 3, 3), "float32"),
             b1: R.Tensor((1, 32, 1, 1), "float32"), w2: R.Tensor((32, 8, 3, 3), "float32"),
             w3: R.Tensor((16, 32, 3, 3), "float32")) -> R.Tensor((2, 16, 10, 11), "float32"):
        with R.dataflow():
            y = R.nn.conv2d(x, w1, padding=[1, 1, 1, 1])
            y = R.nn.relu(R.add(y, b1))
            y = R.nn.conv2d(y, w2, padding=[2, 2, 2, 2], dilation=[2, 2], groups=4)
            gv = R.nn.conv2d(y, w3, strides=[2, 2], padding=[1, 0, 0, 1])
            R.output(gv)
        return gv


def test_vendor_convolutions_match_tvm_and_torch(target):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [p.ty.shape for p in Convs["main"].params]
    arrays = [rng.standard_normal([int(d) for d in s]).astype("float32") * 0.3 for s in shapes]
    ex = ios_tvm.build(Convs, target, kernels="vendor")
    assert vendor_calls(ex) == 3
    got = run(ex, *arrays)[0]
    want = run(ios_tvm.build(Convs, target, kernels="tvm"), *arrays)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # full float32: no TF32 unless asked
    F = torch.nn.functional
    x, w1, b1, w2, w3 = (torch.from_numpy(a).cuda() for a in arrays)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y = F.relu(F.conv2d(x, w1, padding=1) + b1)
        y = F.conv2d(y, w2, padding=2, dilation=2, groups=4)
        ref = F.conv2d(F.pad(y, (0, 1, 1, 0)), w3, stride=2)
    np.testing.assert_allclose(got, ref.cpu().numpy(), rtol=1e-4, atol=1e-4)


@I.ir_module
class Dense:
    @R.function
    def main(x: R.Tensor((3, 40, 96), "float16"), w: R.Tensor((96, 200), "float16"),
             b: R.Tensor((200,), "float16")) -> R.Tensor((3, 40, 200), "float16"):
        with R.dataflow():
            y = R.matmul(x, w, out_dtype="float32")
            y = R.astype(y, "float16")
            gv = R.nn.gelu_tanh(R.add(y, b))
            R.output(gv)
        return gv


def test_vendor_matmul_half_with_gelu_matches_numpy(target):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype("float16") * 0.2 for s in ((3, 40, 96), (96, 200), (200,)))
    ex = ios_tvm.build(Dense, target, kernels="vendor")
    assert vendor_calls(ex) == 1
    got = run(ex, x, w, b)[0].astype("float32")
    z = x.astype("float32") @ w.astype("float32") + b.astype("float32")
    ref = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v3"])
def test_scheduled_vendor_model_on_streams_and_in_a_cuda_graph(name, target):
    """IOS with vendor kernels on several streams equals TVM's sequential run, and its CUDA graph
    replays give the same bits every time."""
    mod = models.get(name, small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    data = models.random_input(mod)
    want = run(ios_tvm.build(mod, target), data)[0]
    sched = ios_tvm.optimize(mod, target, cost_model="analytic", kernels="vendor", end_to_end=False)
    assert sched.max_streams > 1 and sched.meta["kernels"]["vendor"]
    outs = run(ios_tvm.build(mod, target, sched), data, times=3)
    for out in outs:
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CUDAGraphWarning)
        ex = ios_tvm.build(mod, target, sched, cuda_graph=True)
    replays = run(ex, data, times=4)  # the first captures, the others replay
    np.testing.assert_allclose(replays[0], want, rtol=1e-4, atol=1e-4)
    for r in replays[1:]:
        assert np.array_equal(r, replays[1])


def test_half_model_with_vendor_kernels(target):
    """A model converted to float16 (its epilogues in float32): vendor convolutions and matmul
    within half precision's tolerance of TVM's float16 build, on streams."""
    from ios_tvm.ir import precision

    mod = models.get("googlenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    data = models.random_input(mod)
    want = run(ios_tvm.build(mod, target, dtype="float16"), data)[0]
    sched = ios_tvm.optimize(mod, target, cost_model="analytic", kernels="vendor", dtype="float16",
                             end_to_end=False)
    ex = ios_tvm.build(mod, target, sched, dtype="float16")
    assert vendor_calls(ex) > 40
    rtol, atol = precision.output_tolerance("float16")
    np.testing.assert_allclose(run(ex, data)[0], want, rtol=rtol, atol=atol)


def test_tf32_is_explicit(target):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal([int(d) for d in p.ty.shape]).astype("float32")
              for p in Convs["main"].params]
    want = run(ios_tvm.build(Convs, target), *arrays)[0]
    full = run(ios_tvm.build(Convs, target, kernels="vendor"), *arrays)[0]
    tf32 = run(ios_tvm.build(Convs, target, kernels="vendor", tf32=True), *arrays)[0]
    err_full = np.abs(full - want).max() / np.abs(want).max()
    err_tf32 = np.abs(tf32 - want).max() / np.abs(want).max()
    assert err_full < 1e-5 and err_tf32 < 1e-2


def test_auto_chooses_by_measurement(target, tmp_path):
    from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel

    mod = models.get("googlenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    cost = MeasuredCostModel(target, MeasureConfig(cache_dir=tmp_path, progress=False))
    sched = ios_tvm.optimize(mod, target, cost_model=cost, kernels="auto", end_to_end=False)
    rec = sched.meta["kernels"]
    assert rec["mode"] == "auto" and len(rec["alone_s"]) == rec["eligible"] > 0
    flipped = set(rec["refined"]["flipped"])  # traded inside concurrent stages
    for v, (tvm_s, vendor_s) in rec["alone_s"].items():
        assert (int(v) in rec["vendor"]) == ((vendor_s < tvm_s) != (int(v) in flipped))
    data = models.random_input(mod)
    want = run(ios_tvm.build(mod, target), data)[0]
    ex = ios_tvm.build(mod, target, sched)
    assert vendor_calls(ex) >= len(rec["vendor"]) - len([v for m in sched.merges for v in m])
    np.testing.assert_allclose(run(ex, data)[0], want, rtol=1e-4, atol=1e-4)
