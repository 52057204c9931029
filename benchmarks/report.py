"""Render benchmark results (JSON from gpu_e2e.py, tuning.py, search_cost.py, memory_sweep.py,
calibrate_analytic.py) as Markdown tables and, optionally, a speed-up chart.

    python benchmarks/report.py benchmarks/results/*.json [--plot speedups.png]

Each table says where its numbers come from (device, driver, versions, commit, date of the file),
so CPU and GPU results never mix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _where(prov: dict[str, Any]) -> str:
    dev = prov.get("gpu") or f"CPU ({prov.get('cpus', '?')} cores, {prov.get('machine', '?')})"
    parts = [dev]
    for key in ("driver", "nvcc", "tvm", "tvm_ffi", "commit"):
        if prov.get(key):
            parts.append(f"{key} {prov[key]}")
    return ", ".join(parts)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def render_e2e(data: dict[str, Any], name: str) -> tuple[str, dict[str, dict[str, float]]]:
    """Latency per model and schedule, with speed-up over TVM sequential; where the results carry
    them, the prediction (measured / predicted) and the planned activation memory (vs
    sequential) of each TVM row."""
    rich = any(isinstance(r.get("predicted_s"), dict) for r in data["models"].values())
    rows = ["| model | schedule | latency (ms) | vs sequential |" + (" measured / predicted | memory vs sequential |"
                                                                    if rich else ""),
            "|---|---|---:|---:|" + ("---:|---:|" if rich else "")]
    speedups: dict[str, dict[str, float]] = {}
    notes = []
    for model, row in data["models"].items():
        for label, why in row.get("failed", {}).items():
            notes.append(f"- {model} {label}: failed: {why.splitlines()[0][:300]}")
        if "sequential_s" not in row:
            notes.append(f"- {model}: {row.get('error') or 'not timed (the run ended first)'}")
            continue
        if row.get("complete") is False:
            notes.append(f"- {model}: incomplete (the run ended before its other rows)")
        seq = _median(row["sequential_s"])
        speedups[model] = {}
        timed = {k[:-2]: _median(v) for k, v in row.items() if k.endswith("_s") and isinstance(v, list)}
        torch = row.get("torch") or {}
        for k, v in torch.items():  # torch_{eager,compile}[_fp32|_default]_s
            if k.startswith("torch_") and k.endswith("_s") and isinstance(v, list):
                timed[k[:-2]] = _median(v)
        ratio, memory = row.get("measured_over_predicted", {}), row.get("memory_vs_sequential", {})
        for label, t in timed.items():
            speedups[model][label] = seq / t
            extra = ""
            if rich:
                extra = (f" {ratio[label]:.2f}x |" if label in ratio else " - |") + \
                        (f" {memory[label]:.2f}x |" if label in memory else " - |")
            rows.append(f"| {model} | {label} | {t * 1e3:.3f} | {seq / t:.2f}x |{extra}")
    head = f"### End to end: {name}\n\n{_where(data.get('provenance', {}))}\n\n"
    tail = "\n\n" + "\n".join(notes) + "\n" if notes else "\n"
    return head + "\n".join(rows) + tail + _cache_states(data), speedups


def _cache_states(data: dict[str, Any]) -> str:
    """Measured end to end over the sum of the stages timed hot and flushed (gpu_e2e with measured
    costs): the state whose ratio is nearer 1 is the one stage costs should be measured in."""
    rows = []
    for model, row in data["models"].items():
        for label, by_state in _by_label(row.get("measured_over_stage_sum", {})).items():
            cells = " | ".join(f"{by_state[s]:.2f}x" if s in by_state else "-" for s in ("hot", "flush"))
            rows.append(f"| {model} | {label} | {cells} |")
    if not rows:
        return ""
    return ("\nMeasured end to end over the summed stage latencies, stages timed with the cache hot and "
            "flushed:\n\n| model | schedule | hot | flushed |\n|---|---|---:|---:|\n" + "\n".join(rows) + "\n")


def _by_label(by_state: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for state, by in by_state.items():
        for label, ratio in by.items():
            out.setdefault(label, {})[state] = ratio
    return out


def render_tuning(data: dict[str, Any], name: str) -> str:
    rows = ["| kernels / schedule | latency (ms) | vs untuned sequential |", "|---|---:|---:|"]
    for label, r in data["results"].items():
        rows.append(f"| {label} | {r['median_s'] * 1e3:.3f} | {r['speedup_vs_untuned_sequential']:.2f}x |")
    head = (f"### Tuning: {name} ({data['model']}{' small' if data.get('small') else ''}, "
            f"{data['trials_per_task']} trials/task)\n\n{_where(data.get('provenance', {}))}\n\n")
    return head + "\n".join(rows) + "\n"


def render_search(data: dict[str, Any], name: str) -> str:
    rows = ["| model | kernels | blocks | states | transitions | stages | distinct stages | measuring (est.) "
            "| search (s) | under a budget (s) | direct search (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        distinct = f"{r['distinct_stages']:,}" if "distinct_stages" in r else "-"
        estimate = f"{r['measure_estimate_s']:.0f} s" if "measure_estimate_s" in r else "-"
        direct = f"{r['reference_search_s']:.2f}" if "reference_search_s" in r else "-"
        budgeted = f"{r['budgeted_search_s']:.2f}" if "budgeted_search_s" in r else "-"
        rows.append(f"| {r['model']} | {r['kernels']} | {r['blocks']} | {r['states']:,} | {r['transitions']:,} | "
                    f"{r['stages']:,} | {distinct} | {estimate} | {r['search_s']:.2f} | {budgeted} | {direct} |")
    env = data.get("environment", {})
    return f"### Search cost: {name}\n\n{env.get('cpus', '?')} CPUs, TVM {env.get('tvm', '?')}\n\n" + "\n".join(rows) + "\n"


def render_memory(data: dict[str, Any], name: str) -> str:
    """Latency against planned memory under memory budgets (``memory_sweep.py``)."""
    budgets = [p["budget"] for p in data["rows"][0]["points"]]
    rows = ["| model | " + " | ".join(b or "unbounded" for b in budgets) + " |", "|---" + "|---:" * len(budgets) + "|"]
    for r in data["rows"]:
        cells = [f"{100 * (p['latency_vs_unbounded'] - 1):+.1f}% ({p['memory_vs_sequential']:.2f}x)" for p in r["points"]]
        rows.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    env = data.get("environment", {})
    return (f"### Memory budgets: {name}\n\nlatency lost against unbounded IOS (planned memory against sequential); "
            f"{env.get('cpus', '?')} CPUs, TVM {env.get('tvm', '?')}\n\n" + "\n".join(rows) + "\n")


def render_calibration(data: dict[str, Any], name: str) -> str:
    """Kernel latencies timed for the analytic cost model (``calibrate_analytic.py``)."""
    rows = ["| model | kernels | kernels summed (ms) | end to end (ms) | multi-group stages timed |",
            "|---|---:|---:|---:|---:|"]
    for r in data["models"]:
        rows.append(f"| {r['model']}{' small' if r.get('small') else ''} | {len(r['kernels'])} | "
                    f"{r['sum_of_kernels_s'] * 1e3:.3f} | {r['end_to_end_s'] * 1e3:.3f} | {len(r.get('stages', []))} |")
    return (f"### Kernel latencies for the analytic model: {name}\n\n{_where(data.get('provenance', {}))}\n\n"
            + "\n".join(rows) + "\n")


def plot(speedups: dict[str, dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(speedups)
    labels = sorted({k for v in speedups.values() for k in v})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(models)), 3.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [m + i * width for m in range(len(models))]
        ax.bar(xs, [speedups[m].get(label, 0.0) for m in models], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(models))], models)
    ax.set_ylabel("speed-up vs TVM sequential")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--plot", type=Path, help="speed-up chart of the end-to-end results")
    args = ap.parse_args(argv)
    out = []
    all_speedups: dict[str, dict[str, float]] = {}
    for f in args.files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"report: skipping {f}: {err}", file=sys.stderr)
            continue
        stamp = time.strftime("%Y-%m-%d", time.gmtime(f.stat().st_mtime))
        name = f"{f.name}, {stamp}"
        if isinstance(data.get("models"), list) and "settings" in data:
            out.append(render_calibration(data, name))
        elif "models" in data and "provenance" in data:
            text, speedups = render_e2e(data, name)
            out.append(text)
            all_speedups.update({f"{m}": s for m, s in speedups.items()})
        elif "results" in data and "trials_per_task" in data:
            out.append(render_tuning(data, name))
        elif "rows" in data and data["rows"] and "points" in data["rows"][0]:
            out.append(render_memory(data, name))
        elif "rows" in data:
            out.append(render_search(data, name))
        else:
            print(f"report: {f} is no benchmark result I know", file=sys.stderr)
    print("\n".join(out))
    if args.plot and all_speedups:
        print(f"chart: {plot(all_speedups, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
