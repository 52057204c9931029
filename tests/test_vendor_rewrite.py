"""The vendor-kernel rewrite (ios_tvm.ir.vendor, ios_tvm.transform.vendor): Before/Expected in
TVMScript, what is and is not rewritten, workspaces in the memory plan, builds for sm_90."""

from __future__ import annotations

import re
import warnings

import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import ios_tvm
from ios_tvm import models
from ios_tvm.errors import InvalidArgumentError, ScheduleMismatchError, TargetError
from ios_tvm.ir.graph import extract_graph
from ios_tvm.ir.vendor import CONV2D, MATMUL, WORKSPACE_ALIGN, WORKSPACE_BYTES, build_sites, plan_sites
from ios_tvm.transform import MarkVendorKernels, UseVendorKernels

SM90 = {"kind": "cuda", "arch": "sm_90"}
WS = WORKSPACE_BYTES + WORKSPACE_ALIGN


def rewrite(before: tvm.IRModule, tf32: bool = False) -> tvm.IRModule:
    """Before -> its graph's lowering -> marked -> vendor calls (what a build does around LowerSchedule)."""
    graph = extract_graph(before, SM90)
    sites = plan_sites(before, graph, SM90)
    marked = MarkVendorKernels(sites, tf32)(graph.mod)
    assert extract_graph(marked, lowered=True).fingerprint == graph.fingerprint  # the schedule sees no change
    return UseVendorKernels()(marked)


# -- Before / Expected ---------------------------------------------------------------------------
@I.ir_module
class ConvBiasRelu:
    @R.function
    def main(x: R.Tensor((1, 8, 16, 16), "float32"), w: R.Tensor((16, 8, 3, 3), "float32"),
             b: R.Tensor((1, 16, 1, 1), "float32")) -> R.Tensor((1, 16, 16, 16), "float32"):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y1 = R.add(y, b)
            gv = R.nn.relu(y1)
            R.output(gv)
        return gv


@I.ir_module
class ConvBiasReluExpected:
    @R.function
    def main(x: R.Tensor((1, 8, 16, 16), "float32"), w: R.Tensor((16, 8, 3, 3), "float32"),
             b: R.Tensor((1, 16, 1, 1), "float32")) -> R.Tensor((1, 16, 16, 16), "float32"):
        with R.dataflow():
            # layout NCHW, strides 1 1, padding 1 1 1 1, dilation 1 1, groups 1, relu, no TF32
            lv = R.call_dps_packed("ios_tvm.vendor.conv2d", (x, w, b, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),
                                   out_ty=[R.Tensor((1, 16, 16, 16), "float32"), R.Tensor((WS,), "uint8")])
            gv: R.Tensor((1, 16, 16, 16), "float32") = lv[0]
            R.output(gv)
        return gv


@I.ir_module
class ConvNHWCHalf:
    @R.function
    def main(x: R.Tensor((2, 32, 32, 16), "float16"), w: R.Tensor((24, 3, 3, 16), "float16")
             ) -> R.Tensor((2, 15, 15, 24), "float16"):
        with R.dataflow():
            gv = R.nn.conv2d(x, w, strides=[2, 2], data_layout="NHWC", kernel_layout="OHWI")
            R.output(gv)
        return gv


@I.ir_module
class ConvNHWCHalfExpected:
    @R.function
    def main(x: R.Tensor((2, 32, 32, 16), "float16"), w: R.Tensor((24, 3, 3, 16), "float16")
             ) -> R.Tensor((2, 15, 15, 24), "float16"):
        with R.dataflow():
            # layout NHWC, strides 2 2, no padding, dilation 1 1, groups 1, no activation, no TF32
            lv = R.call_dps_packed("ios_tvm.vendor.conv2d", (x, w, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 0),
                                   out_ty=[R.Tensor((2, 15, 15, 24), "float16"), R.Tensor((WS,), "uint8")])
            gv: R.Tensor((2, 15, 15, 24), "float16") = lv[0]
            R.output(gv)
        return gv


@I.ir_module
class HalfConvCastBias:  # a model converted to float16: conv in float32 accumulation, cast back, bias
    @R.function
    def main(x: R.Tensor((1, 8, 14, 14), "float16"), w: R.Tensor((32, 8, 1, 1), "float16"),
             b: R.Tensor((1, 32, 1, 1), "float16")) -> R.Tensor((1, 32, 14, 14), "float16"):
        with R.dataflow():
            y = R.nn.conv2d(x, w, out_dtype="float32")
            y1 = R.astype(y, "float16")
            gv = R.add(y1, b)
            R.output(gv)
        return gv


@I.ir_module
class HalfConvCastBiasExpected:
    @R.function
    def main(x: R.Tensor((1, 8, 14, 14), "float16"), w: R.Tensor((32, 8, 1, 1), "float16"),
             b: R.Tensor((1, 32, 1, 1), "float16")) -> R.Tensor((1, 32, 14, 14), "float16"):
        with R.dataflow():
            lv = R.call_dps_packed("ios_tvm.vendor.conv2d", (x, w, b, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0),
                                   out_ty=[R.Tensor((1, 32, 14, 14), "float16"), R.Tensor((WS,), "uint8")])
            gv: R.Tensor((1, 32, 14, 14), "float16") = lv[0]
            R.output(gv)
        return gv


@I.ir_module
class MixedPrecisionConv:  # what ios_tvm.ir.precision.convert makes of conv + bias + relu: the epilogue in float32
    @R.function
    def main(x: R.Tensor((1, 8, 14, 14), "float16"), w: R.Tensor((32, 8, 3, 3), "float16"),
             b: R.Tensor((1, 32, 1, 1), "float32")) -> R.Tensor((1, 32, 14, 14), "float16"):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], out_dtype="float32")
            y1 = R.astype(y, "float16")
            y2 = R.astype(y1, "float32")
            y3 = R.add(y2, b)
            y4 = R.nn.relu(y3)
            gv = R.astype(y4, "float16")
            R.output(gv)
        return gv


@I.ir_module
class MixedPrecisionConvExpected:
    @R.function
    def main(x: R.Tensor((1, 8, 14, 14), "float16"), w: R.Tensor((32, 8, 3, 3), "float16"),
             b: R.Tensor((1, 32, 1, 1), "float32")) -> R.Tensor((1, 32, 14, 14), "float16"):
        with R.dataflow():
            # a float32 bias, a float16 output: the vendor call takes their dtypes from the tensors
            lv = R.call_dps_packed("ios_tvm.vendor.conv2d", (x, w, b, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),
                                   out_ty=[R.Tensor((1, 32, 14, 14), "float16"), R.Tensor((WS,), "uint8")])
            gv: R.Tensor((1, 32, 14, 14), "float16") = lv[0]
            R.output(gv)
        return gv


@I.ir_module
class DenseBiasGelu:
    @R.function
    def main(x: R.Tensor((4, 128, 256), "float32"), w: R.Tensor((256, 512), "float32"),
             b: R.Tensor((512,), "float32")) -> R.Tensor((4, 128, 512), "float32"):
        with R.dataflow():
            y = R.matmul(x, w)
            y1 = R.add(y, b)
            gv = R.nn.gelu_tanh(y1)
            R.output(gv)
        return gv


@I.ir_module
class DenseBiasGeluExpected:
    @R.function
    def main(x: R.Tensor((4, 128, 256), "float32"), w: R.Tensor((256, 512), "float32"),
             b: R.Tensor((512,), "float32")) -> R.Tensor((4, 128, 512), "float32"):
        with R.dataflow():
            # not transposed, gelu (tanh), TF32 allowed
            lv = R.call_dps_packed("ios_tvm.vendor.matmul", (x, w, b, 0, 2, 1),
                                   out_ty=[R.Tensor((4, 128, 512), "float32"), R.Tensor((WS,), "uint8")])
            gv: R.Tensor((4, 128, 512), "float32") = lv[0]
            R.output(gv)
        return gv


@pytest.mark.parametrize("before, expected, tf32", [
    (ConvBiasRelu, ConvBiasReluExpected, False),
    (ConvNHWCHalf, ConvNHWCHalfExpected, False),
    (HalfConvCastBias, HalfConvCastBiasExpected, False),
    (MixedPrecisionConv, MixedPrecisionConvExpected, False),
    (DenseBiasGelu, DenseBiasGeluExpected, True),
], ids=["conv-nchw-bias-relu", "conv-nhwc-fp16", "conv-fp16-cast-bias", "conv-fp16-float32-epilogue",
        "dense-bias-gelu-tf32"])
def test_rewrite_before_expected(before, expected, tf32):
    after = rewrite(before, tf32)
    tvm.ir.assert_structural_equal(after["main"], expected["main"])
    # the TVM kernels the calls replaced are gone from the module
    assert [gv.name_hint for gv in after.get_global_vars()] == ["main"]


# -- what is not rewritten ---------------------------------------------------------------------------
@I.ir_module
class Residual:  # fusion pulls the residual add into the conv's kernel: not a unit cuDNN is given
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((8, 8, 3, 3), "float32"),
             b: R.Tensor((1, 8, 1, 1), "float32")) -> R.Tensor((1, 8, 8, 8), "float32"):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y1 = R.add(y, b)
            y2 = R.add(y1, x)
            gv = R.nn.relu(y2)
            R.output(gv)
        return gv


@I.ir_module
class HWIO:  # NHWC with HWIO weights: cuDNN takes OHWI only
    @R.function
    def main(x: R.Tensor((1, 8, 8, 4), "float32"), w: R.Tensor((3, 3, 4, 8), "float32")) -> R.Tensor((1, 6, 6, 8), "float32"):
        with R.dataflow():
            gv = R.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO")
            R.output(gv)
        return gv


@I.ir_module
class DenseGeluErf:  # erf-GELU is not cuBLASLt's (tanh) GELU; fused into the matmul's kernel, it stays TVM's
    @R.function
    def main(x: R.Tensor((8, 64), "float32"), w: R.Tensor((64, 32), "float32")) -> R.Tensor((8, 32), "float32"):
        with R.dataflow():
            y = R.matmul(x, w)
            gv = R.nn.gelu(y)
            R.output(gv)
        return gv


@pytest.mark.parametrize("mod", [Residual, HWIO, DenseGeluErf], ids=["residual-add", "hwio", "gelu-erf"])
def test_not_rewritten(mod):
    graph = extract_graph(mod, SM90)
    assert plan_sites(mod, graph, SM90) == {}


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_sites_of_the_zoo_cover_every_conv_and_the_classifier(dtype):
    from ios_tvm.ir.precision import convert

    mod = models.get("googlenet", small=True)
    mod = mod if dtype is None else convert(mod, dtype)
    graph = extract_graph(mod, SM90)
    sites = plan_sites(mod, graph, SM90)
    convs = [n.id for n in graph.nodes if "conv2d" in n.kernel or "matmul" in n.kernel]
    assert sorted(sites) == convs  # the zoo's conv + bias + relu chains and its dense layer
    assert {s.func for s in sites.values()} == {CONV2D, MATMUL}


# -- in a build: schedules, memory plan, errors ----------------------------------------------------------
def vendor_calls(ex) -> list[str]:
    return re.findall(r"call\s+(ios_tvm\.vendor\.\w+)\s", ex.as_text())


def test_inception_v3_vendor_build_for_sm90_with_cuda_graph():
    mod = models.get("inception_v3", small=True)
    sched = ios_tvm.optimize(mod, SM90, cost_model="analytic", kernels="vendor")
    rec = sched.meta["kernels"]
    assert rec["mode"] == "vendor" and rec["eligible"] == len(rec["vendor"]) > 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CUDAGraphWarning: the run must be captured whole
        ex = ios_tvm.build(mod, SM90, sched, cuda_graph=True)  # kernels: what the schedule recorded
    calls = vendor_calls(ex)
    merged = {v for nodes in sched.merges for v in nodes}
    want = [v for v in rec["vendor"] if v not in merged]
    # each vendor node is called once in the captured function (run once uncaptured, then captured)
    assert len(calls) == len(want)
    assert "vm.builtin.cuda_graph.run_or_capture" in ex.as_text()


def test_workspaces_of_concurrent_groups_are_kept_apart():
    mod = models.get("squeezenet", small=True)
    sched = ios_tvm.optimize(mod, SM90, cost_model="analytic", kernels="vendor",
                             search=ios_tvm.SearchConfig(strategy="concurrent"))
    assert sched.max_streams > 1
    from ios_tvm.compiler.pipeline import plan_memory
    from ios_tvm.transform.memory import verify_memory

    planned = plan_memory(mod, SM90, sched)

    assert verify_memory(planned) == []
    joins = [b.value for blk in planned["main"].body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call) and isinstance(b.value.op, relax.ExternFunc)
             and str(b.value.op.global_symbol) == ios_tvm.runtime.JOIN]
    kept = [a.name for j in joins for a in j.args if isinstance(a, relax.Var)]
    assert any(name.endswith("_workspace") for name in kept)
    # the price: the workspaces of the widest stage are planned side by side
    assert ios_tvm.planned_memory(mod, SM90, sched) > ios_tvm.planned_memory(mod, SM90, sched, kernels="tvm") + WS


def test_auto_builds_the_recorded_choice():
    mod = models.get("squeezenet", small=True)
    sched = ios_tvm.optimize(mod, SM90, cost_model="analytic", kernels="auto",
                             search=ios_tvm.SearchConfig(strategy="concurrent"))
    rec = sched.meta["kernels"]
    assert 0 < len(rec["vendor"]) < rec["eligible"]  # the analytic model keeps TVM's kernel for the tiny convs
    assert set(rec["alone_s"]) == {str(v) for v in plan_sites(mod, extract_graph(mod, SM90), SM90)}
    again = ios_tvm.Schedule.from_json(sched.to_json())
    ex = ios_tvm.build(mod, SM90, again)
    assert len(vendor_calls(ex)) == len(rec["vendor"])
    graph = extract_graph(mod, SM90)
    assert build_sites(mod, graph, SM90, again, None, None)[1] is False  # no TF32 unless asked
    assert build_sites(mod, graph, SM90, again, "tvm", None)[0] == {}  # kernels='tvm' overrides the record


def test_kernels_errors():
    mod = models.get("squeezenet", small=True)
    with pytest.raises(TargetError, match="CUDA target"):
        ios_tvm.optimize(mod, "llvm", kernels="vendor")
    with pytest.raises(TargetError, match="CUDA target"):
        ios_tvm.build(mod, "llvm", kernels="vendor")
    with pytest.raises(InvalidArgumentError, match="kernels must be one of"):
        ios_tvm.optimize(mod, SM90, kernels="cudnn")
    with pytest.raises(InvalidArgumentError, match="optimize\\(mod, target, kernels='auto'\\) first"):
        ios_tvm.build(mod, SM90, kernels="auto")
    sched = ios_tvm.optimize(mod, SM90, cost_model="analytic", kernels="auto")
    graph = extract_graph(mod, SM90)
    sched.meta["kernels"]["vendor"].append(next(n.id for n in graph.nodes if "pool" in n.kernel))
    with pytest.raises(ScheduleMismatchError, match="compute no vendor unit"):
        build_sites(mod, graph, SM90, sched, None, None)


def test_auto_refines_the_choice_inside_concurrent_stages(monkeypatch):
    """A kernel faster alone with TVM but slow beside others (here: a cost model that says so) is
    traded for the vendor's in the concurrent stages where that wins; the build follows."""
    from ios_tvm.cost.analytic import AnalyticCostModel
    from ios_tvm.cost.vendor import VendorAnalyticCostModel
    from ios_tvm.driver.kernels import plan_kernels, refine_in_stages

    plain = VendorAnalyticCostModel.stage_latency

    def crowded(self, graph, groups):  # TVM's convolutions 20 us slower when they share the GPU
        t = plain(self, graph, groups)
        if len(groups) > 1:
            t += 20e-6 * sum(1 for g in groups for v in g if v not in self.vendor and "conv" in graph.nodes[v].kernel)
        return t

    monkeypatch.setattr(VendorAnalyticCostModel, "stage_latency", crowded)
    mod = models.get("squeezenet", small=True)
    graph = extract_graph(mod, SM90)
    base = AnalyticCostModel.for_target(SM90)
    model, rec = plan_kernels(mod, graph, SM90, base, "auto")
    greedy = ios_tvm.Schedule.greedy(graph, model, 8)  # fire modules: expand convs side by side
    greedy.meta["kernels"] = rec
    refined = refine_in_stages(mod, graph, SM90, greedy, base)
    out = refined.meta["kernels"]
    assert out["refined"]["stages_tried"] > 0 and out["refined"]["flipped"] and out["refined"]["gain_s"] > 0
    assert set(out["vendor"]) == set(rec["vendor"]) ^ set(out["refined"]["flipped"])
    assert not set(out["refined"]["flipped"]) & set(rec["vendor"])  # here every flip is to the vendor kernel
    assert refined.latency < greedy.latency
    sites, _ = build_sites(mod, graph, SM90, refined, None, None)
    assert set(sites) == set(out["vendor"])
