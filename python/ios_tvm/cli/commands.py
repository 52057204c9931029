"""The ``ios-tvm`` commands: each ``cmd_*`` takes the parsed arguments and returns the exit status
(mistakes raise :class:`~ios_tvm.errors.IosTvmError`, which :func:`ios_tvm.cli.main.main` turns into
one line). The steps they share live in :mod:`ios_tvm.cli.steps`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import write_atomically
from ..errors import InvalidArgumentError, MissingDependencyError, OutputFileError, ScheduleMismatchError
from .loading import check_zoo_name
from .output import Output
from .progress import say
from .report import end_to_end_report, made_for, memory_line, plural, search_report, spread_text, target_name
from .steps import (
    build_model,
    check_database,
    database_of,
    load_for,
    measure_end_to_end,
    min_sample_ms,
    prepare_streams,
    runs_per_sample,
    sampling,
    search,
    target_of,
)


# -- the commands --------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    sched, elapsed, mod = search(args)
    print(sched.to_text(max_stages=args.stages, more=f" (--stages {len(sched.stages)} shows them all)"))
    print()
    print(search_report(sched, elapsed), flush=True)
    if not args.no_run:
        text = measure_end_to_end(sched, mod, args)
        print()
        print(text)
    say("done")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    out = Output.check(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.schedule.json")
    sched, elapsed, _ = search(args)
    sched.save(out.ready())
    print(search_report(sched, elapsed))
    print(f"\nschedule written to {out.path}")
    return 0


def check_figure_path(path: str) -> Output:
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
    return Output.check(path, "schedule.png", "--png")


def cmd_show(args: argparse.Namespace) -> int:
    from ..core.schedule import Schedule

    png = check_figure_path(args.png) if args.png else None
    sched = Schedule.load(args.schedule)
    print(sched.to_text(max_stages=None if args.all else 40, more=" (--all shows them)"))
    if isinstance(sched.meta.get("end_to_end"), dict):
        try:
            lines = end_to_end_report(sched.meta)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError):
            lines = []  # an end-to-end record this version does not read: the stages above are what matters
        print("\n".join(["", *lines]) if lines else "", end="\n" if lines else "")
    if isinstance(sched.meta.get("memory"), dict):
        print(memory_line(sched.meta["memory"]))
    if png is not None:
        from ..viz import gantt

        path = png.ready()
        try:
            gantt(sched, path)
        except OSError as err:
            raise OutputFileError(f"--png {path}: cannot write it ({err.strerror or err}); write it elsewhere") from None
        print(f"Gantt chart written to {path}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .. import runtime
    from ..core.schedule import Schedule
    from ..ir.graph import extract_graph
    from ..ir.precision import check_schedule_dtype

    out = Output.check(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.so")
    target = target_of(args)
    check_database(args, target)
    mod = load_for(args, target)
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
    path = out.ready()
    say(f"writing {path}")
    write_atomically(path, ex.export_library, executable=True)
    what = "sequential (no schedule)" if sched is None else sched.summary()
    print(f"{path}: {what}; load it with tvm.runtime.load_module and relax.VirtualMachine "
          "(import ios_tvm first: the library calls its runtime)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Sequential, greedy and IOS built, checked against each other and timed end to end, by the
    very timer :func:`ios_tvm.optimize`'s end-to-end check uses (:mod:`ios_tvm.driver.guard`)."""
    from ..compiler.pipeline import planned_memory
    from ..core.schedule import Schedule
    from ..driver.guard import EndToEndConfig, choose, end_to_end_timer, record_prediction, same_within_noise
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
    if sched.meta["kernels"]["mode"] != "tvm":  # all three run the kernels the search chose
        schedules["sequential"] = Schedule.sequential(graph)
        for s in schedules.values():
            s.meta["kernels"] = sched.meta["kernels"]
    base_pred = sched.meta["baselines_s"]
    predicted = {"sequential": base_pred["sequential"], "greedy": base_pred["greedy"], "ios": sched.latency}
    number = runs_per_sample(target)
    timer = end_to_end_timer(mod, target, database=database_of(args), cuda_graph=args.cuda_graph,
                             config=EndToEndConfig(number=number, repeat=args.repeat,
                                                   min_repeat_ms=min_sample_ms(target)))
    memory: dict[str, int] = {}

    def time_of(label: str, s: Any) -> list[float]:
        prepare_streams(s)
        say(f"building the {label} model for {target_name(target)}, checking its output and timing it "
            f"({sampling(target, args.repeat)})", f"building and timing the {label} model")
        samples = timer(label, s)
        memory[label] = planned_memory(mod, target, s, database=database_of(args), cuda_graph=args.cuda_graph)
        return samples

    chosen, timings = choose(schedules, time_of)
    times = {label: t.median for label, t in timings.items()}
    record_prediction(graph.fingerprint, {**sched.meta, "end_to_end": {
        "times_s": times, "spread_s": {label: t.spread for label, t in timings.items()}, "predicted_s": predicted,
        "chosen": chosen}})
    base = timings["sequential"]
    how = "one CUDA graph each" if args.cuda_graph else "kernel launches"
    print(f"{args.model} on {dev} ({how}; median of {args.repeat}, ± the spread of the samples; outputs equal):")
    print(f"  {'':10} {'measured':>12} {'noise':>6} {'speed-up':>9} {'predicted':>12} {'measured/predicted':>19} "
          f"{'activation memory':>18}")
    ties = []
    for label, t in timings.items():
        pred = predicted[label]
        ratio = f"{t.median / pred:18.2f}x" if pred else f"{'-':>19}"
        tie = label != "sequential" and args.repeat > 1 and same_within_noise(t, base)
        ties += [label] if tie else []
        vs_seq = f"{memory[label] / memory['sequential']:5.2f}x" if memory["sequential"] else f"{'-':>6}"
        print(f"  {label:10} {t.median * 1e3:9.4f} ms {spread_text(t.spread, t.median):>6} "
              f"{base.median / t.median:7.2f}x{'~' if tie else ' '} {pred * 1e3 if pred else 0:9.4f} ms {ratio} "
              f"{memory[label] / 2**20:9.2f} MiB {vs_seq}")
    if ties:
        print(f"  ~ within the noise of sequential ({' and '.join(ties)}): the difference is smaller than the "
              "spread of the samples, no real speed-up or slow-down (--repeat N for more samples)")
    if args.repeat == 1:
        print("  one sample each: the noise is not known (--repeat N, N > 1, measures it)")
    print(f"  fastest beyond the noise: {chosen} (ties go to the simpler schedule, as ios_tvm.optimize's end-to-end "
          "check decides)")
    if "memory" in sched.meta:
        print(f"  {memory_line(sched.meta['memory'])}")
    print(f"  predicted by the {sched.meta['cost_model']} cost model; predicted vs measured kept in "
          "predictions.jsonl in the cache directory")
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """The latency / memory trade-off of a model: the search under each budget, its plan."""
    import json

    from ..core.memory import format_bytes
    from ..driver import SearchConfig
    from ..driver.budget import DEFAULT_SWEEP
    from ..driver.sweep import memory_sweep

    if args.kernels not in (None, "tvm"):  # before any long work
        raise InvalidArgumentError(f"ios-tvm memory sweeps TVM's kernels only, not --kernels {args.kernels}: for a "
                                   f"budget with vendor kernels use ios-tvm optimize MODEL --kernels {args.kernels} "
                                   "--memory-budget SIZE")
    png = check_figure_path(args.png) if args.png else None
    out = Output.check(args.json, "memory.json", "--json") if args.json else None
    target = target_of(args)
    check_database(args, target)
    mod = load_for(args, target)
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
        path = out.ready()
        text = json.dumps({"model": args.model, "target": str(target), "points": points}, indent=1)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text))
        print(f"points written to {path}")
    if png is not None:
        from ..viz import memory_plot

        print(f"plot written to {memory_plot(points, png.ready(), title=f'{args.model}, {target_name(target)}')}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo: each model's input, weights and kernels (TVM's fused kernels, which IOS schedules;
    counting them lowers every model, seconds each, the full-size transformers longer)."""
    from .. import models
    from ..ir.graph import extract_graph

    names = args.names or models.names()
    for name in names:
        if name.lower().endswith(".onnx"):
            raise InvalidArgumentError(f"ios-tvm models lists the zoo; an ONNX file ({name}) goes straight to "
                                       "optimize, build, bench or demo --model")
        check_zoo_name(name)
        models.describe_input(name)  # an unknown name: the zoo's own error
    size = "the reduced versions, --small" if args.small else "the originals' sizes"
    say(f"lowering the zoo models ({size}) with TVM's fusion to count their kernels", "counting kernels")
    print(f"{'model':16} {'input':>16} {'weights':>12} {'kernels':>8}  what")
    for name in names:
        mod = models.get(name, small=args.small)
        params = mod["main"].params
        shape = "x".join(str(int(d)) for d in params[0].ty.shape.values)
        weights = sum(int(np.prod([int(d) for d in p.ty.shape.values])) for p in params[1:])
        kernels = len(extract_graph(mod, "llvm").nodes)
        what = models.describe_input(name, small=args.small)
        print(f"{name:16} {shape:>16} {weights / 1e6:10.1f} M {kernels:8d}  {what}", flush=True)
    print("kernels: TVM's fused kernels, one launch each (what IOS puts into stages); weights: parameters; a CNN takes "
          "--batch-size and --image-size, a transformer --batch-size and --input-shape data=N,L,H; any --small")
    return 0


def tune_inputs(args: argparse.Namespace, target: Any) -> dict[str, Any]:
    """``tune``'s models, loaded as builds load them, by name (an ONNX file's name is its file's
    stem), each checked to fit the target's device."""
    from .. import models
    from ..cost.gpus import device_memory
    from ..ir.footprint import check_fits
    from ..ir.precision import convert
    from ..tuning.tuner import load_zoo_model
    from .loading import input_shapes, load_onnx

    for name in args.models:
        if not name.lower().endswith(".onnx"):
            check_zoo_name(name)
            models.image_size_of(name)  # an unknown name: the zoo's own error, before any loading
    named: dict[str, Any] = {}
    for name in args.models:
        if name.lower().endswith(".onnx"):
            key = Path(name).name[: -len(".onnx")]
            mod = load_onnx(name, input_shapes(args))
            mod = convert(mod, args.dtype) if args.dtype != "float32" else mod
        else:
            key = name
            mod = load_zoo_model(name, small=args.small, batch_size=args.batch_size, dtype=args.dtype)
        if key in named:
            raise InvalidArgumentError(f"two models named {key} (their databases would share a directory): rename "
                                       "one of the files")
        check_fits(mod, *device_memory(target), "give smaller dimensions with --input-shape"
                   if name.lower().endswith(".onnx") else "lower --batch-size")
        named[key] = mod
    return named


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune models' kernels (zoo names or ``.onnx`` files) into ``OUT/<arch>/<model>/`` with one
    budget; progress per batch."""
    from ..compiler.databases import count_records
    from ..ir.target import arch_of
    from ..tuning import tune_models
    from ..tuning.tuner import require_tuning_device

    strategy: Any = "evolutionary"
    if args.population is not None:
        from tvm.s_tir import meta_schedule as ms

        strategy = ms.search_strategy.EvolutionarySearch(population_size=args.population)
    target = target_of(args)
    require_tuning_device(target)
    say(f"loading {', '.join(args.models)}", "loading the models")
    named = tune_inputs(args, target)
    say(f"tuning them for {target_name(target)} into {Path(args.out) / arch_of(target)}/<model>/ (progress on stdout)",
        "tuning (what was measured is on disk)")
    report = tune_models(
        named, target, args.out, time_budget_s=args.time_budget,
        max_trials_per_task=args.trials_per_task, num_trials_per_iter=args.trials_per_batch, retune=args.retune,
        build_timeout_s=args.build_timeout,
        keep=args.keep or None,
        search_strategy=strategy, progress=lambda line: print(line, flush=True))
    print(report.summary())
    for model, path in report.databases.items():
        print(f"{model}: {path} ({plural(count_records(path), 'record')})")
    print(f"builds and searches use them with --database {args.out} (every model's records for the target's "
          "architecture, together)")
    return 0
