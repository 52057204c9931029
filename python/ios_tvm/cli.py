"""``ios-tvm`` command line (also ``python -m ios_tvm``).

    ios-tvm demo                          optimize a zoo model for this machine, print the schedule
    ios-tvm optimize inception_v3 -o s.json --target '{"kind": "cuda", "arch": "sm_90"}'
    ios-tvm optimize model.onnx -o s.json  an ONNX file instead of a zoo model
    ios-tvm build inception_v3 --schedule s.json -o model.so
    ios-tvm bench inception_v3            sequential vs greedy vs IOS, end to end, this machine
    ios-tvm show s.json [--png s.png]
    ios-tvm models
    ios-tvm tune inception_v3 googlenet --time-budget 300   MetaSchedule into tuning/<arch>/<model>/
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


def _target(args: argparse.Namespace):
    """``--target``: ``auto`` (this machine), a name, a tag or JSON."""
    from ios_tvm.target import resolve_target

    return resolve_target(args.target)


def _model_kwargs(args: argparse.Namespace) -> dict:
    kwargs: dict = {"batch_size": args.batch_size}
    if args.small:
        kwargs["small"] = True
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    return kwargs


def _add_variants_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", type=int, default=0, metavar="K",
                   help="after the search, try the K best schedules the tuning database holds for "
                        "each kernel of every concurrent stage and keep what runs the stage faster "
                        "(measured on the device; needs --database); 0: off (default)")


def _add_model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
    if default_model is None:
        p.add_argument("model", help="zoo model name (see `ios-tvm models`) or an .onnx file")
        p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="static shape for an ONNX input with dynamic dimensions (repeatable)")
    else:
        p.add_argument("--model", default=default_model, help=f"zoo model name (default {default_model})")
    p.add_argument("--target", default="auto",
                   help="TVM target: 'auto' (this machine's GPU, else CPU), 'llvm', 'cuda', or JSON "
                        "such as '{\"kind\": \"cuda\", \"arch\": \"sm_90\"}'")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--image-size", type=int, default=None, help="input resolution (default: the paper's)")
    p.add_argument("--small", action="store_true", help="the reduced test-size version of the model")
    p.add_argument("-r", "--max-group-size", type=int, default=3, help="most kernels per stream per stage (3)")
    p.add_argument("-s", "--max-num-groups", type=int, default=8, help="most concurrent streams per stage (8)")
    p.add_argument("--max-block-size", type=int, default=16, help="split blocks larger than this (16)")
    p.add_argument("--strategy", choices=["concurrent", "merge", "both"], default="both",
                   help="stages of concurrent groups, merged convolutions, or both (default)")
    p.add_argument("--database", default="auto",
                   help="MetaSchedule tuning database directory for the kernels; 'auto' (default): "
                        "the one shipped for the target's architecture, if any; 'none': untuned")
    p.add_argument("--cost-model", default=None,
                   help="stage costs: 'measure' (time the stages on the device; default for a CUDA "
                        "target with its GPU present) or 'analytic' (a roofline prediction; default "
                        "otherwise)")


def _load_model(args: argparse.Namespace):
    """The model to work on: a zoo name (random weights, seed 0, bound as constants: merging
    needs them) or an ONNX file (its weights as constants)."""
    from ios_tvm import models

    name = args.model
    if name.endswith(".onnx"):
        from pathlib import Path

        if not Path(name).is_file():
            raise FileNotFoundError(f"no ONNX file at {name}")
        try:
            import onnx
            from tvm.relax.frontend.onnx import from_onnx
        except ImportError as err:
            raise ValueError(f"reading ONNX needs the onnx package: pip install onnx ({err})") from None
        shapes = {}
        for item in args.input_shape or []:
            key, _, dims = item.partition("=")
            try:
                shapes[key] = [int(d) for d in dims.split(",")]
            except ValueError:
                raise ValueError(f"--input-shape wants NAME=D0,D1,..., got {item!r}") from None
        return from_onnx(onnx.load(name), shape_dict=shapes or None, keep_params_in_input=False)
    mod = models.get(name, **_model_kwargs(args))
    return models.bind_params(mod, models.random_params(mod))


def _optimize(args: argparse.Namespace):
    import ios_tvm

    target = _target(args)
    mod = _load_model(args)
    config = ios_tvm.SearchConfig(args.max_group_size, args.max_num_groups, args.max_block_size, args.strategy)
    t0 = time.perf_counter()
    sched = ios_tvm.optimize(mod, target, search=config, cost_model=args.cost_model, database=_database(args))
    if getattr(args, "variants", 0):
        sched = ios_tvm.select_variants(mod, target, sched, database=_database(args), top_k=args.variants)
    weights = "from the file" if args.model.endswith(".onnx") else "random, seed 0"
    sched.meta["model"] = {"name": args.model, **_model_kwargs(args), "weights": weights}
    return sched, time.perf_counter() - t0, mod


def _database(args: argparse.Namespace):
    return None if str(args.database).lower() == "none" else args.database


def _report(sched, elapsed: float) -> str:
    meta = sched.meta
    stats = meta["stats"]
    base = meta["baselines_s"]
    ios = sched.latency or 0.0
    lines = [
        f"model {meta['model']['name']}  target {meta['target']}",
        f"graph: {sched.num_nodes} kernels, {stats['blocks']} blocks; search: {stats['states']} states, "
        f"{stats['transitions']} transitions, {stats['stages']} candidate stages, {elapsed:.2f} s in all",
        "",
        f"{'measured stage' if meta['cost_model'] == 'measure' else 'predicted'} latency "
        f"({meta['cost_model']} cost model):",
        f"  sequential {base['sequential'] * 1e3:9.4f} ms   1.00x",
        f"  greedy     {base['greedy'] * 1e3:9.4f} ms   {base['sequential'] / base['greedy']:.2f}x",
        f"  IOS        {ios * 1e3:9.4f} ms   {base['sequential'] / ios:.2f}x"
        f"   ({len(sched.merges)} merge stages, strategy {meta['search']['strategy']})",
    ]
    if "variants" in meta:
        v = meta["variants"]
        lines.append(f"  kernel variants: {v['call_sites']} call sites of {v['stages_tried']} concurrent stages "
                     f"run a runner-up schedule ({v['measurements']} measurements, "
                     f"{v['measured_gain_s'] * 1e6:.1f} us faster)")
    return "\n".join(lines)


def _measure_end_to_end(sched, mod, args) -> str:
    """Build the sequential and the IOS model, check they agree, time both end to end."""
    import numpy as np
    import tvm
    from tvm import relax

    import ios_tvm
    from ios_tvm import models
    from ios_tvm.profiling import median, time_vm
    from ios_tvm.target import device_of

    target = _target(args)
    dev = device_of(target)
    if not dev.exist:
        return f"(not run: {dev} is not present on this machine)"
    data = models.random_input(mod)
    seq_ex = ios_tvm.build(mod, target, database=_database(args))
    ios_ex = ios_tvm.build(mod, target, sched, database=_database(args))
    outs = [relax.VirtualMachine(ex, dev)["main"](tvm.runtime.tensor(data, dev)).numpy() for ex in (seq_ex, ios_ex)]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    number = 20 if target.kind.name == "cuda" else 1
    seq = median(time_vm(seq_ex, dev, [data], number=number, repeat=args.repeat))
    ios = median(time_vm(ios_ex, dev, [data], number=number, repeat=args.repeat))
    return "\n".join([
        f"measured end to end on {dev} (median of {args.repeat}; outputs equal):",
        f"  sequential {seq * 1e3:9.4f} ms   1.00x",
        f"  IOS        {ios * 1e3:9.4f} ms   {seq / ios:.2f}x",
    ])


def cmd_demo(args: argparse.Namespace) -> int:
    sched, elapsed, mod = _optimize(args)
    print(sched.to_text(max_stages=args.stages))
    print()
    print(_report(sched, elapsed), flush=True)
    if not args.no_run:
        print()
        print(_measure_end_to_end(sched, mod, args))
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    sched, elapsed, _ = _optimize(args)
    out = args.output or f"{args.model}.schedule.json"
    sched.save(out)
    print(_report(sched, elapsed))
    print(f"\nschedule written to {out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ios_tvm.schedule import Schedule

    sched = Schedule.load(args.schedule)
    print(sched.to_text(max_stages=None if args.all else 40))
    if args.png:
        from ios_tvm.viz import gantt

        print(f"Gantt chart written to {gantt(sched, args.png)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import ios_tvm
    from ios_tvm.schedule import Schedule

    target = _target(args)
    mod = _load_model(args)
    sched = None
    if args.schedule:
        sched = Schedule.load(args.schedule, ios_tvm.extract_graph(mod, target))
    ex = ios_tvm.build(mod, target, sched, database=_database(args))
    out = args.output or f"{args.model.rsplit('/', 1)[-1].removesuffix('.onnx')}.so"
    ex.export_library(out)
    what = "sequential (no schedule)" if sched is None else sched.summary()
    print(f"{out}: {what}; load it with tvm.runtime.load_module and relax.VirtualMachine "
          "(import ios_tvm first: the library calls its runtime)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np
    import tvm
    from tvm import relax

    import ios_tvm
    from ios_tvm.profiling import median, time_vm
    from ios_tvm.schedule import Schedule
    from ios_tvm.target import require_device

    target = _target(args)
    dev = require_device(target, 0, "ios-tvm bench (it runs the model)")
    sched, _, mod = _optimize(args)
    from ios_tvm import models

    data = models.random_input(mod) if not args.model.endswith(".onnx") else _onnx_input(mod)
    graph = ios_tvm.extract_graph(mod, target)
    schedules = {"sequential": None, "greedy": Schedule.greedy(graph, max_num_groups=args.max_num_groups),
                 "IOS": sched}
    number = 20 if target.kind.name == "cuda" else 1
    ref = None
    rows = []
    for label, s in schedules.items():
        ex = ios_tvm.build(mod, target, s, database=_database(args))
        out = relax.VirtualMachine(ex, dev)["main"](tvm.runtime.tensor(data, dev)).numpy()
        ref = out if ref is None else ref
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
        rows.append((label, median(time_vm(ex, dev, [data], number=number, repeat=args.repeat))))
    base = rows[0][1]
    print(f"{args.model} on {dev} (median of {args.repeat}; outputs equal):")
    for label, t in rows:
        print(f"  {label:10} {t * 1e3:9.4f} ms   {base / t:.2f}x")
    return 0


def _onnx_input(mod):
    import numpy as np

    p = mod["main"].params[0]
    shape = tuple(int(d) for d in p.ty.shape)
    return np.random.default_rng(0).uniform(-1, 1, size=shape).astype(str(p.ty.dtype))


def cmd_models(args: argparse.Namespace) -> int:
    from ios_tvm import models

    for name in models.names():
        print(name)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune zoo models' kernels into ``OUT/<arch>/<model>/`` with one budget; progress per batch."""
    import ios_tvm
    from ios_tvm.errors import TuningError
    from ios_tvm.tuning_db import count_records

    if args.keep < 0:
        raise TuningError(f"--keep wants a number of schedules per kernel (0: keep all), got {args.keep}")
    if args.population is not None and args.population < 2:
        raise TuningError(f"--population must be at least 2, got {args.population}")
    strategy = "evolutionary"
    if args.population is not None:
        from tvm.s_tir import meta_schedule as ms

        strategy = ms.search_strategy.EvolutionarySearch(population_size=args.population)
    report = ios_tvm.tune_models(
        args.models, _target(args), args.out, time_budget_s=args.time_budget,
        max_trials_per_task=args.trials_per_task, num_trials_per_iter=args.trials_per_batch, retune=args.retune,
        small=args.small, batch_size=args.batch_size, build_timeout_s=args.build_timeout, keep=args.keep or None,
        search_strategy=strategy, progress=lambda line: print(line, flush=True))
    print(report.summary())
    for model, path in report.databases.items():
        print(f"{model}: {path} ({count_records(path)} records)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ios-tvm", description=(
        "Inter-operator scheduling for TVM Relax models: find the kernels that can run "
        "concurrently and the stages to run them in."))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="optimize a zoo model for this machine and print the schedule")
    _add_model_args(p, "inception_v3")
    p.add_argument("--stages", type=int, default=30, help="stages to print (30)")
    _add_variants_arg(p)
    p.add_argument("--no-run", action="store_true", help="only search; do not build and time the model")
    p.add_argument("--repeat", type=int, default=3, help="end-to-end timing samples (3)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("optimize", help="optimize a zoo model and write its schedule as JSON")
    _add_model_args(p, None)
    p.add_argument("-o", "--output", help="schedule file (default MODEL.schedule.json)")
    _add_variants_arg(p)
    p.set_defaults(func=cmd_optimize)
    p = sub.add_parser("build", help="compile a model with a schedule into a shared library")
    _add_model_args(p, None)
    p.add_argument("--schedule", help="schedule JSON from `ios-tvm optimize` (default: sequential)")
    p.add_argument("-o", "--output", help="library path (default MODEL.so)")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("bench", help="time sequential, greedy and IOS side by side on this machine")
    _add_model_args(p, None)
    p.add_argument("--repeat", type=int, default=5, help="timing samples per schedule (5)")
    _add_variants_arg(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("show", help="print a schedule file (and draw it)")
    p.add_argument("schedule")
    p.add_argument("--all", action="store_true", help="every stage, not the first 40")
    p.add_argument("--png", help="also draw a Gantt chart to this file (PNG/SVG/PDF)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("models", help="list the zoo models")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("tune", help="tune zoo models' kernels with MetaSchedule into OUT/<arch>/<model>/")
    p.add_argument("models", nargs="+", metavar="MODEL", help="zoo model names (kernels they share are tuned once)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="seconds for the whole command (preparation counts); no batch starts that would "
                        "end far past it. Default: no limit, trials decide")
    p.add_argument("--trials-per-task", type=int, default=None, metavar="N",
                   help="schedules a kernel is tuned up to, counting those on record (default 64; 512 with "
                        "--time-budget); with --retune, trials each kernel gets on top")
    p.add_argument("--trials-per-batch", type=int, default=16, metavar="N",
                   help="candidates built (on every CPU core) and measured per batch (16)")
    p.add_argument("--population", type=int, default=None, metavar="N",
                   help="evolutionary search population (MetaSchedule's default 512; smaller searches "
                        "faster per batch, for small machines and short budgets)")
    p.add_argument("--retune", action="store_true", help="also tune kernels that have enough records (extends them)")
    p.add_argument("--target", default="auto",
                   help="TVM target: 'auto' (this machine's GPU, else CPU), 'llvm', 'cuda' or JSON")
    p.add_argument("--out", default="tuning", metavar="DIR", help="root of the databases (default tuning/)")
    p.add_argument("--small", action="store_true", help="the reduced test-size versions of the models")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--keep", type=int, default=8, metavar="K",
                   help="afterwards prune each database to the best K schedules per kernel (default 8; "
                        "kernel variants use the runner-ups); 0: keep everything")
    p.add_argument("--build-timeout", type=float, default=120.0, metavar="S",
                   help="per-candidate build limit (120)")
    p.set_defaults(func=cmd_tune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ios_tvm.errors import IosTvmError

    try:
        return int(args.func(args) or 0)
    except (IosTvmError, ValueError, FileNotFoundError, NotImplementedError, RuntimeError, ImportError) as err:
        print(f"ios-tvm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
