"""IOS-Merge: the conv-merge rewrite (structure and numbers), what is left alone, merge stages in
the search, and merged schedules built and run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax import op as R

import ios_tvm
from ios_tvm import models
from ios_tvm.api import SearchConfig
from ios_tvm.errors import ScheduleMismatchError
from ios_tvm.merge import find_families, find_units, merge_all, merge_units, mergeable, merged_weights
from ios_tvm.models._builder import NetBuilder
from ios_tvm.schedule import Schedule

CUDA = {"kind": "cuda", "arch": "sm_90"}


def _net(build, shape=(1, 4, 9, 9)):
    nb = NetBuilder("m", shape)
    with nb.scope() as x:
        nb.output(build(nb, x))
    mod = nb.module()
    return models.bind_params(mod, models.random_params(mod, 3)), models.random_input(mod, 4)


def _run(mod, data):
    return relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()


def test_rewrite_structure():
    mod, _ = _net(lambda nb, x: nb.concat([nb.conv(x, 3, 1), nb.conv(x, 5, 3)]))
    units = find_units(mod["main"])
    got = merge_units(mod, [units])

    # Expected, written out: one conv over both weights (1x1 padded to 3x3, centred), one bias
    # add, one relu, a split at channel 3, the concat of the two parts.
    w1, w3 = units[0].weight, units[1].weight
    w = np.concatenate([np.pad(w1, ((0, 0), (0, 0), (1, 1), (1, 1))), w3])
    b = np.concatenate([units[0].bias, units[1].bias]).reshape(1, 8, 1, 1)
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((1, 4, 9, 9), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1]))
            y = bb.emit(R.add(y, relax.const(b)))
            y = bb.emit(R.nn.relu(y))
            parts = bb.emit(R.split(y, [3], axis=1))
            p0 = bb.emit(relax.TupleGetItem(parts, 0))
            p1 = bb.emit(relax.TupleGetItem(parts, 1))
            out = bb.emit_output(bb.emit(R.concat([p0, p1], axis=1)))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(got["main"], bb.get()["main"])


@pytest.mark.parametrize("case", ["1x1+3x3", "1x3+3x1", "paddings 1x1/p0 3x3/p1 5x5/p2", "no bias, no relu"])
def test_merged_equals_unmerged(case):
    def build(nb, x):
        if case == "1x1+3x3":
            ys = [nb.conv(x, 3, 1), nb.conv(x, 5, 3)]
        elif case == "1x3+3x1":
            ys = [nb.conv(x, 2, (1, 3)), nb.conv(x, 6, (3, 1))]
        elif case.startswith("paddings"):
            ys = [nb.conv(x, 2, 1, padding=0), nb.conv(x, 3, 3, padding=1), nb.conv(x, 4, 5, padding=2)]
        else:
            ys = [nb.conv(x, 2, 1, relu=False, bias=False), nb.conv(x, 3, 3, relu=False, bias=False)]
        return nb.concat([nb.relu(nb.add(y, y)) for y in ys])

    mod, data = _net(build)
    fams = find_families(mod["main"])
    assert len(fams) == 1 and mergeable(fams[0])
    merged = merge_all(mod)
    convs = [b for b in merged["main"].body.blocks[0].bindings
             if isinstance(b.value, relax.Call) and b.value.op.name == "relax.nn.conv2d"]
    assert len(convs) == 1
    np.testing.assert_allclose(_run(merged, data), _run(mod, data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["stride", "grouped", "other input", "misaligned padding", "params not bound",
                                  "dilation"])
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
        return nb.concat([nb.conv(x, 2, 1), nb.conv(x, 2, 3)])

    if case == "params not bound":
        nb = NetBuilder("m", (1, 4, 8, 8))
        with nb.scope() as x:
            nb.output(build(nb, x))
        mod = nb.module()
    else:
        mod, _ = _net(build)
    fams = find_families(mod["main"])
    assert all(not mergeable(f) for f in fams), case
    assert tvm_ffi.structural_equal(merge_all(mod), mod)


def test_merge_units_refuses_bad_sets():
    def build(nb, x):
        a = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 3, 3)), padding=[0, 0, 2, 2]))
        b = nb.emit(R.nn.conv2d(x, nb.weight("w", (2, 4, 1, 1)), padding=[0, 0, 0, 0]))
        return nb.concat([a, b])

    mod, _ = _net(build)
    units = find_units(mod["main"])
    with pytest.raises(ValueError, match="cannot be merged"):
        merge_units(mod, [units])
    with pytest.raises(ValueError, match="do not align"):
        merged_weights(units)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "squeezenet"])
def test_zoo_merged_models_compute_the_same(name):
    mod = models.get(name, small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    data = models.random_input(mod)
    merged = merge_all(mod)

    def convs(m):
        return sum(isinstance(b.value, relax.Call) and b.value.op.name == "relax.nn.conv2d"
                   for b in m["main"].body.blocks[0].bindings)

    assert convs(merged) < convs(mod)
    np.testing.assert_allclose(_run(merged, data), _run(mod, data), rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "squeezenet"])
def test_merged_schedules_build_and_match(name, bound):
    mod = bound[name]
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
    mod = bound["googlenet"]
    sched = ios_tvm.optimize(mod, CUDA, cost_model=_MergeFriendly())
    assert sched.merges
    ex = ios_tvm.build(mod, CUDA, sched)
    assert "ios_merge0_" in ex.as_text()


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
