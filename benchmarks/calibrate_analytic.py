"""Per-kernel latencies on this machine, for calibrating (and checking) the analytic cost model.

    python benchmarks/calibrate_analytic.py --out benchmarks/results/analytic_calibration_cpu.json
    python benchmarks/calibrate_analytic.py --models squeezenet:small inception_v3 --repeat 3
    python benchmarks/calibrate_analytic.py --fit benchmarks/results/analytic_calibration_cpu.json

For each model (``NAME`` for the paper's size, ``NAME:small`` for the test size) this builds the
sequential model for the target without tuning records (the kernels a default build runs), times
every kernel alone through the runtime's stage path (``MeasuredCostModel.measure_stage``: the
same calls a lowered model makes), then every stage of the greedy schedule that has several
groups, and times the whole model end to end. Each kernel is recorded
with what the analytic model reads of it (FLOPs, bytes, output elements, kernel name), so the
model can be re-fitted and checked without rebuilding (``tests/test_analytic_calibration.py``).

``--fit FILE`` fits the CPU constants of ``ios_tvm.cost.analytic`` to such a file instead (the
squared log error of every kernel's predicted time; needs scipy) and prints them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ios_tvm
from ios_tvm import models
from ios_tvm.core.schedule import Schedule
from ios_tvm.cost import AnalyticCostModel
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.ir.target import as_target, device_of
from ios_tvm.runtime.profiling import median, provenance, time_vm

# The models the committed results hold (benchmarks/results/analytic_calibration_cpu.json).
DEFAULT_MODELS = ["squeezenet:small", "googlenet:small", "inception_v3:small", "randwire:small",
                  "nasnet_a_large:small", "squeezenet", "googlenet", "inception_v3"]


def measure_model(spec: str, target, warmup: int, repeat: int) -> dict:
    """Kernel and end-to-end latencies of one model (``NAME`` or ``NAME:small``)."""
    name, _, size = spec.partition(":")
    mod = models.get(name, small=size == "small")
    graph = ios_tvm.extract_graph(mod, target)
    cm = MeasuredCostModel(target, MeasureConfig(warmup=warmup, repeat=repeat, cache_dir=False, progress=False),
                           database=None)
    t0 = time.perf_counter()
    kernels = []
    for node in graph.nodes:
        seconds = cm.measure_stage(graph, ((node.id,),))
        kernels.append({"kernel": node.kernel, "flops": node.flops, "bytes": node.bytes,
                        "out_elements": node.out_elements, "measured_s": seconds})
    t1 = time.perf_counter()
    stages = []  # the greedy schedule's stages with several groups (run one after another on a CPU)
    for groups in Schedule.greedy(graph, max_num_groups=8).as_lists():
        if len(groups) > 1:
            stages.append({"groups": groups,
                           "measured_s": cm.measure_stage(graph, tuple(tuple(g) for g in groups))})
    params = models.random_params(mod)
    ex = ios_tvm.build(mod, target, database=None)
    data = models.random_input(mod)
    dev = device_of(target)
    end_to_end = median(time_vm(ex, dev, [data] + [params[p.name] for p in mod["main"].params[1:]],
                                number=1, repeat=repeat))
    analytic = AnalyticCostModel.for_target(target)
    predicted = sum(analytic.kernel_times(graph, v)[0] for v in range(len(graph.nodes)))
    row = {"model": name, "small": size == "small", "kernels": kernels, "stages": stages,
           "sum_of_kernels_s": sum(k["measured_s"] for k in kernels), "end_to_end_s": end_to_end,
           "kernels_wall_s": round(t1 - t0, 1)}
    print(f"{spec:24} {len(kernels):4} kernels  sum {row['sum_of_kernels_s'] * 1e3:10.3f} ms  "
          f"end to end {end_to_end * 1e3:10.3f} ms  analytic {predicted * 1e3:10.3f} ms", flush=True)
    return row


def fit(path: Path) -> dict[str, float]:
    """Constants of the analytic model's CPU preset that minimise the squared log error of the
    kernels in a results file (pool kernels define ``peak_flops``: their efficiency is 1)."""
    import math

    import numpy as np
    from scipy.optimize import minimize

    from ios_tvm.cost.analytic import kernel_class

    data = json.loads(path.read_text())
    kernels = [k for m in data["models"] for k in m["kernels"]]
    flops = np.array([k["flops"] for k in kernels])
    nbytes = np.array([k["bytes"] for k in kernels])
    measured = np.array([k["measured_s"] for k in kernels])
    classes = ["conv", "matmul", "pool", "other"]
    cls = np.array([classes.index(kernel_class(k["kernel"])) for k in kernels])
    names = ["launch_overhead", "bandwidth", "peak_flops", "eta_conv", "eta_matmul", "eta_other",
             "cache_slowdown", "cache_bytes"]

    def predict(x: np.ndarray) -> np.ndarray:
        launch, bandwidth, peak, e_conv, e_mm, e_other, slowdown, cache = np.exp(x)
        eta = np.array([e_conv, e_mm, 1.0, e_other])[cls]
        work = np.maximum(flops * (1 + slowdown * nbytes / (nbytes + cache)) / (eta * peak), nbytes / bandwidth)
        return launch + work

    def loss(x: np.ndarray) -> float:
        return float(np.sum(np.log(predict(x) / measured) ** 2))

    best = None
    for cache0 in (3e4, 1e5, 1e6):  # a few starts: the cache size has local minima
        x = np.log([2e-7, 60e9, 80e9, 0.3, 0.4, 0.5, 6.0, cache0])
        for _ in range(2):
            x = minimize(loss, x, method="Nelder-Mead",
                         options={"maxiter": 60000, "maxfev": 60000, "xatol": 1e-8, "fatol": 1e-12}).x
        if best is None or loss(x) < loss(best):
            best = x
    ratio = predict(best) / measured
    within = float(np.mean((ratio >= 0.5) & (ratio <= 2)))
    constants = dict(zip(names, (float(math.exp(v)) for v in best)))
    print(json.dumps(constants, indent=1))
    print(f"{within:.1%} of {len(kernels)} kernels within 2x")
    return constants


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--fit", type=Path, metavar="FILE", help="fit the analytic model's CPU constants to FILE")
    args = ap.parse_args()
    if args.fit:
        fit(args.fit)
        return 0
    target = as_target(args.target)
    rows = [measure_model(spec, target, args.warmup, args.repeat) for spec in args.models]
    if args.out:
        result = {"provenance": provenance(target), "date": time.strftime("%Y-%m-%d"),
                  "settings": {"warmup": args.warmup, "repeat": args.repeat, "statistic": "median",
                               "database": "none (untuned: the kernels of a default build)"},
                  "models": rows}
        args.out.write_text(json.dumps(result, indent=1))
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
