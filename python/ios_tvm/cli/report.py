"""What the ``ios-tvm`` command prints about a schedule: the search's report, predicted against
measured in words, and what a schedule file says it was made for."""

from __future__ import annotations

from typing import Any

from ..core.memory import format_bytes
from ..core.schedule import Schedule, target_kind_arch


def plural(n: int, word: str) -> str:
    """``"1 merge stage"``, ``"3 merge stages"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def target_name(target: Any) -> str:
    """``cuda sm_90`` or ``llvm``: a target (or a schedule's record of one) as people say it."""
    kind, arch = target_kind_arch(target)
    return f"{kind} {arch}" if arch else kind


def search_report(sched: Schedule, elapsed: float) -> str:
    """The search's report: the model, the graph and the search's size, the predicted (or
    measured) latency of sequential, greedy and IOS, and the end-to-end check when one ran."""
    meta = sched.meta
    stats = meta["stats"]
    base = meta["baselines_s"]
    # the search's IOS prediction (the schedule written may be a simpler one that ran faster)
    ios = (meta.get("end_to_end") or {}).get("predicted_s", {}).get("ios") or sched.latency or 0.0
    prediction = meta.get("prediction", {})
    is_measured = sched.measured
    lines = [
        f"model {meta['model']['name']}{precision_text(meta)}  target {target_name(meta['target'])}",
        f"graph: {plural(sched.num_nodes, 'kernel')}, {plural(stats['blocks'], 'block')}; search: "
        f"{plural(stats['states'], 'state')}, {plural(stats['transitions'], 'transition')}, "
        f"{plural(stats['stages'], 'candidate stage')}, {elapsed:.2f} s in all",
        "",
        f"{'measured stage' if is_measured else 'predicted'} latency ({meta['cost_model']} cost model"
        f"{', ' + prediction['device'] if prediction.get('device') else ''}):",
        f"  sequential {base['sequential'] * 1e3:9.4f} ms   1.00x",
        f"  greedy     {base['greedy'] * 1e3:9.4f} ms   {base['sequential'] / base['greedy']:.2f}x",
        f"  IOS        {ios * 1e3:9.4f} ms   {base['sequential'] / ios:.2f}x"
        f"   ({plural(len(sched.merges), 'merge stage')}, strategy {meta['search']['strategy']})",
    ]
    if prediction.get("known_error"):
        lines.append(f"  how far to trust it: {prediction['known_error']}")
    if "end_to_end" in meta:  # the guard built and timed the candidates
        lines += ["", *end_to_end_report(meta)]
    if "memory" in meta:
        lines.append(f"  {memory_line(meta['memory'])}")
    if "variants" in meta:
        v = meta["variants"]
        lines.append(f"  kernel variants: {v['call_sites']} call sites of {v['stages_tried']} concurrent stages "
                     f"run a runner-up schedule ({v['measurements']} measurements, "
                     f"{v['measured_gain_s'] * 1e6:.1f} us faster)")
    return "\n".join(lines)


def spread_text(spread: float | None, median: float) -> str:
    """``±3.1%``: the spread of a timing's samples around its median (blank when not recorded)."""
    return f"±{spread / median * 100:4.1f}%" if spread is not None and median > 0 else ""


def end_to_end_report(meta: dict) -> list[str]:
    """What the end-to-end check measured (with each time's noise), which schedule it kept and why."""
    e2e = meta["end_to_end"]
    spreads = e2e.get("spread_s") or {}
    runs = f", median of {e2e['samples']}" if e2e.get("samples") else ""
    lines = [f"measured end to end ({'CUDA graph' if timed_as_graph(meta) else 'kernel launches'}{runs}, ± the "
             "spread of the samples), against the stage costs' prediction:"]
    for label in ("sequential", "greedy", "ios"):
        t, pred = e2e["times_s"][label], e2e["predicted_s"].get(label)
        vs = f"   predicted {pred * 1e3:9.4f} ms ({t / pred:.2f}x)" if pred else ""
        noise = spread_text(spreads.get(label), t)
        lines.append(f"  {label:10} {t * 1e3:9.4f} ms {noise:>6}{vs}{'   <- kept' if label == e2e['chosen'] else ''}")
    chosen, lost = e2e["chosen"], e2e["ios_slower_by"]
    if chosen != "ios" and lost < 0:
        lines.append(f"  IOS ran {-lost * 100:.1f}% faster than {chosen}, within the measurement noise (the "
                     f"spread of the samples): no real difference, so the simpler {chosen} schedule is written")
    elif chosen != "ios":
        lines.append(f"  IOS ran {lost * 100:.1f}% slower than {chosen}, so the {chosen} schedule is written instead")
    return lines


def memory_line(memory: dict) -> str:
    """``memory budget 1.25x (51.78 MiB): planned 49.10 MiB, 95% of it (sequential 41.43 MiB)``."""
    how = {"unbounded": "the unbounded schedule fits", "sequential": "no concurrent schedule fit: sequential",
           "repaired": "stages split until it fit"}.get(memory.get("chosen", ""), memory.get("chosen", ""))
    return (f"memory budget {memory['budget']} ({format_bytes(memory['budget_bytes'])}): planned "
            f"{format_bytes(memory['planned_bytes'])}, {100 * memory['used']:.0f}% of it (sequential "
            f"{format_bytes(memory['sequential_bytes'])}; {how})")


def precision_text(meta: dict) -> str:
    """`` (float16, converted from float32)``: the precision a schedule's model computes in."""
    dtype = (meta.get("precision") or {}).get("dtype")
    if dtype is None or dtype == "float32":
        return ""
    return f" ({dtype}{', converted from float32' if meta['precision'].get('converted') else ''})"


def timed_as_graph(meta: dict) -> bool:
    """Whether the schedule's stages were timed as CUDA graphs."""
    return (meta.get("measure") or {}).get("launch") == "graph"


def explain(sched: Schedule, seq_measured: float, target: Any) -> list[str]:
    """Predicted against measured, in words: which cost model predicted, how far off it was,
    and what the known error of that model is."""
    meta = sched.meta
    predicted = meta["baselines_s"]["sequential"]
    note = meta.get("prediction", {})
    ratio = seq_measured / predicted
    off = f"{ratio:.2f}x slower than" if ratio >= 1 else f"{1 / ratio:.2f}x faster than"
    lines = []
    if sched.measured:
        lines.append(f"predicted vs measured: the sum of the measured stage latencies is {predicted * 1e3:.4f} ms for "
                     f"the sequential schedule; end to end ran {off} that (end to end adds the gaps between "
                     "kernel launches and the VM's own work).")
    else:
        lines.append(f"predicted vs measured: the {meta['cost_model']} cost model predicted "
                     f"{predicted * 1e3:.4f} ms for the sequential schedule ({note.get('device', 'its device')}); "
                     f"this machine ran it {off} predicted.")
        if note.get("known_error"):
            lines.append(f"  its known error: {note['known_error']}.")
        if not 0.5 <= ratio <= 2.0:
            lines.append("  that is outside the known error: this machine (or its load, or tuned kernels) differs from "
                         "what the model was calibrated on; --cost-model measure costs stages on this machine.")
    if target.kind.name != "cuda":
        lines.append("  on a CPU the groups of a stage run one after another, so IOS gains only from merged kernels "
                     "(convolutions, matmuls) and kernel order here; its concurrency pays off on a GPU.")
    return lines


def made_for(sched: Schedule) -> str:
    """`` (made for squeezenet, inputs data [1, 3, 64, 64])``: what ``ios-tvm optimize`` recorded."""
    made = sched.meta.get("model")
    if not isinstance(made, dict) or "name" not in made:
        return ""
    inputs = made.get("inputs")
    shapes = f", inputs {'; '.join(f'{n} {d}' for n, d in inputs.items())}" if isinstance(inputs, dict) else ""
    dtype = f", in {made['dtype']}" if isinstance(made.get("dtype"), str) else ""
    return f" (made for {made['name']}{shapes}{dtype})"
