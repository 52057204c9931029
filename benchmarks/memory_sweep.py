"""Latency against planned activation memory under memory budgets, on the full-size zoo (analytic
costs; no GPU needed): ``ios_tvm.driver.sweep.memory_sweep`` per model.

    python benchmarks/memory_sweep.py [--models nasnet_a_large ...] [--budgets 1.0x 1.25x]
                                      [--strategy concurrent] [--json out.json] [--png-dir DIR]

Per model and budget: the predicted latency (and its loss against the unbounded IOS schedule),
the activation memory TVM plans for the build (against the sequential schedule's), how the
schedule was found, and the seconds of the search and of the whole budget loop (TVM's memory
plans included). Per model also: how far the search's memory model (the peak of live tensors,
``ios_tvm.core.memory``) is from TVM's plan, for the sequential and the unbounded IOS schedules.
The machine's load average is recorded: it is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import tvm

import ios_tvm
from ios_tvm import models
from ios_tvm.core.memory import format_bytes, schedule_peak
from ios_tvm.driver.sweep import memory_sweep
from ios_tvm.ir.activations import output_bytes, output_nodes

BUDGETS = ["1.0x", "1.1x", "1.25x", "1.5x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=models.names())
    ap.add_argument("--budgets", nargs="*", default=BUDGETS)
    ap.add_argument("--strategy", default="concurrent", choices=("concurrent", "merge", "both"),
                    help="concurrent (default): every plan can be replayed; with merges TVM plans each")
    ap.add_argument("--target", default='{"kind": "cuda", "arch": "sm_90"}')
    ap.add_argument("--small", action="store_true", help="reduced models (a quick check)")
    ap.add_argument("--json", help="also write the points as JSON here")
    ap.add_argument("--png-dir", help="also plot each model's trade-off here")
    args = ap.parse_args()
    target = json.loads(args.target) if args.target.startswith("{") else args.target
    config = ios_tvm.SearchConfig(strategy=args.strategy)
    rows = []
    for name in args.models:
        mod = models.get(name, small=True) if args.small else models.get(name)
        if args.strategy != "concurrent":
            mod = models.bind_params(mod, models.random_params(mod))
        graph = ios_tvm.extract_graph(mod, target)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        points = memory_sweep(mod, target, list(args.budgets) + [None], search=config, cost_model="analytic",
                              database=None, graph=graph)
        free = points[-1]
        seq = free["sequential_bytes"]
        seq_model = schedule_peak(len(graph.nodes), graph.edges, output_bytes(graph), output_nodes(graph),
                                  [[[v]] for v in range(len(graph.nodes))])[0]
        print(f"{name}: sequential plans {format_bytes(seq)} (its memory model: {format_bytes(seq_model)}, "
              f"plan/model {seq / seq_model:.2f}); unbounded IOS {free['latency_s'] * 1e3:.3f} ms, plans "
              f"{free['planned_bytes'] / seq:.2f}x (model {format_bytes(free['model_peak_bytes'])}, plan/model "
              f"{free['planned_bytes'] / free['model_peak_bytes']:.2f})", flush=True)
        for p in points:
            p["latency_vs_unbounded"] = p["latency_s"] / free["latency_s"]
            p["memory_vs_sequential"] = p["planned_bytes"] / seq
            print(f"  {p['budget'] or 'unbounded':>10} {p['latency_s'] * 1e3:9.3f} ms {p['latency_vs_unbounded']:7.3f}x "
                  f"{format_bytes(p['planned_bytes']):>11} {p['memory_vs_sequential']:6.3f}x  {p['chosen']:<10} "
                  f"search {p['search_s']:6.2f} s, in all {p['time_s']:6.1f} s", flush=True)
        rows.append({"model": name, "sequential_model_peak_bytes": seq_model, "points": points,
                     "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                     "wall_s": round(time.perf_counter() - t0, 1)})
        if args.png_dir:
            from ios_tvm.viz import memory_plot

            Path(args.png_dir).mkdir(parents=True, exist_ok=True)
            memory_plot(points, Path(args.png_dir) / f"memory_{name}.png", title=f"{name}, sm_90, analytic")
    if args.json:
        env = dict(python=platform.python_version(), tvm=tvm.__version__, ios_tvm=ios_tvm.__version__,
                   machine=platform.machine(), cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d"))
        Path(args.json).write_text(json.dumps(dict(config=vars(args), environment=env, rows=rows), indent=1))


if __name__ == "__main__":
    main()
