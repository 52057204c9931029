"""Transformers: the zoo's BERT, LLaMA-style and mixture-of-experts stacks (sizes, knobs, their
PyTorch twins as an independent reference, merges and schedules), and the same three kinds of
block written in plain PyTorch, imported through ``torch.export`` (and BERT's through ONNX):
merge stages chosen where a cost model makes merging cheaper, builds equal to PyTorch eager in
float32 and float16, sm_90 code with merges and concurrent stages.

(The zoo transformers also run through every test parametrized over ``models.names()``: small
versions scheduled and built on CPU equal to sequential, half precision, CUDA code and graphs.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import SearchConfig, models
from ios_tvm.errors import InvalidArgumentError
from ios_tvm.ir.merge_plan import node_merges
from ios_tvm.ir.precision import output_tolerance, unit_roundoff

CUDA = {"kind": "cuda", "arch": "sm_90"}
ROOT = Path(__file__).resolve().parent.parent
HALF_TOLERANCE = 8  #: relative error of the output's norm, in units of u (as tests/test_precision.py)


def _params(mod):
    return sum(int(np.prod([int(d) for d in p.ty.shape])) for p in mod["main"].params[1:])


def _bound(name, **kwargs):
    mod = models.get(name, small=True, **kwargs)
    params = models.random_params(mod)
    return models.bind_params(mod, params), params, models.random_input(mod)


def _run(mod, data, sched=None, dtype=None):
    out = relax.VirtualMachine(ios_tvm.build(mod, "llvm", sched, dtype=dtype), tvm.cpu())["main"](
        tvm.runtime.tensor(data))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def _relative(out, ref):
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


# -- the zoo ------------------------------------------------------------------------------------------
def test_zoo_transformers_are_sized_like_the_originals():
    """BERT-base's encoder (85M), TinyLlama-1.1B's decoder layers (LLaMA-2 architecture, grouped
    key/value heads), and a 24-layer stack of top-2-of-8 experts with a shared expert at
    Qwen1.5-MoE's widths; embeddings and heads are not built."""
    bert, llama, moe = (models.get(n) for n in ("bert", "llama", "moe"))
    assert [int(d) for d in bert["main"].params[0].ty.shape] == [1, 128, 768]
    assert _params(bert) == 12 * (4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768) == 85_054_464
    assert _params(llama) == 22 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632 + 2 * 2048) + 2048
    assert _params(moe) == 24 * (4 * 2048 * 2048 + 2048 * 8 + 8 * 3 * 2048 * 1408 + 3 * 2048 * 5632 + 2 * 2048) + 2048
    assert [int(d) for d in models.get("llama", batch_size=2, seq_len=32)["main"].params[0].ty.shape] == [2, 32, 2048]


def test_zoo_transformer_knobs_and_mistakes():
    assert models.describe_input("bert") == "128 tokens, 768 wide"
    assert models.describe_input("moe", small=True) == "16 tokens, 64 wide"
    assert models.shape_kwargs("llama", (2, 48, 64), small=True) == {"batch_size": 2, "seq_len": 48}
    with pytest.raises(InvalidArgumentError, match=r"of shape \(N, L, 768\).*e.g. data=1,128,768"):
        models.shape_kwargs("bert", (1, 3, 224, 224))
    with pytest.raises(InvalidArgumentError, match="has no image_size.*--input-shape data=N,L,768"):
        models.get("bert", image_size=224)
    with pytest.raises(InvalidArgumentError, match="no image size"):
        models.image_size_of("llama")
    with pytest.raises(InvalidArgumentError, match=r"hidden \(100\) must be a multiple of heads \(12\)"):
        models.get("bert", hidden=100)
    with pytest.raises(InvalidArgumentError, match="top_k .* at most experts"):
        models.get("moe", small=True, top_k=9)
    with pytest.raises(InvalidArgumentError, match="seq_len must be an integer >= 1"):
        models.get("llama", seq_len=0)


def _torch_zoo():
    pytest.importorskip("torch", reason="the PyTorch twins need torch")
    spec = importlib.util.spec_from_file_location("torch_zoo", ROOT / "benchmarks/torch_zoo.py")
    tz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tz)
    return tz


@pytest.mark.parametrize("name", models.TRANSFORMERS)
def test_zoo_transformers_equal_their_pytorch_twins(name, free_merges):
    """The small zoo model against its PyTorch twin (the same weights, PyTorch's operators): the
    sequential build, and the IOS-Both schedule with merges chosen (a cost model under which
    merging pays) equal to it within 1e-4."""
    import torch

    tz = _torch_zoo()
    mod, params, data = _bound(name)
    with torch.no_grad():
        want = tz.torch_twin(name, params, small=True)(torch.from_numpy(data)).numpy()
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=free_merges)
    assert sched.merges and all(graph.merges.units[m[0]].kind == "matmul" for m in sched.merges)
    np.testing.assert_allclose(_run(mod, data), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_run(mod, data, sched), want, rtol=1e-4, atol=1e-4)


def test_moe_top2_of_8_merges_its_fan_out(free_merges):
    """The small MoE with the full model's 8 experts (the registry's small one has 4): the router,
    the shared expert's and the experts' gate and up projections read one tensor and form one
    family; merges chosen among its first 8; equal to the twin."""
    import torch

    tz = _torch_zoo()
    mod, params, data = _bound("moe", experts=8)
    graph = ios_tvm.extract_graph(mod, "llvm")
    graph.merges = node_merges(mod, graph)
    widths = sorted(len(f) for f in graph.merges.families)
    assert widths == [3, 1 + 2 + 2 * 8]  # Q, K, V | router, shared gate/up, 8 x gate/up
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=free_merges, search=SearchConfig(max_block_size=12))
    assert any(len(m) > 3 for m in sched.merges)
    with torch.no_grad():
        want = tz.torch_twin("moe", params, small=True, experts=8)(torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(_run(mod, data, sched), want, rtol=1e-4, atol=1e-4)


# -- blocks written in PyTorch, imported ---------------------------------------------------------
def _blocks():
    torch = pytest.importorskip("torch", reason="PyTorch import needs torch (.ci/run installs the CPU build)")
    nn, F = torch.nn, torch.nn.functional

    def split_heads(t, heads):
        b, n, h = t.shape
        return t.reshape(b, n, heads, h // heads).transpose(1, 2)

    class BertBlock(nn.Module):
        """A post-norm encoder layer (BERT's), biases everywhere."""

        def __init__(self, h=32, heads=4, ff=64):
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
            self.fc1, self.fc2 = nn.Linear(h, ff), nn.Linear(ff, h)

        def forward(self, x):
            b, n, h = x.shape
            q, k, v = (split_heads(f(x), self.heads) for f in (self.q, self.k, self.v))
            a = torch.softmax(q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5, -1) @ v
            x = self.ln1(x + self.o(a.transpose(1, 2).reshape(b, n, h)))
            return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))

    class RMSNorm(nn.Module):
        def __init__(self, h):
            super().__init__()
            self.weight = nn.Parameter(torch.rand(h) + 0.5)

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    def gated(h, ff):
        return nn.ModuleList([nn.Linear(h, ff, bias=False), nn.Linear(h, ff, bias=False), nn.Linear(ff, h, bias=False)])

    def mlp(m, x):
        return m[2](F.silu(m[0](x)) * m[1](x))

    class LlamaBlock(nn.Module):
        """A pre-norm decoder layer (LLaMA's): RMSNorm, causal attention with rotary embeddings
        (cached as buffers, as Hugging Face's), a SiLU-gated MLP, no biases."""

        def __init__(self, h=32, heads=4, ff=48, n=8):
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v, self.o = (nn.Linear(h, h, bias=False) for _ in range(4))
            self.n1, self.n2, self.mlp = RMSNorm(h), RMSNorm(h), gated(h, ff)
            d = h // heads
            freqs = torch.outer(torch.arange(n).float(), 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d))
            emb = torch.cat([freqs, freqs], -1)
            self.register_buffer("cos", emb.cos())
            self.register_buffer("sin", emb.sin())
            self.register_buffer("mask", torch.full((n, n), float("-inf")).triu(1))

        def rope(self, t):
            half = t.shape[-1] // 2
            return t * self.cos + torch.cat([-t[..., half:], t[..., :half]], -1) * self.sin

        def forward(self, x):
            b, n, h = x.shape
            y = self.n1(x)
            q, k, v = (split_heads(f(y), self.heads) for f in (self.q, self.k, self.v))
            q, k = self.rope(q), self.rope(k)
            a = torch.softmax(q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5 + self.mask, -1) @ v
            x = x + self.o(a.transpose(1, 2).reshape(b, n, h))
            return x + mlp(self.mlp, self.n2(x))

    class MoELayer(nn.Module):
        """A router choosing the top 2 of 8 SiLU-gated experts per token (dense dispatch: every
        expert computes every token, weighted 0 where not chosen) and a shared expert."""

        def __init__(self, h=32, ff=16, experts=8):
            super().__init__()
            self.router = nn.Linear(h, experts, bias=False)
            self.experts = nn.ModuleList(gated(h, ff) for _ in range(experts))
            self.shared = gated(h, 2 * ff)

        def forward(self, x):
            p = torch.softmax(self.router(x), -1)
            kth = torch.topk(p, 2, -1).values[..., 1:2]
            w = torch.where(p >= kth, p, torch.zeros_like(p))
            w = w / w.sum(-1, keepdim=True)
            out = mlp(self.shared, x)
            for i, e in enumerate(self.experts):
                out = out + w[..., i:i + 1] * mlp(e, x)
            return out

    return torch, {"bert": BertBlock, "llama": LlamaBlock, "moe": MoELayer}


def _import(kind, via="torch"):
    """The block (seed 0), an input, PyTorch eager's output, and the Relax module."""
    torch, blocks = _blocks()
    torch.manual_seed(0)
    net = blocks[kind]().eval()
    x = torch.randn(1, 8, 32)
    with torch.no_grad():
        want = net(x).numpy()
    if via == "onnx":
        import io

        onnx = pytest.importorskip("onnx", reason="the test extra installs onnx")
        from tvm.relax.frontend.onnx import from_onnx

        f = io.BytesIO()
        torch.onnx.export(net, (x,), f, dynamo=False, opset_version=17, input_names=["x"])  # no onnxscript needed
        mod = from_onnx(onnx.load_from_string(f.getvalue()), keep_params_in_input=False)
    else:
        from tvm.relax.frontend.torch import from_exported_program

        mod = from_exported_program(torch.export.export(net, (x,)))
    return mod, x.numpy(), want


#: per block: the merge families IOS finds (widths of the layers that merge)
FAMILIES = {"bert": [[32, 32, 32]], "llama": [[32, 32, 32], [48, 48]], "moe": [[8, 32, 32, 16, 16] + [16] * 14]}


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.onnx")
@pytest.mark.parametrize("kind, via", [("bert", "torch"), ("llama", "torch"), ("moe", "torch"), ("bert", "onnx")])
def test_imported_blocks_merge_and_equal_eager(kind, via, free_merges):
    """Strategy both, with a cost model under which merging pays: the Q/K/V (and gate/up, and a
    mixture's router, shared and experts' projections) merge; built, equal to PyTorch eager
    within 1e-4."""
    mod, x, want = _import(kind, via)
    graph = ios_tvm.extract_graph(mod, "llvm")
    # the mixture's 19 matmuls on one input: blocks of 12 keep its search to seconds (16: minutes)
    search = SearchConfig(strategy="both", max_block_size=12 if kind == "moe" else 16)
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=free_merges, search=search)
    merges = graph.merges
    widths = [[merges.units[v].channels for v in fam] for fam in merges.families]
    assert widths == FAMILIES[kind]
    assert sched.merges and all(any(set(m) <= set(f) for f in merges.families) for m in sched.merges)
    np.testing.assert_allclose(_run(mod, x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_run(mod, x, sched), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "llama", "moe"])
def test_imported_blocks_in_float16(kind, free_merges):
    """Converted to float16: merges found on the half model (each layer's view of its input cast
    once), the merged build within float16's tolerance of the sequential one, and near PyTorch
    eager's float32 output (8 u of the output's norm)."""
    mod, x, want = _import(kind)
    half = ios_tvm.precision.convert(mod, "float16")
    sched = ios_tvm.optimize(mod, "llvm", dtype="float16", cost_model=free_merges,
                             search=SearchConfig(max_block_size=12 if kind == "moe" else 16))
    # one merge per family (the mixture's 19 projections: merges among the first 8 of them)
    assert len(sched.merges) == len(FAMILIES[kind]) if kind != "moe" else sched.merges
    seq, got = _run(mod, x, dtype="float16"), _run(mod, x, sched, dtype="float16")
    assert half is not mod
    np.testing.assert_allclose(got, seq, *output_tolerance("float16"))
    assert _relative(got, want) < HALF_TOLERANCE * unit_roundoff("float16")


def test_imported_blocks_compile_for_sm90_with_merges_and_streams(free_merges):
    """The LLaMA block on sm_90 (analytic costs of the GPU, merges priced as their slowest
    member): merge stages and concurrent stages both, CUDA code generated."""
    from ios_tvm.cost.analytic import AnalyticCostModel

    class FreeGPU(AnalyticCostModel):
        name = "analytic-free-merges"

        def merge_latency(self, graph, nodes):
            return max(self.stage_latency(graph, ((v,),)) for v in nodes)

    mod, _, _ = _import("llama")
    sched = ios_tvm.optimize(mod, CUDA, cost_model=FreeGPU.for_target(CUDA))
    assert sched.merges and any(st.kind == "concurrent" and len(st.groups) > 1 for st in sched.stages)
    text = ios_tvm.build(mod, CUDA, sched).as_text()
    assert "ios_merge0_" in text and ios_tvm.runtime.FORK in text


def test_zoo_transformers_on_the_command_line(capfd, tmp_path):
    """``ios-tvm optimize`` takes a transformer's batch and sequence length from --input-shape, and
    a knob it lacks (--image-size) is one error line that says what to give instead."""
    import json

    from test_cli_errors import assert_one_error, run_cli

    out = tmp_path / "bert.json"
    rc, _, err = run_cli(capfd, "optimize", "bert", "--small", "--input-shape", "data=2,8,64", "--target", "llvm",
                         "-o", out)
    assert rc == 0, err
    assert "loading bert (small) (8 tokens, 64 wide, batch 2)" in err
    meta = json.loads(out.read_text())["meta"]["model"]
    assert meta["seq_len"] == 8 and meta["batch_size"] == 2 and meta["inputs"]["data"] == [2, 8, 64]
    rc, out_, err = run_cli(capfd, "optimize", "bert", "--small", "--image-size", "10", "--target", "llvm")
    assert_one_error(rc, err, "--input-shape data=N,L,64 gives its batch N and sequence length L")
    rc, out_, err = run_cli(capfd, "optimize", "llama", "--small", "--input-shape", "data=1,8,32", "--target", "llvm")
    assert_one_error(rc, err, "of shape (N, L, 64)")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["llama", "moe"])
@pytest.mark.parametrize("dtype", [None, "float16"])
def test_merged_transformers_on_the_gpu(name, dtype):
    """On the GPU: the small LLaMA and MoE with their projections merged and other kernels on
    concurrent streams equal the sequential build (float32: 1e-5; float16: its tolerance), and
    repeated runs are identical (no race between the streams)."""
    from test_merge_matmul import _MergeFriendly

    from ios_tvm.ir.target import local_target

    target = local_target()
    mod, _, data = _bound(name)
    sched = ios_tvm.optimize(mod, target, cost_model=_MergeFriendly(), dtype=dtype,
                             search=SearchConfig(max_block_size=12))
    assert sched.merges and sched.max_streams > 1
    dev = tvm.cuda(0)

    def run(s, times=1):
        vm = relax.VirtualMachine(ios_tvm.build(mod, target, s, dtype=dtype), dev)
        return [vm["main"](tvm.runtime.tensor(data, dev)).numpy() for _ in range(times)]

    want = run(None)[0]
    outs = run(sched, times=5)
    np.testing.assert_allclose(outs[0], want, *(output_tolerance(dtype) if dtype else (1e-5, 1e-5)))
    for again in outs[1:]:
        np.testing.assert_array_equal(again, outs[0])
