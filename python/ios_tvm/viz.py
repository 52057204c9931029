"""Pictures of schedules: a Gantt chart with streams as lanes and stages as columns.

Each stage takes as wide a column as its latency (or one unit when unknown); inside it every
group is a bar on its own stream lane, split into its kernels. Merge stages are hatched.
Needs matplotlib (``pip install ios-tvm[viz]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError

MATPLOTLIB_MISSING = ("drawing schedules needs matplotlib, an optional extra of ios_tvm: pip install matplotlib "
                      "(or install ios_tvm with it: pip install '.[viz]' in the source tree, 'ios-tvm[viz]' from an index)")


def gantt(schedule: Any, path: str | os.PathLike, title: str | None = None, max_stages: int | None = None) -> Path:
    """Draw ``schedule`` to ``path`` (PNG, SVG or PDF by extension) and return the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(MATPLOTLIB_MISSING) from None

    stages = schedule.stages if max_stages is None else schedule.stages[:max_stages]
    known = all(st.latency is not None for st in stages)
    widths = [st.latency * 1e6 if known else 1.0 for st in stages]
    lanes = max((len(st.groups) for st in stages), default=1)
    fig_w = min(40.0, 4.0 + 0.25 * len(stages))
    fig, ax = plt.subplots(figsize=(fig_w, 1.2 + 0.5 * lanes))
    colors = plt.get_cmap("tab20")
    x = 0.0
    for si, (st, w) in enumerate(zip(stages, widths)):
        for lane, group in enumerate(st.groups):
            n = len(group)
            for k, node in enumerate(group):
                ax.barh(lane, w / n, left=x + k * w / n, height=0.8, color=colors(node % 20),
                        edgecolor="black", linewidth=0.4, hatch="//" if st.kind == "merge" else None)
        if si % max(1, len(stages) // 20) == 0:
            ax.text(x + w / 2, lanes - 0.35, str(si), ha="center", va="bottom", fontsize=6)
        ax.axvline(x, color="grey", linewidth=0.3)
        x += w
    ax.set_yticks(range(lanes), [f"stream {i}" for i in range(lanes)])
    ax.set_ylim(-0.6, lanes)
    ax.invert_yaxis()
    ax.set_xlim(0, x)
    ax.set_xlabel("time (us, cost model)" if known else "stage (latency unknown)")
    lat = schedule.latency
    head = title or f"{len(schedule.stages)} stages, {schedule.num_nodes} kernels"
    if lat is not None:
        head += f", {lat * 1e3:.3f} ms ({schedule.meta.get('cost_model', '')})"
    ax.set_title(head, fontsize=9)
    if any(st.kind == "merge" for st in stages):
        ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch="//", label="merged kernel")],
                  loc="lower right", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def memory_plot(points: list[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Latency against planned activation memory for the points of
    :func:`ios_tvm.driver.budget.memory_sweep` (each labelled with its budget), the sequential
    schedule's memory as a line; to ``path`` (PNG, SVG or PDF by extension)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(MATPLOTLIB_MISSING) from None

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = [p["planned_bytes"] / 2**20 for p in points]
    ys = [p["latency_s"] * 1e3 for p in points]
    ax.plot(xs, ys, "o-", color="tab:blue")
    for x, y, p in zip(xs, ys, points):
        ax.annotate(p["budget"] or "unbounded", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(points[0]["sequential_bytes"] / 2**20, color="grey", linewidth=0.8, linestyle="--",
               label="sequential schedule's memory")
    ax.set_xlabel("planned activation memory (MiB)")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
