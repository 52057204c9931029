"""Pictures of schedules: a Gantt chart with streams as lanes and stages as columns.

Each stage takes as wide a column as its latency (or one unit when unknown), every other stage
shaded; inside it every group is a bar on its own stream lane, split into its kernels, coloured
by what they do (convolution, matmul, pooling, other; a legend says which). Merge stages are
hatched. The time axis is in us, ms or s, whichever suits the schedule.
Needs matplotlib (``pip install ios-tvm[viz]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.schedule import Schedule
from .errors import MissingDependencyError

if TYPE_CHECKING:  # matplotlib is an optional extra
    import matplotlib.figure

MATPLOTLIB_MISSING = ("drawing schedules needs matplotlib, an optional extra of ios_tvm: pip install matplotlib "
                      "(or install ios_tvm with it: pip install '.[viz]' in the source tree, 'ios-tvm[viz]' from an index)")


def gantt(schedule: Schedule, path: str | os.PathLike, title: str | None = None, max_stages: int | None = None) -> Path:
    """Draw ``schedule`` to ``path`` (PNG, SVG or PDF by extension) and return the path."""
    fig = figure(schedule, title, max_stages)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def figure(schedule: Schedule, title: str | None = None, max_stages: int | None = None) -> "matplotlib.figure.Figure":
    """The Gantt chart of ``schedule`` as a ``matplotlib.figure.Figure`` (not drawn anywhere)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(MATPLOTLIB_MISSING) from None

    from .core.schedule import target_kind_arch
    from .cost.analytic import KERNEL_CLASSES, kernel_class

    stages = schedule.stages if max_stages is None else schedule.stages[:max_stages]
    known = all(st.latency is not None for st in stages)
    total = sum(st.latency for st in stages) if known else 0.0
    unit, scale = next(((u, f) for u, f, limit in (("us", 1e6, 1e-3), ("ms", 1e3, 1.0), ("s", 1.0, float("inf")))
                        if total < limit))
    widths = [st.latency * scale if known else 1.0 for st in stages]
    lanes = max((len(st.groups) for st in stages), default=1)
    fig_w = min(40.0, 4.0 + 0.25 * len(stages))
    fig = Figure(figsize=(fig_w, 1.6 + 0.5 * lanes))
    ax = fig.subplots()
    palette = dict(zip(KERNEL_CLASSES, ("tab:blue", "tab:orange", "tab:green", "tab:grey")))
    x = 0.0
    for si, (st, w) in enumerate(zip(stages, widths)):
        if si % 2:  # every other stage shaded: stages stay apart where one kernel follows another
            ax.axvspan(x, x + w, color="0.93", zorder=0)
        for lane, group in enumerate(st.groups):
            n = len(group)
            for k, node in enumerate(group):
                ax.barh(lane, w / n, left=x + k * w / n, height=0.8,
                        color=palette[kernel_class(schedule.kernels[node])], edgecolor="black", linewidth=0.4,
                        hatch="//" if st.kind == "merge" else None, zorder=2)
        if si % max(1, len(stages) // 20) == 0:
            ax.text(x + w / 2, lanes - 0.35, str(si), ha="center", va="bottom", fontsize=6)
        x += w
    ax.set_yticks(range(lanes), [f"stream {i}" for i in range(lanes)])
    ax.set_ylim(-0.6, lanes)
    ax.invert_yaxis()
    ax.set_xlim(0, x)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel(f"time ({unit}, {schedule.meta.get('cost_model', 'cost model')} cost model); numbers under the "
                  "bars: stages"
                  if known else "stages (latency unknown: one unit each)")
    lat = schedule.latency
    head = title or f"{len(schedule.stages)} stages, {schedule.num_nodes} kernels"
    if lat is not None:
        head += f", {lat * 1e3:.3f} ms ({schedule.meta.get('cost_model', '')})"
    made_for = schedule.meta.get("target")
    if made_for is not None and target_kind_arch(made_for)[0] != "cuda":
        head += "; on a CPU the streams of a stage run one after another"
    ax.set_title(head, fontsize=9)
    used = {kernel_class(schedule.kernels[v]) for st in stages for v in st.nodes}
    handles = [Patch(facecolor=palette[c], edgecolor="black", label=c) for c in KERNEL_CLASSES if c in used]
    if any(st.kind == "merge" for st in stages):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="merged kernel"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.005, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def memory_plot(points: list[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Latency against planned activation memory for the points of
    :func:`ios_tvm.driver.budget.memory_sweep` (each labelled with its budget), the sequential
    schedule's memory as a line; to ``path`` (PNG, SVG or PDF by extension)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(MATPLOTLIB_MISSING) from None

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
