"""End-to-end latency, side by side in one process with the same inputs: TVM sequential (also as
a CUDA graph), the greedy schedule, the IOS schedule, and PyTorch eager / torch.compile on
torchvision's versions of the same networks where torchvision has them. IOS runs with each
strategy: concurrent groups only, merged convolutions only, and both (the paper's IOS-Parallel,
IOS-Merge and IOS-Both). PyTorch runs its convolutions in TF32 by default, TVM in plain fp32:
each PyTorch peer is timed with TF32 off (``torch_*_fp32_s``, the fair fp32 comparison) and at
PyTorch's defaults (``torch_*_default_s``, what users get), and the switches are recorded.

    python benchmarks/gpu_e2e.py --out benchmarks/results/gpu_e2e_<gpu>.json      # on a GPU
    python benchmarks/gpu_e2e.py --target llvm --small --models squeezenet          # dry run, CPU
    python benchmarks/gpu_e2e.py --database tuning/sm_90/inception_v3 --variants 3 --models inception_v3

IOS schedules use measured stage costs on a GPU (``--cost-model measure``, the default there)
and the analytic model elsewhere. Every scheduled model's output is checked against the
sequential build's before it is timed. Results carry provenance (GPU, driver, CUDA, TVM, commit).
``--kernels vendor auto`` adds rows with cuDNN / cuBLASLt kernels (``ios_tvm.driver.kernels``): every
convolution and matmul they can run, or the faster alone per call, each as sequential, greedy and
IOS-Both, by kernel launches and as CUDA graphs (``*_vendor``, ``*_auto``, ``*_vendor_cuda_graph``, ...),
checked against TVM's sequential output like every row; ``kernels_<mode>`` records which nodes
and, for ``auto``, both kernels' times alone. Every TVM build uses the same kernels: ``--database`` (default ``auto``: the tuning database shipped
for the target, else untuned). ``--variants K`` adds ``ios_variants``: the IOS-Both schedule after
``ios_tvm.select_variants`` (needs a database). On CUDA, the sequential, greedy and IOS-Both
schedules also run as one CUDA graph each (``*_cuda_graph``; IOS searched with its stages timed
as graphs when costs are measured). Each row records its prediction (``predicted_s``: the cost
model's sum of stage latencies, ``measured_over_predicted``) and the activation memory its
build plans (``planned_memory_bytes``, ``memory_vs_sequential``, printed beside the speed-ups);
``ios_both_budget`` is IOS-Both searched under ``--memory-budget`` (default ``1.25x`` the sequential
schedule's planned memory; ``memory_budget``: what the search did). With measured costs, the
sequential and IOS-Both schedules' stages are timed again with the cache hot and flushed
(``stage_sum_s``, ``measured_over_stage_sum``): which state predicts the run. Identical kernels of
the builds compile once (``ios_tvm.cuda_cache``).

The zoo's transformers (bert, llama, moe; ``--seq-len``, ``--layers`` size them) run the same rows
and two more peers: PyTorch eager and ``torch.compile`` of their PyTorch twins
(``benchmarks/torch_zoo.py``, the very weights; the twin's output is checked against TVM's), and
``tvm_cpm_sequential``: TVM with ``relax.transform.CombineParallelMatmul`` applied (to the model
with its weights as parameters, then bound) and scheduled sequentially, the peer a TVM user would
try first (its combined matmuls have no tuning records: they run dlight's schedules).

A run cut short keeps what it timed: the JSON is rewritten after every timing, in phases by
interest (kernel launches: sequential, IOS-Both, greedy; then the same as CUDA graphs; the stage
sums; PyTorch; the other IOS strategies), and ``complete`` says whether a model ended. A row
that fails to build or computes a wrong result, or a phase that fails, is recorded under
``failed`` and the rest runs on; a model that fails whole gets ``error``; any of them makes the
exit status 1. Several processes can share a GPU (``IOS_TVM_DEVICE_LOCK``, see
``ios_tvm.profiling.exclusive_device``): they build side by side and time one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models
from ios_tvm.compiler import cuda_cache
from ios_tvm.compiler.pipeline import planned_memory
from ios_tvm.core.schedule import Schedule
from ios_tvm.cost import get_cost_model
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.ir import precision
from ios_tvm.ir.target import device_of, resolve_target
from ios_tvm.runtime.profiling import exclusive_device, median, provenance, time_vm

TORCHVISION = {"inception_v3": "inception_v3", "googlenet": "googlenet", "squeezenet": "squeezenet1_0"}


def torch_tf32_settings() -> dict:
    """PyTorch's TF32 switches as they stand (its defaults unless changed in this process)."""
    import torch

    return {"cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "float32_matmul_precision": str(torch.get_float32_matmul_precision())}


@contextlib.contextmanager
def torch_fp32_mode(tf32: bool | None):
    """``tf32=False``: convolutions and matmuls in plain fp32, as TVM's kernels compute (the fair
    comparison); ``None``: leave PyTorch's defaults (cuDNN convolutions in TF32: what users get).
    Restores the previous switches afterwards."""
    import torch

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
              torch.get_float32_matmul_precision())
    if tf32 is not None:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield torch_tf32_settings()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def torch_peers(name: str, batch: int, size: int, number: int, repeat: int, dtype: str = "float32") -> dict:
    """Eager and torch.compile(mode='reduce-overhead') latency of torchvision's network.

    float32: each with TF32 off (``*_fp32_s``: plain fp32 like TVM) and at PyTorch's defaults
    (``*_default_s``: cuDNN convolutions in TF32), the switches of each mode recorded. float16 /
    bfloat16: the network and input in that dtype (``*_half_s``: what ``model.half()`` users
    run) and the float32 network under ``torch.autocast`` (``*_autocast_s``: PyTorch's mixed
    precision, the analogue of ``ios_tvm.precision.convert``)."""
    try:
        import torch
        import torchvision
    except ImportError as err:
        return {"skipped": f"torch/torchvision not importable: {err}"}
    if not torch.cuda.is_available() or name not in TORCHVISION:
        return {"skipped": "no CUDA for torch" if name in TORCHVISION else "torchvision has no such network"}
    kwargs = {"weights": None}
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    net = getattr(torchvision.models, TORCHVISION[name])(**kwargs).eval().cuda()
    x = torch.randn(batch, 3, size, size, device="cuda")
    return time_torch(net, x, number, repeat, dtype, {"torchvision_model": TORCHVISION[name],
                                                      "note": "torchvision's layers (batch norm unfused; squeezenet "
                                                              "without bypass)"})


def twin_peers(name: str, params: dict, zoo_kwargs: dict, data: np.ndarray, want: np.ndarray, number: int,
               repeat: int, dtype: str = "float32") -> dict:
    """:func:`torch_peers` of a zoo transformer: its PyTorch twin (``benchmarks/torch_zoo.py``) with
    the same weights and input; ``max_abs_error_vs_tvm``: the twin's float32 output against
    TVM's sequential float32 output ``want`` (the same model computed by other kernels)."""
    try:
        import torch
    except ImportError as err:
        return {"skipped": f"torch not importable: {err}"}
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA for torch"}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_zoo import torch_twin

    net = torch_twin(name, params, **zoo_kwargs).cuda()
    x = torch.from_numpy(data).cuda()
    with torch.no_grad(), torch_fp32_mode(False):
        error = float(np.abs(net(x).cpu().numpy() - want).max()) if want is not None else None
    return time_torch(net, x, number, repeat, dtype, {"twin": "benchmarks/torch_zoo.py", "max_abs_error_vs_tvm": error})


def time_torch(net: Any, x: Any, number: int, repeat: int, dtype: str, info: dict) -> dict:
    """Eager and ``torch.compile(mode='reduce-overhead')`` latency of ``net`` on ``x`` (CUDA): in
    float32 with TF32 off and at PyTorch's defaults, in half precision as ``net.half()`` and under
    ``torch.autocast`` (see :func:`torch_peers`)."""
    import torch

    out = {**info, "torch": torch.__version__, "dtype": dtype, "tf32_defaults": torch_tf32_settings(), "modes": {}}

    def bench(fn, inp):
        with torch.no_grad():
            fn(inp)  # torch.compile compiles here, on the CPU, beside other processes' timings
            torch.cuda.synchronize()
            with exclusive_device():
                return timed(fn, inp)

    def timed(fn, inp):
        with torch.no_grad():
            for _ in range(9):
                fn(inp)
            torch.cuda.synchronize()
            samples = []
            for _ in range(repeat):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(number):
                    fn(inp)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3 / number)
        return samples

    def both(mode, model, inp, context=contextlib.nullcontext):
        with context():
            out[f"torch_eager_{mode}_s"] = bench(model, inp)
            try:
                torch._dynamo.reset()  # compile afresh: the captured graph keeps the math mode
                out[f"torch_compile_{mode}_s"] = bench(torch.compile(model, mode="reduce-overhead"), inp)
            except Exception as err:  # noqa: BLE001 - record why, keep the other numbers
                out[f"torch_compile_{mode}_error"] = f"{type(err).__name__}: {err}"[:500]

    if dtype == "float32":
        for mode, tf32 in (("fp32", False), ("default", None)):
            with torch_fp32_mode(tf32) as settings:
                out["modes"][mode] = settings
                both(mode, net, x)
        return out
    half = getattr(torch, dtype)
    out["modes"] = {"half": f"model and input in {dtype}", "autocast": f"float32 model under torch.autocast({dtype})"}
    both("autocast", net, x, lambda: torch.autocast("cuda", dtype=half))
    both("half", net.to(half), x.to(half))
    return out


def _failure(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:2000]


def stage_sums(graph: Any, target: Any, db: Any, schedules: dict[str, Schedule], config: MeasureConfig,
               states: tuple[str, ...] = ("hot", "flush")) -> dict[str, dict[str, float]]:
    """Each schedule's stages timed again with the cache hot and flushed before every sample,
    summed (seconds): set beside the schedule's measured run, they say which cache state the stage
    costs should be measured in (``MeasureConfig.cache_state``)."""
    sums: dict[str, dict[str, float]] = {}
    for state in states:
        cm = MeasuredCostModel(target, dataclasses.replace(config, cache_state=state, progress=False), database=db)
        sums[state] = {label: sum(cm.merge_latency(graph, tuple(st.nodes)) if st.kind == "merge"
                                  else cm.stage_latency(graph, tuple(tuple(g) for g in st.groups))
                                  for st in sched.stages)
                       for label, sched in schedules.items()}
    return sums


def run_model(name: str, dtype: str, args: argparse.Namespace, target: Any, dev: Any, db: Any,
              reference: dict[str, np.ndarray], row: dict | None = None,
              save: Callable[[], None] = lambda: None) -> dict:
    """One model in one precision: search, build every row (their outputs checked against the
    sequential build's within the dtype's tolerance), time them, and the PyTorch peers in the
    same dtype. ``reference`` holds each model's float32 sequential output (half rows report
    their error against it).

    Fills ``row`` in phases, calling ``save`` after every timing, so that a run cut short keeps
    what it timed and a phase that fails (recorded in ``row["failed"]``) costs only its rows:
    kernel launches (sequential, IOS-Both, greedy); on CUDA the same as CUDA graphs (IOS searched
    with its stages timed as graphs); the stage sums with hot and flushed caches; PyTorch; vendor
    kernels (``--kernels``); the other IOS strategies (and variants). ``row["complete"]`` says whether it ended."""
    t0 = time.perf_counter()
    row = {} if row is None else row
    row.update(dtype=dtype, complete=False)
    kwargs = zoo_kwargs(name, args)
    raw = models.get(name, **kwargs)
    params = models.random_params(raw)
    mod = models.bind_params(raw, params)
    data = models.random_input(mod)
    transformer = name in models.TRANSFORMERS
    extra: dict[str, Any] = {}  # rows of other modules: TVM with CombineParallelMatmul
    if transformer:
        extra["tvm_cpm_sequential"] = models.bind_params(relax.transform.CombineParallelMatmul()(raw), params)
        row["zoo_kwargs"] = kwargs
    if dtype != "float32":  # the same weights, converted (float32 inputs and outputs stay)
        mod = precision.convert(mod, dtype)
        extra = {label: precision.convert(m, dtype) for label, m in extra.items()}
    rtol, atol = precision.output_tolerance(dtype)
    graph = ios_tvm.extract_graph(mod, target)
    cost = get_cost_model(args.cost_model, target, db)
    failed: dict[str, str] = row.setdefault("failed", {})
    predicted: dict[str, float | None] = row.setdefault("predicted_s", {})
    mem: dict[str, int] = row.setdefault("planned_memory_bytes", {})
    ref: dict[str, np.ndarray] = {}

    block = args.max_block_size or (10 if name == "moe" else 16)  # MoE: the DP's widest blocks
    row["max_block_size"] = block

    def search(strategy: str, cost=cost, cuda_graph: bool = False):  # every row is timed below anyway
        return ios_tvm.optimize(mod, target, cost_model=cost, graph=graph, database=db, end_to_end=False,
                                search=ios_tvm.SearchConfig(strategy=strategy, max_block_size=block),
                                cuda_graph=cuda_graph)

    def run_rows(schedules: dict[str, Schedule | None]) -> None:
        """Build, check against sequential and time each row; a row that fails is recorded."""
        for label, sched in schedules.items():
            graph_mode = label.endswith("_cuda_graph")
            model = extra.get(label, mod)
            try:
                ex = ios_tvm.build(model, target, sched, database=db, cuda_graph=graph_mode)
                mem[label] = planned_memory(model, target, sched, database=db, cuda_graph=graph_mode)
                # outside the device lock: a first run may compile the CUDA source (seconds); one
                # inference beside another process's timing perturbs at most a sample of its medians
                out = relax.VirtualMachine(ex, dev)["main"](tvm.runtime.tensor(data, dev)).numpy()
                if label == "sequential":
                    ref["out"] = out
                else:
                    np.testing.assert_allclose(out, ref["out"], rtol=rtol, atol=atol, err_msg=f"{name} {label}")
            except Exception as err:  # noqa: BLE001 - recorded, reported, and the run exits non-zero
                if label == "sequential":
                    raise  # the reference of every other row
                failed[label] = _failure(err)
                mem.pop(label, None)
                continue
            row[f"{label}_s"] = time_vm(ex, dev, [data], number=args.number, repeat=args.repeat)
            seq = median(row["sequential_s"])
            row["speedup_vs_sequential"] = {k[:-2]: seq / median(v) for k, v in row.items()
                                            if k.endswith("_s") and isinstance(v, list)}
            row["measured_over_predicted"] = {k: median(row[f"{k}_s"]) / p for k, p in predicted.items()
                                              if p and f"{k}_s" in row}
            row["memory_vs_sequential"] = {k: b / mem["sequential"] for k, b in mem.items()}
            save()

    def phase(name_: str, body: Callable[[], None]) -> None:
        try:
            body()
        except Exception as err:  # noqa: BLE001 - the phase's rows are lost, the others run
            failed[name_] = _failure(err)

    # 1. kernel launches: what a reader looks for first
    ios = search("both")
    greedy = Schedule.greedy(graph, cost, max_num_groups=8)
    row.update({"kernels": len(graph.nodes), "cost_model": cost.name, "ios_stages": len(ios.stages),
                "ios_max_streams": ios.max_streams, "predicted_sequential_s": ios.meta["baselines_s"]["sequential"],
                "ios_merge_stages": len(ios.merges), "measure": ios.meta.get("measure"),
                "search": ios.meta["stats"], "search_time_s": ios.meta["time_s"]})
    predicted.update(sequential=ios.meta["baselines_s"]["sequential"], ios_both=ios.latency, greedy=greedy.latency)
    run_rows({"sequential": None, "ios_both": ios, "greedy": greedy, **{label: None for label in extra}})
    # 1b. IOS-Both under a memory budget: the price of concurrency when memory is bounded
    def budgeted() -> None:
        sched = ios_tvm.optimize(mod, target, cost_model=cost, graph=graph, database=db, end_to_end=False,
                                 search=ios_tvm.SearchConfig(strategy="both", max_block_size=block,
                                                             memory_budget=args.memory_budget))
        row["memory_budget"] = {k: v for k, v in sched.meta["memory"].items() if k != "candidates"}
        predicted["ios_both_budget"] = sched.latency
        run_rows({"ios_both_budget": sched})

    if args.memory_budget.lower() != "none":
        phase("memory_budget_phase", budgeted)
    if dtype == "float32":
        reference[name] = ref["out"]
    elif name in reference:  # how far the half model is from float32 (relative error of the output's norm)
        err = float(np.linalg.norm(ref["out"].astype(np.float64) - reference[name]) / np.linalg.norm(reference[name]))
        row["error_vs_float32"] = {"relative_norm": err, "in_unit_roundoffs": err / precision.unit_roundoff(dtype)}

    # 2. the same kernels, each run replayed as one CUDA graph
    def graphs() -> None:
        graph_cost = get_cost_model(args.cost_model, target, db, cuda_graph=True)
        ios_graph = search("both", graph_cost, cuda_graph=True)
        greedy_graph = Schedule.greedy(graph, graph_cost, max_num_groups=8)
        row["ios_cuda_graph_stages"] = len(ios_graph.stages)
        predicted.update(sequential_cuda_graph=ios_graph.meta["baselines_s"]["sequential"],
                         ios_both_cuda_graph=ios_graph.latency, greedy_cuda_graph=greedy_graph.latency)
        run_rows({"sequential_cuda_graph": None, "ios_both_cuda_graph": ios_graph, "greedy_cuda_graph": greedy_graph})
        if {"ios_both_cuda_graph", "sequential_cuda_graph"} <= set(mem):
            row["memory_vs_sequential"]["ios_both_cuda_graph_vs_sequential_cuda_graph"] = (
                mem["ios_both_cuda_graph"] / mem["sequential_cuda_graph"])

    if target.kind.name == "cuda":
        phase("cuda_graph_phase", graphs)

    # 3. which cache state predicts the run: the stages re-timed both ways (seconds of GPU time)
    def sums() -> None:
        timed = {"sequential": Schedule.sequential(graph), "ios_both": ios}
        by_state = stage_sums(graph, target, db, {k: v for k, v in timed.items() if f"{k}_s" in row}, cost.config)
        row["stage_sum_s"] = by_state
        row["measured_over_stage_sum"] = {state: {label: median(row[f"{label}_s"]) / v for label, v in by.items()}
                                          for state, by in by_state.items()}
        save()

    if isinstance(cost, MeasuredCostModel):
        phase("stage_sums_phase", sums)

    # 4. PyTorch in the same dtype: the bar
    if not args.no_torch and target.kind.name == "cuda":
        if transformer:
            row["torch"] = twin_peers(name, params, kwargs, data, reference.get(name), args.number, args.repeat, dtype)
        else:
            size = int(mod["main"].params[0].ty.shape[2])
            row["torch"] = torch_peers(name, args.batch_size, size, args.number, args.repeat, dtype)
        save()

    # 5. vendor kernels (cuDNN / cuBLASLt): per mode, sequential / greedy / IOS-Both with the kernels
    #    the search chose for it, by kernel launches and as CUDA graphs, checked against TVM's sequential
    def vendor(mode: str) -> None:
        for graph_mode in (False, True):
            cm = get_cost_model(args.cost_model, target, db, cuda_graph=graph_mode)
            ios_v = ios_tvm.optimize(mod, target, cost_model=cm, graph=graph, database=db, end_to_end=False,
                                     search=ios_tvm.SearchConfig(strategy="both"), cuda_graph=graph_mode,
                                     kernels=mode, tf32=args.tf32)
            rec = ios_v.meta["kernels"]
            row[f"kernels_{mode}"] = {k: rec.get(k) for k in ("vendor", "eligible", "tf32", "alone_s")}
            seq_v = Schedule.sequential(graph)
            greedy_v = Schedule.greedy(graph, None, max_num_groups=8)
            for s in (seq_v, greedy_v):
                s.meta["kernels"] = rec
            suffix = f"{mode}_cuda_graph" if graph_mode else mode
            predicted.update({f"sequential_{suffix}": ios_v.meta["baselines_s"]["sequential"],
                              f"ios_both_{suffix}": ios_v.latency, f"greedy_{suffix}": ios_v.meta["baselines_s"]["greedy"]})
            run_rows({f"sequential_{suffix}": seq_v, f"ios_both_{suffix}": ios_v, f"greedy_{suffix}": greedy_v})

    for mode in [k for k in args.kernels if k != "tvm"]:
        if target.kind.name != "cuda":
            row.setdefault("skipped", {})[f"kernels_{mode}"] = "vendor kernels need a CUDA target"
            continue
        phase(f"kernels_{mode}_phase", lambda mode=mode: vendor(mode))
    # 6. the paper's other strategies, and kernel variants
    def strategies() -> None:
        others = {f"ios_{s}": search(s) for s in ("concurrent", "merge")}
        if args.variants:
            others["ios_variants"] = ios_tvm.select_variants(mod, target, ios, database=db, top_k=args.variants,
                                                             graph=graph)
            row["variants"] = dict(others["ios_variants"].meta["variants"])
        predicted.update({label: sched.latency for label, sched in others.items()})
        run_rows(others)

    phase("strategies_phase", strategies)

    row["cuda_cache"] = cuda_cache.stats()
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    row["complete"] = True
    save()
    return row


def zoo_kwargs(name: str, args: argparse.Namespace) -> dict:
    """``models.get`` keyword arguments of zoo model ``name``: batch and size (``--small``), and
    for a transformer ``--seq-len`` and ``--layers`` when given."""
    kwargs: dict[str, Any] = {"batch_size": args.batch_size, "small": args.small}
    if name in models.TRANSFORMERS:
        for key, value in (("seq_len", args.seq_len), ("num_layers", args.layers)):
            if value is not None:
                kwargs[key] = value
    return kwargs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=models.names())
    ap.add_argument("--target", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="reduced models (quick dry runs)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens of the transformers (default: theirs, 128)")
    ap.add_argument("--layers", type=int, default=None,
                    help="layers of the transformers (default: theirs; fewer for a short GPU loan)")
    ap.add_argument("--max-block-size", type=int, default=None,
                    help="the search's block size (default 16; moe 10: its 19 matmuls on one input are the DP's "
                         "widest blocks)")
    ap.add_argument("--cost-model", default=None, help="measure | analytic (default: measure on a GPU)")
    ap.add_argument("--number", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--database", default="auto", help="tuning database directory, 'auto' or 'none'")
    ap.add_argument("--variants", type=int, default=0, metavar="K",
                    help="also run IOS-Both with concurrency-aware kernel variants (top K per kernel)")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float16", "bfloat16"],
                    help="precisions to run each model in (half: converted by ios_tvm.precision.convert; rows "
                         "'<model>:<dtype>'); default float32")
    ap.add_argument("--kernels", nargs="+", default=["tvm"], choices=["tvm", "vendor", "auto"],
                    help="kernel choices to run: 'tvm' (the rows above), 'vendor' (cuDNN / cuBLASLt wherever they "
                         "apply) and 'auto' (per call the faster alone, measured): rows '<row>_<mode>' and "
                         "'<row>_<mode>_cuda_graph' for sequential, greedy and IOS-Both (CUDA targets)")
    ap.add_argument("--tf32", action="store_true", help="vendor kernels in TF32 for float32 models")
    ap.add_argument("--memory-budget", default="1.25x", metavar="SIZE",
                    help="also run IOS-Both searched under this memory budget (ios_both_budget; 'none': not)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    target = resolve_target(args.target)
    dev = device_of(target)
    if target.kind.name == "cuda":  # the builds of one model share their kernels: compile them once
        cuda_cache.enable()
    db = None if args.database.lower() == "none" else args.database
    results = {"provenance": provenance(target), "settings": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    print(json.dumps(results["provenance"], indent=1), flush=True)
    reference: dict[str, np.ndarray] = {}  # float32 sequential output per model
    ok = True

    def write(results: dict) -> None:  # whole, then renamed: a run killed meanwhile leaves the last
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            part = args.out.with_name(args.out.name + ".part")
            part.write_text(json.dumps(results, indent=1))
            part.replace(args.out)

    for name in args.models:
        for dtype in args.dtypes:
            key = name if dtype == "float32" else f"{name}:{dtype}"
            row: dict = {}
            results["models"][key] = row
            try:
                run_model(name, dtype, args, target, dev, db, reference, row, lambda: write(results))
            except Exception as err:  # noqa: BLE001 - the other models still run; the exit code says it
                traceback.print_exc()
                row["error"] = _failure(err)
            if "error" in row:
                ok = False
                print(f"{key}: FAILED: {row['error']}", flush=True)
            else:
                summary = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_vs_sequential"].items())
                memory = ", ".join(f"{k} {v:.2f}x" for k, v in row.get("memory_vs_sequential", {}).items())
                print(f"{key}: sequential {median(row['sequential_s']) * 1e3:.3f} ms; {summary}; planned memory vs "
                      f"sequential: {memory}", flush=True)
            for label, why in row.get("failed", {}).items():
                ok = False
                print(f"{key}: row {label} FAILED: {why}", flush=True)
            write(results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
