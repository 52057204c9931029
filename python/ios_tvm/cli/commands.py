"""The ``ios-tvm`` commands: each ``cmd_*`` takes the parsed arguments and returns the exit status
(mistakes raise :class:`~ios_tvm.errors.IosTvmError`, which :func:`ios_tvm.cli.main.main` turns into
one line)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CUDAGraphError, DatabaseError, InvalidArgumentError, MissingDependencyError, ScheduleMismatchError
from .loading import describe_model, load_model, model_inputs, model_meta
from .progress import STATE, say
from .report import explain, made_for, memory_line, search_report, target_name


# -- what the options say ------------------------------------------------------------------------
def check_output(path: str | None, default: str) -> Path:
    """Where ``-o`` writes, checked before any work is done: not a directory, and writable."""
    out = Path(path or default)
    if out.is_dir():
        raise InvalidArgumentError(f"-o {out} is a directory: give a file name, e.g. -o {out / default}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InvalidArgumentError(f"-o {out}: cannot write in {parent}")
    return out


def target_of(args: argparse.Namespace) -> Any:
    """``--target``: ``auto`` (this machine), a name, a tag or JSON; checked to be one ios_tvm
    builds for."""
    from ..ir.target import device_type_of, resolve_target

    target = resolve_target(args.target)
    device_type_of(target)  # TargetError for kinds without a runtime (opencl, c, ...)
    if getattr(args, "cuda_graph", False) and target.kind.name != "cuda":
        raise CUDAGraphError(f"--cuda-graph replays CUDA kernels and needs a CUDA target, not {target.kind.name!r}: "
                             "drop --cuda-graph or give --target cuda")
    return target


def database_of(args: argparse.Namespace) -> Any:
    """``--database``: a directory, ``auto``, or ``None`` for ``none``."""
    return None if str(args.database).lower() == "none" else args.database


def check_database(args: argparse.Namespace, target: Any) -> None:
    """A ``--database`` directory must hold a database (reads never create one); ``--variants``
    needs one."""
    from ..compiler.databases import resolve_database

    db = resolve_database(database_of(args), target)
    if getattr(args, "variants", 0) and db is None:
        raise DatabaseError("--variants K picks among the kernel schedules of a tuning database, and there is "
                            f"none{' for this target' if database_of(args) else ''}: tune first (ios_tvm.tune) and "
                            "pass --database DIR")


# -- the steps the commands share ------------------------------------------------------------------
def search(args: argparse.Namespace, end_to_end: bool | None = None) -> tuple[Any, float, Any]:
    """Load the model and search its schedule: ``(schedule, seconds, model)``."""
    from ..cost import default_cost_model_name
    from ..driver import SearchConfig, optimize, select_variants

    target = target_of(args)
    check_database(args, target)
    config = SearchConfig(args.max_group_size, args.max_num_groups, args.max_block_size, args.strategy,
                          getattr(args, "memory_budget", None))
    say(f"loading {describe_model(args)}")
    mod = load_model(args)
    cost = args.cost_model or default_cost_model_name(target)
    STATE.measuring = cost == "measure"
    say(f"lowering it for {target_name(target)} and searching its stages ({cost} cost model"
        f"{': each candidate stage is timed on the device' if STATE.measuring else ''})",
        "measuring stage costs" if STATE.measuring else "searching stages")
    t0 = time.perf_counter()
    sched = optimize(mod, target, search=config, cost_model=cost, database=database_of(args),
                             cuda_graph=args.cuda_graph, end_to_end=end_to_end)
    if getattr(args, "variants", 0):
        say(f"trying the {args.variants} best kernel schedules of each concurrent stage's kernels (measured)")
        sched = select_variants(mod, target, sched, database=database_of(args), top_k=args.variants)
    sched.meta["model"] = model_meta(args, mod)
    sched.meta["precision"] = {**sched.meta.get("precision", {}), "converted": args.converted}  # --dtype converted it
    return sched, time.perf_counter() - t0, mod


def prepare_streams(sched: Any) -> None:
    """Let this process's runtime run the schedule's widest stage (demo, bench)."""
    from .. import runtime

    if sched is not None and sched.max_streams > runtime.pool_size():
        runtime.set_pool_size(sched.max_streams)


def build_model(mod: Any, target: Any, sched: Any, args: argparse.Namespace, label: str,
                num_kernels: int | None = None) -> Any:
    """Build ``mod`` with ``sched``, saying so."""
    from ..compiler.databases import resolve_database
    from ..compiler.pipeline import build

    kernels = f"{num_kernels} kernels" if num_kernels else "the kernels"
    tuned = resolve_database(database_of(args), target) is not None
    say(f"building the {label} model for {target_name(target)} (TVM compiles {kernels}, "
        f"{'with the tuning database' if tuned else 'untuned'})")
    return build(mod, target, sched, database=database_of(args), cuda_graph=args.cuda_graph)


def runs_per_sample(target: Any) -> int:
    """Runs averaged into one timing sample: 20 on a GPU (a run is short), 1 on a CPU."""
    return 20 if target.kind.name == "cuda" else 1


def time_model(ex: Any, dev: Any, inputs: list, target: Any, repeat: int, label: str,
               expect_s: float | None) -> float:
    """Median end-to-end seconds of ``repeat`` samples, saying how long it should take."""
    from ..runtime.profiling import median, time_vm

    number = runs_per_sample(target)
    hint = f", about {expect_s * number * (repeat + 1):.0f} s predicted" if expect_s and expect_s * number * repeat > 2 else ""
    say(f"timing the {label} model ({repeat} x {number} runs{hint})")
    return median(time_vm(ex, dev, inputs, number=number, repeat=repeat))


def measure_end_to_end(sched: Any, mod: Any, args: argparse.Namespace) -> str:
    """Build the sequential and the IOS model, check they agree, time both end to end."""
    import tvm
    from tvm import relax

    from ..ir.precision import model_dtype, output_tolerance
    from ..ir.target import device_of

    target = target_of(args)
    dev = device_of(target)
    if not dev.exist:
        return f"(not run: {dev} is not present on this machine)"
    prepare_streams(sched)
    inputs = model_inputs(mod)
    seq_ex = build_model(mod, target, None, args, "sequential", sched.num_nodes)
    ios_ex = build_model(mod, target, sched, args, "IOS-scheduled", sched.num_nodes)
    say("running both once to check their outputs agree")
    outs = []
    for ex in (seq_ex, ios_ex):
        out = relax.VirtualMachine(ex, dev)["main"](*[tvm.runtime.tensor(x, dev) for x in inputs])
        outs.append(out.numpy())
    rtol, atol = output_tolerance(model_dtype(mod))
    np.testing.assert_allclose(outs[1], outs[0], rtol=rtol, atol=atol)
    base = sched.meta["baselines_s"]
    seq = time_model(seq_ex, dev, inputs, target, args.repeat, "sequential", base["sequential"])
    ios = time_model(ios_ex, dev, inputs, target, args.repeat, "IOS-scheduled", sched.latency)
    return "\n".join([
        f"measured end to end on {dev} (median of {args.repeat}; outputs equal):",
        f"  sequential {seq * 1e3:9.4f} ms   1.00x",
        f"  IOS        {ios * 1e3:9.4f} ms   {seq / ios:.2f}x",
        *explain(sched, seq, target),
    ])


# -- the commands --------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    sched, elapsed, mod = search(args)
    print(sched.to_text(max_stages=args.stages))
    print()
    print(search_report(sched, elapsed), flush=True)
    if not args.no_run:
        text = measure_end_to_end(sched, mod, args)
        print()
        print(text)
    say("done")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    out = check_output(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.schedule.json")
    sched, elapsed, _ = search(args)
    sched.save(out)
    print(search_report(sched, elapsed))
    print(f"\nschedule written to {out}")
    return 0


def check_figure_path(path: str) -> Path:
    """``--png``: matplotlib installed, an extension it draws, a place it can write."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        from ..viz import MATPLOTLIB_MISSING

        raise MissingDependencyError(MATPLOTLIB_MISSING) from None
    out = Path(path)
    formats = Figure().canvas.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise InvalidArgumentError(f"--png {path}: name the picture with one of the extensions "
                                   f"{', '.join('.' + f for f in sorted(formats))} (it picks the format)")
    return check_output(path, "schedule.png")


def cmd_show(args: argparse.Namespace) -> int:
    from ..core.schedule import Schedule

    png = check_figure_path(args.png) if args.png else None
    sched = Schedule.load(args.schedule)
    print(sched.to_text(max_stages=None if args.all else 40))
    if "memory" in sched.meta:
        print(memory_line(sched.meta["memory"]))
    if png is not None:
        from ..viz import gantt

        print(f"Gantt chart written to {gantt(sched, png)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .. import runtime
    from ..core.schedule import Schedule
    from ..ir.graph import extract_graph
    from ..ir.precision import check_schedule_dtype

    out = check_output(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.so")
    target = target_of(args)
    check_database(args, target)
    say(f"loading {describe_model(args)}")
    mod = load_model(args)
    sched = graph = None
    if args.schedule:
        say(f"lowering it for {target_name(target)} to check the schedule")
        graph = extract_graph(mod, target)
        sched = Schedule.load(args.schedule)  # format errors first
        try:
            check_schedule_dtype(sched, mod)
            sched.validate(graph)
            sched.check_target(target)
        except ScheduleMismatchError as err:
            raise ScheduleMismatchError(f"{args.schedule}{made_for(sched)}: {err}") from None
        if sched.max_streams > runtime.pool_size():
            raise ScheduleMismatchError(
                f"{args.schedule} runs up to {sched.max_streams} concurrent streams and the runtime's stream pool "
                f"holds {runtime.pool_size()}: re-create it with -s {runtime.pool_size()} (or, in Python, call "
                f"ios_tvm.runtime.set_pool_size({sched.max_streams}) before building and before running it)")
    ex = build_model(mod, target, sched, args, "sequential" if sched is None else "IOS-scheduled",
                     None if graph is None else len(graph.nodes))
    say(f"writing {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    ex.export_library(str(out))
    what = "sequential (no schedule)" if sched is None else sched.summary()
    print(f"{out}: {what}; load it with tvm.runtime.load_module and relax.VirtualMachine "
          "(import ios_tvm first: the library calls its runtime)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Sequential, greedy and IOS built, checked against each other and timed end to end, by the
    very timer :func:`ios_tvm.optimize`'s end-to-end check uses (:mod:`ios_tvm.driver.guard`)."""
    from ..compiler.pipeline import planned_memory
    from ..core.schedule import Schedule
    from ..driver.guard import EndToEndConfig, end_to_end_timer, pick_fastest, record_prediction
    from ..ir.graph import extract_graph
    from ..ir.target import require_device

    target = target_of(args)
    dev = require_device(target, 0, "ios-tvm bench (it runs the model)")
    if target.kind.name == "cuda":  # the three builds share their kernels: compile them once
        from ..compiler import cuda_cache

        cuda_cache.enable()
    sched, _, mod = search(args, end_to_end=False)  # bench times all three itself
    graph = extract_graph(mod, target)
    schedules = {"sequential": None, "greedy": Schedule.greedy(graph, max_num_groups=args.max_num_groups),
                 "ios": sched}
    base_pred = sched.meta["baselines_s"]
    predicted = {"sequential": base_pred["sequential"], "greedy": base_pred["greedy"], "ios": sched.latency}
    number = runs_per_sample(target)
    timer = end_to_end_timer(mod, target, database=database_of(args), cuda_graph=args.cuda_graph,
                             config=EndToEndConfig(number=number, repeat=args.repeat))
    memory: dict[str, int] = {}

    def time_of(label: str, s: Any) -> float:
        prepare_streams(s)
        say(f"building the {label} model for {target_name(target)}, checking its output and timing it "
            f"({args.repeat} x {number} runs)")
        seconds = timer(label, s)
        memory[label] = planned_memory(mod, target, s, database=database_of(args), cuda_graph=args.cuda_graph)
        return seconds

    chosen, times = pick_fastest(schedules, time_of)
    record_prediction(graph.fingerprint, {**sched.meta, "end_to_end": {
        "times_s": times, "predicted_s": predicted, "chosen": chosen}})
    base = times["sequential"]
    how = "one CUDA graph each" if args.cuda_graph else "kernel launches"
    print(f"{args.model} on {dev} ({how}; median of {args.repeat}; outputs equal):")
    print(f"  {'':10} {'measured':>12} {'speed-up':>9} {'predicted':>12} {'measured/predicted':>19} "
          f"{'activation memory':>18}")
    for label, t in times.items():
        pred = predicted[label]
        ratio = f"{t / pred:18.2f}x" if pred else f"{'-':>19}"
        print(f"  {label:10} {t * 1e3:9.4f} ms {base / t:8.2f}x {pred * 1e3 if pred else 0:9.4f} ms {ratio} "
              f"{memory[label] / 2**20:9.2f} MiB {memory[label] / memory['sequential']:5.2f}x")
    print(f"  predicted by the {sched.meta['cost_model']} cost model; predicted vs measured kept in "
          "predictions.jsonl in the cache directory")
    if "memory" in sched.meta:
        print(f"  {memory_line(sched.meta['memory'])}")
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """The latency / memory trade-off of a model: the search under each budget, its plan."""
    from ..driver import SearchConfig
    from ..core.memory import format_bytes
    from ..driver.budget import DEFAULT_SWEEP
    from ..driver.sweep import memory_sweep

    png = check_figure_path(args.png) if args.png else None
    out = check_output(args.json, "memory.json") if args.json else None
    target = target_of(args)
    check_database(args, target)
    say(f"loading {describe_model(args)}")
    mod = load_model(args)
    budgets = list(args.budgets) + [None] if args.budgets else list(DEFAULT_SWEEP)
    config = SearchConfig(args.max_group_size, args.max_num_groups, args.max_block_size, args.strategy)
    say(f"lowering it for {target_name(target)} and searching it under {len(budgets)} memory budgets "
        "(TVM plans each result's memory)", "searching under memory budgets")
    points = memory_sweep(mod, target, budgets, search=config, cost_model=args.cost_model or "analytic",
                          database=database_of(args), cuda_graph=args.cuda_graph)
    seq = points[0]["sequential_bytes"]
    print(f"{args.model} on {target_name(target)} ({points[0]['cost_model']} cost model; memory: activations TVM plans, "
          f"sequential {format_bytes(seq)}):")
    print(f"  {'budget':>10} {'latency':>12} {'vs unbounded':>13} {'planned':>12} {'vs sequential':>14}  chosen")
    free = next(p for p in points if p["budget"] is None)["latency_s"]
    for p in points:
        name = "unbounded" if p["budget"] is None else p["budget"]
        print(f"  {name:>10} {p['latency_s'] * 1e3:9.4f} ms {p['latency_s'] / free:12.3f}x "
              f"{format_bytes(p['planned_bytes']):>12} {p['planned_bytes'] / seq:13.3f}x  {p['chosen']}")
    if out is not None:
        import json

        out.write_text(json.dumps({"model": args.model, "target": str(target), "points": points}, indent=1))
        print(f"points written to {out}")
    if png is not None:
        from ..viz import memory_plot

        print(f"plot written to {memory_plot(points, png, title=f'{args.model}, {target_name(target)}')}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .. import models

    for name in models.names():
        print(name)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune zoo models' kernels into ``OUT/<arch>/<model>/`` with one budget; progress per batch."""
    from ..compiler.databases import count_records
    from ..tuning import tune_models

    strategy: Any = "evolutionary"
    if args.population is not None:
        from tvm.s_tir import meta_schedule as ms

        strategy = ms.search_strategy.EvolutionarySearch(population_size=args.population)
    report = tune_models(
        args.models, target_of(args), args.out, time_budget_s=args.time_budget,
        max_trials_per_task=args.trials_per_task, num_trials_per_iter=args.trials_per_batch, retune=args.retune,
        small=args.small, batch_size=args.batch_size, dtype=args.dtype, build_timeout_s=args.build_timeout,
        keep=args.keep or None,
        search_strategy=strategy, progress=lambda line: print(line, flush=True))
    print(report.summary())
    for model, path in report.databases.items():
        print(f"{model}: {path} ({count_records(path)} records)")
    return 0
