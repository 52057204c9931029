"""IOS-Merge: the splice of merged kernels at lowering (structure), merge stages built and run
(numbers), what is left alone, merge stages in the search, and merged schedules of the zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

import ios_tvm
from ios_tvm import models
from ios_tvm.core.schedule import Schedule
from ios_tvm.driver.optimize import SearchConfig
from ios_tvm.errors import ScheduleMismatchError
from ios_tvm.ir.backend import front_passes
from ios_tvm.ir.merge_plan import find_units, mergeable, merged_weights, node_merges
from ios_tvm.models import NetBuilder
from ios_tvm.transform.merge import splice_merges

from ir_fixtures import merging

CUDA = {"kind": "cuda", "arch": "sm_90"}


LLVM = tvm.target.Target("llvm")


def _net(build, shape=(1, 4, 9, 9)):
    nb = NetBuilder("m", shape)
    with nb.scope() as x:
        nb.output(build(nb, x))
    mod = nb.module()
    return models.bind_params(mod, models.random_params(mod, 3)), models.random_input(mod, 4)


def _plan(mod):
    """The model's graph for llvm, with its merge candidates (what ``ios_tvm.optimize`` reads)."""
    graph = ios_tvm.extract_graph(mod, LLVM)
    graph.merges = node_merges(mod, graph)
    return graph


def _front(mod):
    """``mod`` lowered as the build lowers it up to ``splice_merges`` (fusion, llvm)."""
    with LLVM:
        return tvm.transform.Sequential(front_passes(LLVM))(mod)


def _run(mod, data, sched=None):
    ex = ios_tvm.build(mod, "llvm", sched)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()


def test_splice_merges_structure():
    mod, _ = _net(lambda nb, x: nb.concat([nb.conv(x, 3, 1), nb.conv(x, 5, 3)]))
    graph = _plan(mod)
    assert graph.merges.families == [[0, 1]] and [n.kernel for n in graph.nodes][2] == "concatenate"
    before = _front(mod)
    sched = merging(graph, [(0, 1)])
    got, translated = splice_merges(before, sched, graph.merges, _front)

    # Expected, written out: the merged kernel (the 1x1's weights padded to 3x3, centred, then the
    # 3x3's; both biases; relu) and its split, lowered on their own and added as ios_merge0_*;
    # the split's parts bound to the variables the two kernels defined; the concat as before.
    u1, u3 = graph.merges.units[0], graph.merges.units[1]
    w = np.concatenate([np.pad(u1.weight, ((0, 0), (0, 0), (1, 1), (1, 1))), u3.weight])
    b = np.concatenate([u1.bias, u3.bias]).reshape(1, 8, 1, 1)
    mb = relax.BlockBuilder()
    xm = relax.Var("x", relax.TensorType((1, 4, 9, 9), "float32"))
    with mb.function("main", [xm]):
        with mb.dataflow():
            y = mb.emit(R.nn.conv2d(xm, relax.const(w), padding=[1, 1, 1, 1]))
            y = mb.emit(R.nn.relu(mb.emit(R.add(y, relax.const(b)))))
            out = mb.emit_output(R.split(y, [3], axis=1))
        mb.emit_func_output(out)
    mini = _front(mb.get())

    bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in before.functions.items() if gv.name_hint != "main"}))
    conv = bb.add_func(mini["fused_conv2d_add_relu"], "ios_merge0_fused_conv2d_add_relu")
    split = bb.add_func(mini["split"], "ios_merge0_split")
    x = relax.Var("data", relax.TensorType((1, 4, 9, 9), "float32"))
    t = lambda c: relax.TensorType((1, c, 9, 9), "float32")  # noqa: E731
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit(R.call_tir(conv, (x, relax.const(w), relax.const(b)), t(8)))
            parts = bb.emit(R.call_tir(split, (y,), [t(3), t(5)]))
            p0 = bb.emit(relax.TupleGetItem(parts, 0))
            p1 = bb.emit(relax.TupleGetItem(parts, 1))
            out = bb.emit_output(R.call_tir(before.get_global_var("concatenate"), (p0, p1), t(8)))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(got, bb.get())
    assert translated.as_lists() == [[[0, 1]], [[2]]]
    assert translated.kernels == ["ios_merge0_fused_conv2d_add_relu", "ios_merge0_split", "concatenate"]
    assert translated.meta["merged_from"] == sched.fingerprint


#: merge cases: the convolutions of one family, reading ``x``
MERGE_CASES = {
    "1x1+3x3": lambda nb, x: [nb.conv(x, 3, 1), nb.conv(x, 5, 3)],
    "1x3+3x1": lambda nb, x: [nb.conv(x, 2, (1, 3)), nb.conv(x, 6, (3, 1))],
    "paddings 1x1/p0 3x3/p1 5x5/p2": lambda nb, x: [nb.conv(x, 2, 1, padding=0), nb.conv(x, 3, 3, padding=1),
                                                     nb.conv(x, 4, 5, padding=2)],
    "no bias, no relu": lambda nb, x: [nb.conv(x, 2, 1, relu=False, bias=False),
                                       nb.conv(x, 3, 3, relu=False, bias=False)],
}


def _per_family(graph, got, want, cases):
    """Compare the channels of each family's outputs (the model concatenates them in order)."""
    start = 0
    for case, fam in zip(cases, graph.merges.families):
        end = start + sum(graph.merges.units[v].channels for v in fam)
        np.testing.assert_allclose(got[:, start:end], want[:, start:end], rtol=1e-5, atol=1e-6, err_msg=case)
        start = end
    assert start == want.shape[1]


def test_merged_equals_unmerged():
    """Every case on its own input (a relu of the model's), all merged in one build."""
    mod, data = _net(lambda nb, x: nb.concat([nb.concat(make(nb, nb.relu(x))) for make in MERGE_CASES.values()]))
    graph = _plan(mod)
    fams = graph.merges.families
    assert [len(f) for f in fams] == [2, 2, 3, 2]
    assert graph.merges.candidates() == [tuple(f) for f in fams[:2]] + [
        tuple(s) for s in ([*fams[2][:2]], [fams[2][0], fams[2][2]], fams[2][1:], fams[2])] + [tuple(fams[3])]
    sched = merging(graph, fams)
    ex = ios_tvm.build(mod, "llvm", sched)
    kernels = ex.as_text()  # the kernels it calls, as "@name packed_func"
    assert all(f"@ios_merge{j}_split " in kernels for j in range(4))
    assert not any(f"@{graph.nodes[v].kernel} " in kernels for f in fams for v in f)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    _per_family(graph, got, _run(mod, data), MERGE_CASES)


@pytest.mark.parametrize("case", ["stride", "grouped", "other input", "misaligned padding", "params not bound",
                                  "dilation", "tanh after the bias", "add after a bare conv"])
def test_non_mergeable_sets_are_left_alone(case):
    def build(nb, x):
        if case == "stride":
            a = nb.conv(x, 2, 3, stride=2, padding=1)
            b = nb.max_pool(nb.conv(x, 2, 3, stride=1, padding=1), 2, 2, ceil_mode=True)
            return nb.concat([a, b])
        if case == "grouped":
            return nb.concat([nb.conv(x, 4, 3, groups=4), nb.conv(x, 4, 3, groups=4)])
        if case == "other input":
            y = nb.relu(x)
            return nb.concat([nb.conv(x, 2, 1), nb.conv(y, 2, 1)])
        if case == "misaligned padding":  # same output size, shifted by one pixel
            a = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 3, 3)), padding=[0, 0, 2, 2]))
            b = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 3, 3)), padding=[1, 1, 1, 1]))
            return nb.concat([a, b])
        if case == "dilation":
            a = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 3, 3)), padding=2, dilation=2))
            return nb.concat([a, nb.conv(x, 2, 3, padding=1, bias=False, relu=False)])
        if case == "tanh after the bias":  # fused into the conv kernel: the kernel is no unit
            return nb.concat([nb.emit(R.tanh(nb.conv(x, 2, k, relu=False))) for k in (1, 3)])
        if case == "add after a bare conv":
            ys = [nb.conv(x, 2, k, relu=False, bias=False) for k in (1, 3)]
            return nb.concat([nb.add(y, y) for y in ys])
        return nb.concat([nb.conv(x, 2, 1), nb.conv(x, 2, 3)])

    if case == "params not bound":
        nb = NetBuilder("m", (1, 4, 8, 8))
        with nb.scope() as x:
            nb.output(build(nb, x))
        mod = nb.module()
    else:
        mod, _ = _net(build)
    graph = _plan(mod)
    assert graph.merges.candidates() == [], case
    convs = [n.id for n in graph.nodes if "conv2d" in n.kernel]
    assert len(convs) == 2
    with pytest.raises(ScheduleMismatchError, match="cannot be merged"):
        ios_tvm.build(mod, "llvm", merging(graph, [convs]))


BIAS_FORMS = ["reshape (ONNX, PyTorch)", "expand_dims", "(C, 1, 1) constant", "bias first"]


def _bias_net():
    """Per bias form, on its own input (a relu of ``x``): two convs (1x1, 3x3), their bias added
    in that form, relu; the outputs concatenated. Returns the module and the biases."""
    rng = np.random.default_rng(5)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 9, 9), "float32"))
    biases, outs = [], []
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            for form in BIAS_FORMS:
                xf = bb.emit(R.nn.relu(x))
                for c, k in ((3, 1), (5, 3)):
                    w = relax.const(rng.normal(size=(c, 4, k, k)).astype("float32"))
                    y = bb.emit(R.nn.conv2d(xf, w, padding=k // 2))
                    b = rng.normal(size=c).astype("float32")
                    if form == "reshape (ONNX, PyTorch)":
                        bias = bb.emit(R.reshape(relax.const(b), [1, c, 1, 1]))
                    elif form == "expand_dims":
                        bias = bb.emit(R.expand_dims(relax.const(b), [1, 2]))
                    else:
                        bias = relax.const(b.reshape(c, 1, 1))
                    y = bb.emit(R.add(bias, y) if form == "bias first" else R.add(y, bias))
                    outs.append(bb.emit(R.nn.relu(y)))
                    biases.append(b)
            out = bb.emit_output(R.concat(outs, axis=1))
        bb.emit_func_output(out)
    return bb.get(), biases


def test_biases_as_importers_give_them():
    mod, biases = _bias_net()
    units = find_units(mod["main"])
    assert [u.relu for u in units] == [True] * 8
    for u, b in zip(units, biases):
        np.testing.assert_array_equal(u.bias, b)
    graph = _plan(mod)
    assert [len(f) for f in graph.merges.families] == [2] * 4
    data = np.random.default_rng(6).uniform(-1, 1, (1, 4, 9, 9)).astype("float32")
    _per_family(graph, _run(mod, data, merging(graph, graph.merges.families)), _run(mod, data), BIAS_FORMS)


def test_misaligned_weights_are_refused():
    def build(nb, x):
        a = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 3, 3)), padding=[0, 0, 2, 2]))
        b = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 1, 1)), padding=[0, 0, 0, 0]))
        return nb.concat([a, b])

    mod, _ = _net(build)
    units = find_units(mod["main"])
    assert len(units) == 2 and not mergeable(units)
    with pytest.raises(ValueError, match="do not align"):
        merged_weights(units)


@pytest.fixture(scope="module")
def bound():
    out = {}
    for name in ("googlenet", "inception_v3", "squeezenet"):
        mod = models.get(name, small=True)
        out[name] = models.bind_params(mod, models.random_params(mod))
    return out


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "squeezenet"])
def test_both_is_never_worse(name, bound):
    mod = bound[name]
    lat = {s: ios_tvm.optimize(mod, CUDA, search=SearchConfig(strategy=s)).latency
           for s in ("concurrent", "merge", "both")}
    assert lat["both"] <= lat["concurrent"] * (1 + 1e-9)
    assert lat["both"] <= lat["merge"] * (1 + 1e-9)


class _MergeFriendly:
    """Merged kernels cost one launch: makes the DP pick merges, to exercise their lowering."""

    name = "merge-friendly"

    def stage_latency(self, graph, groups):
        return float(sum(len(g) for g in groups))

    def merge_latency(self, graph, nodes):
        return 1.0


def test_merged_schedules_build_and_match(bound):
    """Inception-v3: families of 1x1s, and of a 1x3 with a 3x1. (GoogLeNet and SqueezeNet merge,
    build and match as imported from ONNX, in test_frontend.py.)"""
    mod = bound["inception_v3"]
    data = models.random_input(mod)
    sched = ios_tvm.optimize(mod, CUDA, cost_model=_MergeFriendly(), search=SearchConfig(strategy="both"))
    assert sched.merges and any(st.kind == "concurrent" for st in sched.stages)
    again = Schedule.from_json(sched.to_json())
    assert [st.kind for st in again.stages] == [st.kind for st in sched.stages]
    assert "MERGE{" in sched.to_text()
    run = lambda ex: relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()  # noqa: E731
    np.testing.assert_allclose(run(ios_tvm.build(mod, "llvm", sched)), run(ios_tvm.build(mod, "llvm")),
                               rtol=1e-5, atol=1e-5)


def test_merged_schedule_compiles_for_cuda(bound):
    """Each merge stage is one merged convolution kernel (+ the split of its output) in the CUDA
    code, and the built model launches it in place of the convolutions it merges."""
    import re

    from ios_tvm.compiler.pipeline import plan_memory

    mod = bound["googlenet"]
    sched = ios_tvm.optimize(mod, CUDA, cost_model=_MergeFriendly())
    assert sched.merges
    ex = ios_tvm.build(mod, CUDA, sched)

    def cuda(m):
        return m if m.kind == "cuda" else next((f for f in map(cuda, m.imports) if f is not None), None)

    src = cuda(ex.mod).inspect_source("cuda")
    merged = re.findall(r'__global__ void (?:__launch_bounds__\(\d+\) )?ios_merge(\d+)_\w*conv2d\w*\(', src)
    assert sorted({int(j) for j in merged}) == list(range(len(sched.merges)))
    planned = plan_memory(mod, CUDA, sched, database=None)
    calls = [b.value.op.name_hint for block in planned["main"].body.blocks for b in block.bindings
             if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.GlobalVar)]
    assert sum(c.startswith("ios_merge") and "conv2d" in c for c in calls) == len(sched.merges)
    merged_away = sum(len(nodes) for nodes in sched.merges)
    assert len(calls) == sched.num_nodes - merged_away + 2 * len(sched.merges)  # a conv and a split each


def test_invalid_merge_stages_are_refused(bound):
    mod = bound["googlenet"]
    sched = ios_tvm.optimize(mod, CUDA, cost_model=_MergeFriendly())
    data = json.loads(sched.to_json())
    i = next(i for i, s in enumerate(data["stages"]) if s["kind"] == "concurrent" and len(s["groups"]) == 1
             and len(s["groups"][0]) == 1)
    j = next(j for j, s in enumerate(data["stages"]) if j > i and s["kind"] == "concurrent")
    data["stages"][i]["kind"] = "merge"  # a single kernel is no merge
    with pytest.raises(ScheduleMismatchError, match="merge stage"):
        Schedule.from_json(json.dumps(data))
    assert j > i


def test_cost_model_without_merge_latency(bound, caplog):
    class Plain:
        name = "plain"

        def stage_latency(self, graph, groups):
            return 1.0

    with pytest.raises(TypeError, match="merge_latency"):
        ios_tvm.optimize(bound["squeezenet"], CUDA, cost_model=Plain(), search=SearchConfig(strategy="merge"))
    sched = ios_tvm.optimize(bound["squeezenet"], CUDA, cost_model=Plain())  # "both": merges skipped, warned
    assert not sched.merges and "without merge stages" in caplog.text
