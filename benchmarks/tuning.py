"""Untuned vs MetaSchedule-tuned kernels, sequential vs IOS, side by side in one run.

    python benchmarks/tuning.py --model squeezenet --small --trials 8 --out benchmarks/results/tuning_cpu.json
    python benchmarks/tuning.py --model inception_v3 --target '{"kind":"cuda","arch":"sm_90"}' --trials 64

Tunes the model's kernels into ``--work-dir`` (re-used if it has them), searches an IOS schedule
with stage costs measured on each kernel set, builds the four combinations and times them end to
end with the same input. Prints latency ratios against untuned sequential. With ``--variants K``
a fifth row: the tuned IOS schedule after ``ios_tvm.select_variants`` tried the K best schedules
of each kernel of its concurrent stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.ir.target import device_of, tuning_target
from ios_tvm.runtime.profiling import median, provenance, time_vm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="squeezenet")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--trials", type=int, default=8, help="MetaSchedule trials per task")
    ap.add_argument("--work-dir", type=Path, default=None, help="tuning database (default: a temporary one)")
    ap.add_argument("--number", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--variants", type=int, default=0, metavar="K",
                    help="also time the tuned IOS schedule with concurrency-aware kernel variants (top K)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    target = tuning_target(args.target)
    dev = device_of(target)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ios_tvm_tune_"))
    mod = models.get(args.model, small=args.small)
    mod = models.bind_params(mod, models.random_params(mod))
    data = models.random_input(mod)

    t0 = time.perf_counter()
    report = ios_tvm.tune(mod, target, work, max_trials_per_task=args.trials, num_trials_per_iter=min(args.trials, 16))
    tune_s = time.perf_counter() - t0
    graph = ios_tvm.extract_graph(mod, target)
    rows = {}
    ref = None
    with tempfile.TemporaryDirectory() as cache:
        for kernels, db in (("untuned", None), ("tuned", str(work))):
            cm = MeasuredCostModel(target, MeasureConfig(warmup=2, repeat=5, cache_dir=cache, progress=False), database=db)
            sched = ios_tvm.optimize(mod, target, graph=graph, cost_model=cm, database=db)
            runs = [("sequential", None), ("ios", sched)]
            if db is not None and args.variants:
                runs.append(("ios_variants", ios_tvm.select_variants(
                    mod, target, sched, database=db, top_k=args.variants, graph=graph,
                    config=MeasureConfig(warmup=2, repeat=5, cache_dir=False, progress=False))))
            for label, s in runs:
                ex = ios_tvm.build(mod, target, s, database=db)
                out = relax.VirtualMachine(ex, dev)["main"](tvm.runtime.tensor(data, dev)).numpy()
                ref = out if ref is None else ref
                np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
                samples = time_vm(ex, dev, [data], number=args.number, repeat=args.repeat)
                rows[f"{kernels}_{label}"] = {"samples_s": samples, "median_s": median(samples),
                                              "stages": len(s.stages) if s is not None else len(graph.nodes),
                                              "max_streams": s.max_streams if s is not None else 1,
                                              "variant_call_sites": len(s.variants) if s is not None else 0,
                                              "variants": s.meta.get("variants") if s is not None else None}
    base = rows["untuned_sequential"]["median_s"]
    for k, r in rows.items():
        r["speedup_vs_untuned_sequential"] = base / r["median_s"]
        print(f"{k:22} {r['median_s'] * 1e3:10.3f} ms  {r['speedup_vs_untuned_sequential']:6.2f}x", flush=True)
    result = {"provenance": provenance(target), "model": args.model, "small": args.small, "trials_per_task": args.trials,
              "variants_top_k": args.variants, "tasks": len(report.tasks), "tuned_now": len(report.tuned), "tune_s": round(tune_s, 1), "results": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
