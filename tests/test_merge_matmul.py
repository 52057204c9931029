"""IOS-Merge of matmuls (linear layers reading one input): the splice (structure), the forms the
importers give a linear layer (numbers, against NumPy and the unmerged build, in float32, float16
and bfloat16), what is left alone, the costs, and what merges compose with: concurrent stages,
memory verification, CUDA graphs, kernel variants, CombineParallelMatmul."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

import ios_tvm
from ios_tvm import models
from ios_tvm.compiler.pipeline import plan_memory
from ios_tvm.cost.analytic import AnalyticCostModel
from ios_tvm.driver.optimize import SearchConfig
from ios_tvm.errors import ScheduleMismatchError
from ios_tvm.ir.backend import front_passes
from ios_tvm.ir.merge_plan import MatmulUnit, find_units, mergeable, merged_module, node_merges
from ios_tvm.ir.precision import HALF, output_tolerance
from ios_tvm.transform.memory import verify_memory
from ios_tvm.transform.merge import splice_merges

from ir_fixtures import merging

LLVM = tvm.target.Target("llvm")
CUDA = {"kind": "cuda", "arch": "sm_90"}
B, L, K = 2, 3, 8  #: the input of every case: (B, L, K)


def _front(mod):
    with LLVM:
        return tvm.transform.Sequential(front_passes(LLVM))(mod)


def _plan(mod, target=LLVM):
    graph = ios_tvm.extract_graph(mod, target)
    graph.merges = node_merges(mod, graph)
    return graph


def _run(mod, data, sched=None, dtype=None, target="llvm"):
    ex = ios_tvm.build(mod, target, sched, dtype=dtype)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()


class _MergeFriendly:
    """Merged kernels cost one launch, stages their longest group: merges and concurrency both
    pay, to exercise their lowering."""

    name = "merge-friendly"

    def stage_latency(self, graph, groups):
        return float(max(len(g) for g in groups)) + 0.5 * (len(groups) - 1)

    def merge_latency(self, graph, nodes):
        return 1.0


# -- the splice: structure ---------------------------------------------------------------------
def test_splice_merges_of_linear_layers_structure():
    """Two linear layers as PyTorch's importer writes them (each reshapes the input, a transposed
    weight, the bias on the left of the add), fused: one matmul on the weights side by side, the
    biases concatenated, a split along the last axis; the split's parts bound to the variables
    the two kernels defined; the second layer's view of the input left as it was."""
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(n, 8)).astype("float32") for n in (3, 5)]
    bs = [rng.normal(size=(n,)).astype("float32") for n in (3, 5)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            outs = []
            for w, b in zip(ws, bs):
                xf = bb.emit(R.reshape(x, (4, 8)))
                y = bb.emit(R.matmul(xf, bb.emit(R.permute_dims(relax.const(w), [1, 0])), out_dtype="float32"))
                outs.append(bb.emit(R.reshape(bb.emit(R.add(relax.const(b), y)), (1, 4, len(b)))))
            out = bb.emit_output(R.concat(outs, axis=-1))
        bb.emit_func_output(out)
    mod = bb.get()
    graph = _plan(mod)
    assert graph.merges.families == [[0, 1]] and graph.nodes[2].kernel == "fused_reshape1_reshape2_concatenate"
    before = _front(mod)
    sched = merging(graph, [(0, 1)])
    got, translated = splice_merges(before, sched, graph.merges, _front)

    w, b = np.concatenate([ws[0].T, ws[1].T], axis=1), np.concatenate(bs)
    mb = relax.BlockBuilder()
    xm = relax.Var("x", relax.TensorType((4, 8), "float32"))
    with mb.function("main", [xm]):
        with mb.dataflow():
            y = mb.emit(R.add(mb.emit(R.matmul(xm, relax.const(w), out_dtype="float32")), relax.const(b)))
            out = mb.emit_output(R.split(y, [3], axis=1))
        mb.emit_func_output(out)
    mini = _front(mb.get())

    eb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in before.functions.items() if gv.name_hint != "main"}))
    mm = eb.add_func(mini["fused_matmul_add"], "ios_merge0_fused_matmul_add")
    split = eb.add_func(mini["split"], "ios_merge0_split")
    x = relax.Var("x", relax.TensorType((1, 4, 8), "float32"))
    t = lambda *shape: relax.TensorType(shape, "float32")  # noqa: E731
    with eb.function("main", [x], attrs={"num_input": 1}):
        with eb.dataflow():
            lv = eb.emit(R.reshape(x, (4, 8)))
            y = eb.emit(R.call_tir(mm, (lv, relax.const(w), relax.const(b)), t(4, 8)))
            parts = eb.emit(R.call_tir(split, (y,), [t(4, 3), t(4, 5)]))
            p0 = eb.emit(relax.TupleGetItem(parts, 0))
            p1 = eb.emit(relax.TupleGetItem(parts, 1))
            eb.emit(R.reshape(x, (4, 8)))
            out = eb.emit_output(R.call_tir(before.get_global_var("fused_reshape1_reshape2_concatenate"), (p0, p1),
                                            t(1, 4, 8)))
        eb.emit_func_output(out)
    tvm.ir.assert_structural_equal(got, eb.get())
    assert translated.as_lists() == [[[0, 1]], [[2]]]
    assert translated.kernels == ["ios_merge0_fused_matmul_add", "ios_merge0_split",
                                  "fused_reshape1_reshape2_concatenate"]


# -- the forms of a linear layer, merged: numbers ---------------------------------------------
def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


ACT = {None: lambda y: y, "relu": lambda y: np.maximum(y, 0), "gelu": _gelu, "gelu_tanh": _gelu_tanh,
       "silu": lambda y: y / (1 + np.exp(-y))}


def _layer(bb, x, w, b, form, act):
    """``act(x @ w + b)`` on ``x`` ``(B, L, K)`` in one of the forms importers write a linear layer;
    returns ``(B, L, N)``."""
    n = w.shape[1]
    if form == "pytorch":  # from_exported_program: own view of x, transposed weight, bias on the left
        xf = bb.emit(R.reshape(x, (B * L, K)))
        y = bb.emit(R.matmul(xf, bb.emit(R.permute_dims(relax.const(np.ascontiguousarray(w.T)), [1, 0])),
                             out_dtype="float32"))
        y = bb.emit(R.add(relax.const(b), y)) if b is not None else y
    elif form == "onnx":  # MatMul + Add on the 3-D input, the bias (N,)
        y = bb.emit(R.matmul(x, relax.const(w)))
        y = bb.emit(R.add(relax.const(b), y)) if b is not None else y
    elif form == "bias (1, 1, N) through a reshape":
        y = bb.emit(R.matmul(x, relax.const(w)))
        y = bb.emit(R.add(y, bb.emit(R.reshape(relax.const(b), (1, 1, n))))) if b is not None else y
    else:
        raise ValueError(form)
    if act is not None:
        y = bb.emit(getattr(R.nn, act)(y))
    return bb.emit(R.reshape(y, (B, L, n))) if form == "pytorch" else y


#: merge cases: (form, activation, bias?, output widths of the family)
CASES = {
    "pytorch, bias": ("pytorch", None, True, (3, 5, 4)),
    "pytorch, no bias": ("pytorch", None, False, (6, 2)),
    "onnx, bias, relu": ("onnx", "relu", True, (3, 5)),
    "onnx, gelu": ("onnx", "gelu", False, (4, 4)),
    "bias through a view, gelu_tanh": ("bias (1, 1, N) through a reshape", "gelu_tanh", True, (2, 7)),
    "onnx, bias, silu": ("onnx", "silu", True, (5, 3)),
}


@pytest.fixture(scope="module")
def cases():
    """Every case on its own input (a relu of ``x``): the module, its input, the NumPy reference,
    the graph with its merge plan, and the case of each family."""
    rng = np.random.default_rng(1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((B, L, K), "float32"))
    data = rng.uniform(-1, 1, (B, L, K)).astype("float32")
    refs, outs = [], []
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            for form, act, bias, widths in CASES.values():
                xr = bb.emit(R.nn.relu(x))
                for n in widths:
                    w = rng.normal(0, 0.5, (K, n)).astype("float32")
                    b = rng.normal(0, 0.5, (n,)).astype("float32") if bias else None
                    outs.append(_layer(bb, xr, w, b, form, act))
                    refs.append(ACT[act](np.maximum(data, 0).astype(np.float64) @ w + (0 if b is None else b)))
            out = bb.emit_output(R.concat(outs, axis=-1))
        bb.emit_func_output(out)
    mod = bb.get()
    return mod, data, np.concatenate(refs, axis=-1), _plan(mod)


def test_the_forms_importers_give_are_units(cases):
    mod, _, _, graph = cases
    units = find_units(mod["main"])
    assert all(isinstance(u, MatmulUnit) for u in units)
    assert [u.channels for u in units] == [n for *_, widths in CASES.values() for n in widths]
    assert [(u.bias is not None, u.activation) for u in units] == [
        (bias, act) for _, act, bias, widths in CASES.values() for _ in widths]
    assert [len(f) for f in graph.merges.families] == [len(widths) for *_, widths in CASES.values()]
    assert all(graph.merges.units[f[0]].kind == "matmul" for f in graph.merges.families)


def test_merged_linear_layers_equal_unmerged_and_numpy(cases):
    mod, data, ref, graph = cases
    sched = merging(graph, graph.merges.families)
    assert len(sched.merges) == len(CASES)
    ex = ios_tvm.build(mod, "llvm", sched)
    kernels = ex.as_text()
    assert all(f"@ios_merge{j}_split " in kernels for j in range(len(CASES)))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    np.testing.assert_allclose(got, _run(mod, data), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", HALF)
def test_merged_linear_layers_in_half_precision(cases, dtype):
    """The model converted: the merged weights concatenated in the half type, the merged build
    within the dtype's tolerance of the unmerged one (and both near float32's result)."""
    mod, data, ref, _ = cases
    half = ios_tvm.precision.convert(mod, dtype)
    graph = _plan(half)
    assert [len(f) for f in graph.merges.families] == [len(widths) for *_, widths in CASES.values()]
    assert all(str(graph.merges.units[f[0]].weight.dtype) == dtype for f in graph.merges.families)
    sched = merging(graph, graph.merges.families)
    sched.meta["precision"] = {"dtype": dtype, "converted": True}
    got, want = _run(mod, data, sched, dtype=dtype), _run(mod, data, dtype=dtype)
    rtol, atol = output_tolerance(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got, ref, rtol=0.05, atol=0.05)


# -- what is left alone ---------------------------------------------------------------------------
LEFT_ALONE = ["other input", "other activation", "bias and none", "weights not bound", "batched weight",
              "weight computed", "add after a bare matmul", "the same weights twice"]


@pytest.mark.parametrize("case", LEFT_ALONE)
def test_non_mergeable_linear_layers_are_left_alone(case):
    rng = np.random.default_rng(2)
    w = lambda n=4: relax.const(rng.normal(size=(K, n)).astype("float32"))  # noqa: E731
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((B, L, K), "float32"))
    params = [x]
    with bb.function("main", attrs={"num_input": 1}):
        with bb.dataflow():
            if case == "other input":
                ys = [bb.emit(R.matmul(x, w())), bb.emit(R.matmul(bb.emit(R.nn.relu(x)), w()))]
            elif case == "other activation":
                ys = [bb.emit(R.nn.relu(bb.emit(R.matmul(x, w())))), bb.emit(R.nn.gelu(bb.emit(R.matmul(x, w()))))]
            elif case == "bias and none":
                ys = [bb.emit(R.add(bb.emit(R.matmul(x, w())), relax.const(np.ones(4, "float32")))),
                      bb.emit(R.matmul(x, w()))]
            elif case == "weights not bound":
                params += [relax.Var(f"w{i}", relax.TensorType((K, 4), "float32")) for i in range(2)]
                ys = [bb.emit(R.matmul(x, p)) for p in params[1:]]
            elif case == "batched weight":
                ys = [bb.emit(R.matmul(x, relax.const(rng.normal(size=(B, K, 4)).astype("float32")))) for _ in range(2)]
            elif case == "weight computed":  # a product, not a view, of a constant
                ys = [bb.emit(R.matmul(x, bb.emit(R.multiply(w(), relax.const(2.0))))) for _ in range(2)]
            elif case == "add after a bare matmul":  # fused into the matmul's kernel: no unit
                ys = [bb.emit(R.add(y, y)) for y in (bb.emit(R.matmul(x, w())) for _ in range(2))]
            else:  # which kernel is which unit cannot be told from their weights
                same = w()
                ys = [bb.emit(R.matmul(x, same)), bb.emit(R.matmul(x, relax.const(same.value.numpy())))]
            out = bb.emit_output(R.concat(ys, axis=-1))
        bb.emit_func_output(out, params=params)
    mod = bb.get()
    graph = _plan(mod)
    assert graph.merges.candidates() == [], case
    mms = [n.id for n in graph.nodes if "matmul" in n.kernel]
    assert len(mms) == 2
    with pytest.raises(ScheduleMismatchError, match="cannot be merged"):
        ios_tvm.build(mod, "llvm", merging(graph, [mms]))


# -- costs ------------------------------------------------------------------------------------------
def test_analytic_merge_cost_of_matmuls(cases):
    """One matmul kernel (class matmul) with the input read once, the weights and outputs of all,
    the FLOPs of all (nothing padded), plus the split copying the outputs."""
    _, _, _, graph = cases
    cm = AnalyticCostModel.for_target(CUDA)
    fam = tuple(graph.merges.families[0])
    nodes = [graph.nodes[v] for v in fam]
    flops = sum(n.flops for n in nodes)
    tb = ios_tvm.ir.graph.tensor_bytes
    nbytes = tb(*nodes[0].inputs[0]) + sum(tb(*n.inputs[1]) + tb(*n.outputs[0]) for n in nodes)
    out_bytes = sum(tb(*n.outputs[0]) for n in nodes)
    elements = sum(n.out_elements for n in nodes)
    want = (cm.kernel_time("merged_matmul", flops, nbytes, elements)[0]
            + cm.kernel_time("split", 0.0, 2 * out_bytes, elements)[0])
    assert flops > 0 and cm.merge_latency(graph, fam) == pytest.approx(want)


def test_measured_merge_cost_of_matmuls(cases, tmp_path):
    """The merged matmul (zero weights) built and timed on the CPU, once: the second ask is cached."""
    from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel

    _, _, _, graph = cases
    cm = MeasuredCostModel("llvm", MeasureConfig(warmup=1, repeat=2, cache_dir=tmp_path, progress=False),
                           database=None)
    fam = tuple(graph.merges.families[0])
    first = cm.merge_latency(graph, fam)
    assert first > 0 and cm.measured == 1
    assert cm.merge_latency(graph, fam) == first and cm.measured == 1


def test_search_chooses_matmul_merges_when_they_pay(cases, free_merges):
    mod, data, ref, graph = cases
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=free_merges, search=SearchConfig(strategy="both"))
    assert sorted(map(sorted, sched.merges)) == sorted(map(sorted, graph.merges.families))
    np.testing.assert_allclose(_run(mod, data, sched), ref, rtol=1e-5, atol=1e-5)


# -- what merges compose with ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama():
    mod = models.get("llama", small=True)
    return models.bind_params(mod, models.random_params(mod)), models.random_input(mod)


def test_merges_with_concurrency_memory_check_and_variants(llama):
    """LLaMA (small): Q/K/V and gate/up merge, other kernels run side by side; the memory plan
    is race-free; a kernel variant on a kernel that is not merged runs at its call site; the
    build equals the sequential one."""
    from ios_tvm.transform.kernel_schedules import VARIANT_ATTR, _native
    from ios_tvm.transform.kernel_schedules import _normalize as normalize

    mod, data = llama
    graph = _plan(mod)
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=_MergeFriendly())
    assert len(sched.merges) == 4 and any(len(st.groups) > 1 for st in sched.stages)
    assert verify_memory(plan_memory(mod, "llvm", sched)) == []
    merged = {v for m in sched.merges for v in m}
    node = next(n for n in graph.nodes if n.kernel.startswith("matmul") and n.id not in merged)
    sch = tvm.s_tir.Schedule(normalize(graph.mod[node.kernel]))  # a variant by hand: its outer loop split
    loops = sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])
    sch.split(loops[0], [None, 2])
    sched.variants = {node.id: {"kernel": node.kernel, "target": "llvm:generic", "rank": 1, "run_secs": 1.0,
                                "trace": _native(sch.trace.as_json())}}
    planned = plan_memory(mod, "llvm", sched)
    assert planned[f"{node.kernel}_ios_variant"].attrs[VARIANT_ATTR] == node.kernel
    np.testing.assert_allclose(_run(mod, data, sched), _run(mod, data), rtol=1e-5, atol=1e-5)


def test_merged_schedules_compile_for_sm90_with_cuda_graphs(llama):
    mod, _ = llama
    sched = ios_tvm.optimize(mod, CUDA, cost_model=_MergeFriendly())
    assert sched.merges and sched.max_streams > 1
    for cuda_graph in (False, True):
        text = ios_tvm.build(mod, CUDA, sched, cuda_graph=cuda_graph).as_text()
        assert "ios_merge0_" in text and ("vm.builtin.cuda_graph.run_or_capture" in text) == cuda_graph


def test_nothing_is_merged_twice_after_combine_parallel_matmul(llama):
    """TVM's CombineParallelMatmul on the model with its weights as parameters (where it
    combines; with constant weights it does nothing), the weights bound after: each combined
    matmul's weight is a concatenation, not a constant, so IOS finds nothing left to merge, and
    the module builds and computes what the original computes."""
    mod, data = llama
    raw = models.get("llama", small=True)
    params = models.random_params(raw)
    combined = models.bind_params(relax.transform.CombineParallelMatmul()(raw), params)

    def matmuls(m):
        return sum(isinstance(b.value, relax.Call) and b.value.op.same_as(tvm.ir.Op.get("relax.matmul"))
                   for blk in m["main"].body.blocks for b in blk.bindings)

    assert matmuls(combined) == matmuls(mod) - 2 * 3  # per layer: Q, K, V -> 1; gate, up -> 1
    graph = _plan(combined)
    assert graph.merges.families == [] and not any(isinstance(u, MatmulUnit) and len(u.weight.shape) == 2
                                                   and u.channels > 96 for u in find_units(combined["main"]))
    sched = ios_tvm.optimize(combined, "llvm", graph=graph, cost_model=_MergeFriendly())
    assert not sched.merges
    np.testing.assert_allclose(_run(combined, data, sched), _run(mod, data), rtol=1e-5, atol=1e-5)


def test_merged_module_of_matmul_units(cases):
    """``merged_module``: the head on the concatenated weights, the epilogue once, the split."""
    _, _, _, graph = cases
    units = [graph.merges.units[v] for v in graph.merges.families[2]]  # onnx, bias, relu
    assert mergeable(units)
    mini = merged_module(units)
    ops = [b.value.op.name for b in mini["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert ops == ["relax.matmul", "relax.add", "relax.nn.relu", "relax.split"]
    w = mini["main"].body.blocks[0].bindings[0].value.args[1].value.numpy()
    np.testing.assert_array_equal(w, np.concatenate([u.weight for u in units], axis=1))


def test_merged_linear_layers_compile_for_sm90(cases):
    """Every form (2-D and 3-D inputs) merged, in CUDA code for sm_90."""
    mod, _, _, _ = cases
    graph = _plan(mod, CUDA)
    assert [len(f) for f in graph.merges.families] == [len(widths) for *_, widths in CASES.values()]
    text = ios_tvm.build(mod, CUDA, merging(graph, graph.merges.families)).as_text()
    assert all(f"@ios_merge{j}_split " in text for j in range(len(CASES)))
