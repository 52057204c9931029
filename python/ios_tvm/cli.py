"""``ios-tvm`` command line (also ``python -m ios_tvm``).

    ios-tvm demo                          optimize a zoo model for this machine, print the schedule
    ios-tvm optimize inception_v3 -o s.json --target '{"kind": "cuda", "arch": "sm_90"}'
    ios-tvm optimize model.onnx -o s.json  an ONNX file instead of a zoo model
    ios-tvm build inception_v3 --schedule s.json -o model.so
    ios-tvm bench inception_v3            sequential vs greedy vs IOS, end to end, this machine
    ios-tvm show s.json [--png s.png]
    ios-tvm models
    ios-tvm tune inception_v3 googlenet --time-budget 300   MetaSchedule into tuning/<arch>/<model>/

How it fails: a mistake of the user (an ``ios_tvm.errors.IosTvmError``, or a bad option that
argparse finds) is one ``ios-tvm: error: ...`` line and exit status 2; Ctrl-C is one line and
exit status 130 (a measured search keeps what it measured, so the same command resumes); anything
else is a bug, shown with its traceback and one line asking to report it (exit status 1). While it
works, each step it waits on is announced on stderr with the seconds since the start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ios_tvm.cli_models import describe_model, load_model, model_inputs, model_meta
from ios_tvm.errors import (InvalidArgumentError, IosTvmError, MemoryPlanError,
                            MissingDependencyError, ScheduleMismatchError)


# -- what the command is doing (progress lines, interruption) ---------------------------------
@dataclass
class _State:
    start: float = 0.0
    phase: str = "starting"
    interrupted: bool = False
    measuring: bool = False  #: the search measures stage costs (a resumable cache)

    def reset(self) -> None:
        self.__dict__.update(_State().__dict__)
        self.start = time.perf_counter()


_STATE = _State()


def _say(what: str, phase: str | None = None) -> None:
    """Announce a step on stderr (``ios-tvm: [  3.1 s] what``) and remember it (or ``phase``, a
    shorter name of it) for Ctrl-C."""
    _STATE.phase = phase or what
    print(f"ios-tvm: [{time.perf_counter() - _STATE.start:6.1f} s] {what}", file=sys.stderr, flush=True)


def _on_interrupt(signum: int, frame: Any) -> None:
    """SIGINT: remember it (TVM may turn the ``KeyboardInterrupt`` into another error on its
    way out of C++), then interrupt as Python does."""
    _STATE.interrupted = True
    raise KeyboardInterrupt


def _interrupted() -> int:
    resume = (" Stage costs measured so far are kept in the stage cache: the same command resumes from them."
              if _STATE.measuring else "")
    print(f"ios-tvm: interrupted while {_STATE.phase}.{resume}", file=sys.stderr, flush=True)
    return 130


def _versions() -> str:
    import platform

    import ios_tvm

    parts = [f"ios_tvm {ios_tvm.__version__}"]
    for module in ("tvm", "tvm_ffi"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except Exception:  # noqa: BLE001 - reporting a bug must not fail on a broken install
            parts.append(f"{module} (not importable)")
    parts.append(f"Python {platform.python_version()} on {platform.platform()}")
    return ", ".join(parts)


class _LogToStderr(logging.Handler):
    """ios_tvm's log records as ``ios-tvm: [warning: ]message`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for prefix in ("ios_tvm.tune: ", "ios_tvm: "):
            msg = msg.removeprefix(prefix)
        level = "warning: " if record.levelno >= logging.WARNING else ""
        print(f"ios-tvm: {level}{msg}", file=sys.stderr, flush=True)


# -- argument checks --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with its mistakes as one ``ios-tvm: error:`` line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"ios-tvm: error: {message} (see `{self.prog} --help`)\n")


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _check_output(path: str | None, default: str) -> Path:
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




def _target(args: argparse.Namespace):
    """``--target``: ``auto`` (this machine), a name, a tag or JSON; checked to be one ios_tvm
    builds for."""
    from ios_tvm.target import device_type_of, resolve_target

    target = resolve_target(args.target)
    device_type_of(target)  # TargetError for kinds without a runtime (opencl, c, ...)
    if getattr(args, "cuda_graph", False) and target.kind.name != "cuda":
        from ios_tvm.errors import CUDAGraphError

        raise CUDAGraphError(f"--cuda-graph replays CUDA kernels and needs a CUDA target, not {target.kind.name!r}: "
                             "drop --cuda-graph or give --target cuda")
    return target


def _target_name(target: Any) -> str:
    from ios_tvm.schedule import target_kind_arch

    kind, arch = target_kind_arch(target)
    return f"{kind} {arch}" if arch else kind


def _database(args: argparse.Namespace):
    return None if str(args.database).lower() == "none" else args.database


def _check_database(args: argparse.Namespace, target: Any) -> None:
    """A ``--database`` directory must hold a database (reads never create one); ``--variants``
    needs one."""
    from ios_tvm.errors import DatabaseError
    from ios_tvm.tuning import resolve_database

    db = resolve_database(_database(args), target)
    if getattr(args, "variants", 0) and db is None:
        raise DatabaseError("--variants K picks among the kernel schedules of a tuning database, and there is "
                            f"none{' for this target' if _database(args) else ''}: tune first (ios_tvm.tune) and "
                            "pass --database DIR")


def _optimize(args: argparse.Namespace, end_to_end: bool | None = None):
    import ios_tvm
    from ios_tvm.cost import default_cost_model_name

    target = _target(args)
    _check_database(args, target)
    config = ios_tvm.SearchConfig(args.max_group_size, args.max_num_groups, args.max_block_size, args.strategy)
    what = describe_model(args)
    _say(f"loading {what}")
    mod = load_model(args)
    cost = args.cost_model or default_cost_model_name(target)
    _STATE.measuring = cost == "measure"
    _say(f"lowering it for {_target_name(target)} and searching its stages ({cost} cost model"
         f"{': each candidate stage is timed on the device' if _STATE.measuring else ''})",
         "measuring stage costs" if _STATE.measuring else "searching stages")
    t0 = time.perf_counter()
    sched = ios_tvm.optimize(mod, target, search=config, cost_model=cost, database=_database(args),
                             cuda_graph=args.cuda_graph, end_to_end=end_to_end)
    if getattr(args, "variants", 0):
        _say(f"trying the {args.variants} best kernel schedules of each concurrent stage's kernels (measured)")
        sched = ios_tvm.select_variants(mod, target, sched, database=_database(args), top_k=args.variants)
    sched.meta["model"] = model_meta(args, mod)
    sched.meta["precision"] = {**sched.meta.get("precision", {}), "converted": args.converted}  # --dtype converted it
    return sched, time.perf_counter() - t0, mod


def _report(sched, elapsed: float) -> str:
    meta = sched.meta
    stats = meta["stats"]
    base = meta["baselines_s"]
    # the search's IOS prediction (the schedule written may be a simpler one that ran faster)
    ios = (meta.get("end_to_end") or {}).get("predicted_s", {}).get("ios") or sched.latency or 0.0
    prediction = meta.get("prediction", {})
    measured = meta["cost_model"] == "measure"
    lines = [
        f"model {meta['model']['name']}{_precision_text(meta)}  target {_target_name(meta['target'])}",
        f"graph: {sched.num_nodes} kernels, {stats['blocks']} blocks; search: {stats['states']} states, "
        f"{stats['transitions']} transitions, {stats['stages']} candidate stages, {elapsed:.2f} s in all",
        "",
        f"{'measured stage' if measured else 'predicted'} latency ({meta['cost_model']} cost model"
        f"{', ' + prediction['device'] if prediction.get('device') else ''}):",
        f"  sequential {base['sequential'] * 1e3:9.4f} ms   1.00x",
        f"  greedy     {base['greedy'] * 1e3:9.4f} ms   {base['sequential'] / base['greedy']:.2f}x",
        f"  IOS        {ios * 1e3:9.4f} ms   {base['sequential'] / ios:.2f}x"
        f"   ({len(sched.merges)} merge stages, strategy {meta['search']['strategy']})",
    ]
    if prediction.get("known_error"):
        lines.append(f"  how far to trust it: {prediction['known_error']}")
    if "end_to_end" in meta:  # the guard built and timed the candidates
        e2e = meta["end_to_end"]
        lines += ["", f"measured end to end ({'CUDA graph' if _timed_as_graph(meta) else 'kernel launches'}), "
                      "against the stage costs' prediction:"]
        for label in ("sequential", "greedy", "ios"):
            t, pred = e2e["times_s"][label], e2e["predicted_s"].get(label)
            vs = f"   predicted {pred * 1e3:9.4f} ms ({t / pred:.2f}x)" if pred else ""
            lines.append(f"  {label:10} {t * 1e3:9.4f} ms{vs}{'   <- kept' if label == e2e['chosen'] else ''}")
        if e2e["chosen"] != "ios":
            lines.append(f"  IOS ran {e2e['ios_slower_by'] * 100:.1f}% slower than {e2e['chosen']}, so the "
                         f"{e2e['chosen']} schedule is written instead")
    if "variants" in meta:
        v = meta["variants"]
        lines.append(f"  kernel variants: {v['call_sites']} call sites of {v['stages_tried']} concurrent stages "
                     f"run a runner-up schedule ({v['measurements']} measurements, "
                     f"{v['measured_gain_s'] * 1e6:.1f} us faster)")
    return "\n".join(lines)


def _precision_text(meta: dict) -> str:
    """`` (float16, converted from float32)``: the precision a schedule's model computes in."""
    dtype = (meta.get("precision") or {}).get("dtype")
    if dtype is None or dtype == "float32":
        return ""
    return f" ({dtype}{', converted from float32' if meta['precision'].get('converted') else ''})"


def _timed_as_graph(meta: dict) -> bool:
    """Whether the schedule's stages were timed as CUDA graphs."""
    return (meta.get("measure") or {}).get("launch") == "graph"


def _prepare_streams(sched: Any) -> None:
    """Let this process's runtime run the schedule's widest stage (demo, bench)."""
    from ios_tvm import runtime

    if sched is not None and sched.max_streams > runtime.pool_size():
        runtime.set_pool_size(sched.max_streams)


def _build(mod: Any, target: Any, sched: Any, args: argparse.Namespace, label: str, num_kernels: int | None = None):
    import ios_tvm

    from ios_tvm.tuning import resolve_database

    kernels = f"{num_kernels} kernels" if num_kernels else "the kernels"
    tuned = resolve_database(_database(args), target) is not None
    _say(f"building the {label} model for {_target_name(target)} (TVM compiles {kernels}, "
         f"{'with the tuning database' if tuned else 'untuned'})")
    return ios_tvm.build(mod, target, sched, database=_database(args), cuda_graph=args.cuda_graph)


def _time(ex: Any, dev: Any, inputs: list, target: Any, repeat: int, label: str, expect_s: float | None) -> float:
    from ios_tvm.profiling import median, time_vm

    number = 20 if target.kind.name == "cuda" else 1
    hint = f", about {expect_s * number * (repeat + 1):.0f} s predicted" if expect_s and expect_s * number * repeat > 2 else ""
    _say(f"timing the {label} model ({repeat} x {number} runs{hint})")
    return median(time_vm(ex, dev, inputs, number=number, repeat=repeat))


def _explain(sched: Any, seq_measured: float, target: Any) -> list[str]:
    """Predicted against measured, in words: which cost model predicted, how far off it was,
    and what the known error of that model is."""
    meta = sched.meta
    predicted = meta["baselines_s"]["sequential"]
    note = meta.get("prediction", {})
    ratio = seq_measured / predicted
    off = f"{ratio:.2f}x slower than" if ratio >= 1 else f"{1 / ratio:.2f}x faster than"
    lines = []
    if meta["cost_model"] == "measure":
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
        lines.append("  on a CPU the groups of a stage run one after another, so IOS gains only from merged "
                     "convolutions and kernel order here; its concurrency pays off on a GPU.")
    return lines


def _measure_end_to_end(sched, mod, args) -> str:
    """Build the sequential and the IOS model, check they agree, time both end to end."""
    import numpy as np
    import tvm
    from tvm import relax

    from ios_tvm.precision import model_dtype, output_tolerance
    from ios_tvm.target import device_of

    target = _target(args)
    dev = device_of(target)
    if not dev.exist:
        return f"(not run: {dev} is not present on this machine)"
    _prepare_streams(sched)
    inputs = model_inputs(mod)
    seq_ex = _build(mod, target, None, args, "sequential", sched.num_nodes)
    ios_ex = _build(mod, target, sched, args, "IOS-scheduled", sched.num_nodes)
    _say("running both once to check their outputs agree")
    outs = []
    for ex in (seq_ex, ios_ex):
        out = relax.VirtualMachine(ex, dev)["main"](*[tvm.runtime.tensor(x, dev) for x in inputs])
        outs.append(out.numpy())
    rtol, atol = output_tolerance(model_dtype(mod))
    np.testing.assert_allclose(outs[1], outs[0], rtol=rtol, atol=atol)
    base = sched.meta["baselines_s"]
    seq = _time(seq_ex, dev, inputs, target, args.repeat, "sequential", base["sequential"])
    ios = _time(ios_ex, dev, inputs, target, args.repeat, "IOS-scheduled", sched.latency)
    return "\n".join([
        f"measured end to end on {dev} (median of {args.repeat}; outputs equal):",
        f"  sequential {seq * 1e3:9.4f} ms   1.00x",
        f"  IOS        {ios * 1e3:9.4f} ms   {seq / ios:.2f}x",
        *_explain(sched, seq, target),
    ])


def cmd_demo(args: argparse.Namespace) -> int:
    sched, elapsed, mod = _optimize(args)
    print(sched.to_text(max_stages=args.stages))
    print()
    print(_report(sched, elapsed), flush=True)
    if not args.no_run:
        text = _measure_end_to_end(sched, mod, args)
        print()
        print(text)
    _say("done")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    out = _check_output(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.schedule.json")
    sched, elapsed, _ = _optimize(args)
    sched.save(out)
    print(_report(sched, elapsed))
    print(f"\nschedule written to {out}")
    return 0


def _check_figure_path(path: str) -> Path:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        from ios_tvm.viz import MATPLOTLIB_MISSING

        raise MissingDependencyError(MATPLOTLIB_MISSING) from None
    out = Path(path)
    formats = Figure().canvas.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise InvalidArgumentError(f"--png {path}: name the picture with one of the extensions "
                                   f"{', '.join('.' + f for f in sorted(formats))} (it picks the format)")
    return _check_output(path, "schedule.png")


def cmd_show(args: argparse.Namespace) -> int:
    from ios_tvm.schedule import Schedule

    png = _check_figure_path(args.png) if args.png else None
    sched = Schedule.load(args.schedule)
    print(sched.to_text(max_stages=None if args.all else 40))
    if png is not None:
        from ios_tvm.viz import gantt

        print(f"Gantt chart written to {gantt(sched, png)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import ios_tvm
    from ios_tvm import runtime
    from ios_tvm.precision import check_schedule_dtype
    from ios_tvm.schedule import Schedule

    out = _check_output(args.output, f"{Path(args.model).name.removesuffix('.onnx')}.so")
    target = _target(args)
    _check_database(args, target)
    _say(f"loading {describe_model(args)}")
    mod = load_model(args)
    sched = graph = None
    if args.schedule:
        _say(f"lowering it for {_target_name(target)} to check the schedule")
        graph = ios_tvm.extract_graph(mod, target)
        sched = Schedule.load(args.schedule)  # format errors first
        try:
            check_schedule_dtype(sched, mod)
            sched.validate(graph)
            sched.check_target(target)
        except ScheduleMismatchError as err:
            raise ScheduleMismatchError(f"{args.schedule}{_made_for(sched)}: {err}") from None
        if sched.max_streams > runtime.pool_size():
            raise ScheduleMismatchError(
                f"{args.schedule} runs up to {sched.max_streams} concurrent streams and the runtime's stream pool "
                f"holds {runtime.pool_size()}: re-create it with -s {runtime.pool_size()} (or, in Python, call "
                f"ios_tvm.runtime.set_pool_size({sched.max_streams}) before building and before running it)")
    ex = _build(mod, target, sched, args, "sequential" if sched is None else "IOS-scheduled",
                None if graph is None else len(graph.nodes))
    _say(f"writing {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    ex.export_library(str(out))
    what = "sequential (no schedule)" if sched is None else sched.summary()
    print(f"{out}: {what}; load it with tvm.runtime.load_module and relax.VirtualMachine "
          "(import ios_tvm first: the library calls its runtime)")
    return 0


def _made_for(sched: Any) -> str:
    """`` (made for squeezenet, inputs data [1, 3, 64, 64])``: what ``ios-tvm optimize`` recorded."""
    made = sched.meta.get("model")
    if not isinstance(made, dict) or "name" not in made:
        return ""
    inputs = made.get("inputs")
    shapes = f", inputs {'; '.join(f'{n} {d}' for n, d in inputs.items())}" if isinstance(inputs, dict) else ""
    dtype = f", in {made['dtype']}" if isinstance(made.get("dtype"), str) else ""
    return f" (made for {made['name']}{shapes}{dtype})"


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np
    import tvm
    from tvm import relax

    import ios_tvm
    from ios_tvm.precision import model_dtype, output_tolerance
    from ios_tvm.schedule import Schedule
    from ios_tvm.target import require_device

    from ios_tvm.compiler import planned_memory
    from ios_tvm.guard import record_prediction

    target = _target(args)
    dev = require_device(target, 0, "ios-tvm bench (it runs the model)")
    if target.kind.name == "cuda":  # the three builds share their kernels: compile them once
        from ios_tvm import cuda_cache

        cuda_cache.enable()
    sched, _, mod = _optimize(args, end_to_end=False)  # bench times all three itself
    inputs = model_inputs(mod)
    rtol, atol = output_tolerance(model_dtype(mod))
    graph = ios_tvm.extract_graph(mod, target)
    schedules = {"sequential": None, "greedy": Schedule.greedy(graph, max_num_groups=args.max_num_groups),
                 "ios": sched}
    base_pred = sched.meta["baselines_s"]
    predicted = {"sequential": base_pred["sequential"], "greedy": base_pred["greedy"], "ios": sched.latency}
    ref = None
    times: dict[str, float] = {}
    memory: dict[str, int] = {}
    for label, s in schedules.items():
        _prepare_streams(s)
        ex = _build(mod, target, s, args, label, len(graph.nodes))
        out = relax.VirtualMachine(ex, dev)["main"](*[tvm.runtime.tensor(x, dev) for x in inputs]).numpy()
        ref = out if ref is None else ref
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
        times[label] = _time(ex, dev, inputs, target, args.repeat, label, None)
        memory[label] = planned_memory(mod, target, s, database=_database(args), cuda_graph=args.cuda_graph)
    record_prediction(graph.fingerprint, {**sched.meta, "end_to_end": {
        "times_s": times, "predicted_s": predicted, "chosen": min(times, key=times.get)}})
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
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ios_tvm import models

    for name in models.names():
        print(name)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune zoo models' kernels into ``OUT/<arch>/<model>/`` with one budget; progress per batch."""
    import ios_tvm
    from ios_tvm.tuning_db import count_records

    strategy = "evolutionary"
    if args.population is not None:
        from tvm.s_tir import meta_schedule as ms

        strategy = ms.search_strategy.EvolutionarySearch(population_size=args.population)
    report = ios_tvm.tune_models(
        args.models, _target(args), args.out, time_budget_s=args.time_budget,
        max_trials_per_task=args.trials_per_task, num_trials_per_iter=args.trials_per_batch, retune=args.retune,
        small=args.small, batch_size=args.batch_size, dtype=args.dtype, build_timeout_s=args.build_timeout,
        keep=args.keep or None,
        search_strategy=strategy, progress=lambda line: print(line, flush=True))
    print(report.summary())
    for model, path in report.databases.items():
        print(f"{model}: {path} ({count_records(path)} records)")
    return 0


def _add_variants_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", type=_int_at_least(0), default=0, metavar="K",
                   help="after the search, try the K best schedules the tuning database holds for "
                        "each kernel of every concurrent stage and keep what runs the stage faster "
                        "(measured on the device; needs --database); 0: off (default)")


def _add_model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
    if default_model is None:
        p.add_argument("model", help="zoo model name (see `ios-tvm models`) or an .onnx file")
    else:
        p.add_argument("--model", default=default_model, help=f"zoo model name or .onnx file (default {default_model})")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape of a model input (repeatable): for an ONNX file, its inputs with dynamic "
                        "dimensions; for a zoo model, data=N,3,S,S (batch N, image size S)")
    p.add_argument("--target", default="auto",
                   help="TVM target: 'auto' (this machine's GPU, else CPU), 'llvm', 'cuda', or JSON "
                        "such as '{\"kind\": \"cuda\", \"arch\": \"sm_90\"}'")
    p.add_argument("--batch-size", type=_int_at_least(1), default=None, help="zoo models: batch size (1)")
    p.add_argument("--image-size", type=_int_at_least(1), default=None,
                   help="zoo models: input resolution (default: the paper's)")
    p.add_argument("--small", action="store_true", help="zoo models: the reduced test-size version")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="precision: convert a float32 model to float16 or bfloat16 with TVM's mixed-precision pass "
                        "(float32 accumulation; ios_tvm.precision.convert); float32 keeps it; default: the model as "
                        "given (a half-precision ONNX file stays half)")
    p.add_argument("-r", "--max-group-size", type=_int_at_least(1), default=3,
                   help="most kernels per stream per stage (3)")
    p.add_argument("-s", "--max-num-groups", type=_int_at_least(1), default=8,
                   help="most concurrent streams per stage (8)")
    p.add_argument("--max-block-size", type=_int_at_least(1), default=16, help="split blocks larger than this (16)")
    p.add_argument("--strategy", choices=["concurrent", "merge", "both"], default="both",
                   help="stages of concurrent groups, merged convolutions, or both (default)")
    p.add_argument("--database", default="auto",
                   help="MetaSchedule tuning database directory for the kernels (made by ios_tvm.tune); "
                        "'auto' (default): the one shipped for the target's architecture, if any; 'none': untuned")
    p.add_argument("--cost-model", choices=["measure", "analytic"], default=None,
                   help="stage costs: 'measure' (time the stages on the device; default for a CUDA "
                        "target with its GPU present) or 'analytic' (a roofline prediction; default "
                        "otherwise)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="the model runs as one CUDA graph (CUDA targets): builds replay the whole run as a graph, "
                        "and measured stage costs time each stage as a graph")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ios-tvm", description=(
        "Inter-operator scheduling for TVM Relax models: find the kernels that can run "
        "concurrently and the stages to run them in."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("demo", help="optimize a zoo model for this machine and print the schedule")
    _add_model_args(p, "inception_v3")
    p.add_argument("--stages", type=_int_at_least(0), default=30, help="stages to print (30)")
    _add_variants_arg(p)
    p.add_argument("--no-run", action="store_true", help="only search; do not build and time the model")
    p.add_argument("--repeat", type=_int_at_least(1), default=3, help="end-to-end timing samples (3)")
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
    p.add_argument("--repeat", type=_int_at_least(1), default=5, help="timing samples per schedule (5)")
    _add_variants_arg(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("show", help="print a schedule file (and draw it)")
    p.add_argument("schedule")
    p.add_argument("--all", action="store_true", help="every stage, not the first 40")
    p.add_argument("--png", help="also draw a Gantt chart to this file (PNG/SVG/PDF; needs matplotlib)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("models", help="list the zoo models")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("tune", help="tune zoo models' kernels with MetaSchedule into OUT/<arch>/<model>/")
    p.add_argument("models", nargs="+", metavar="MODEL", help="zoo model names (kernels they share are tuned once)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="seconds for the whole command (preparation counts); no batch starts that would "
                        "end far past it. Default: no limit, trials decide")
    p.add_argument("--trials-per-task", type=_int_at_least(1), default=None, metavar="N",
                   help="schedules a kernel is tuned up to, counting those on record (default 64; 512 with "
                        "--time-budget); with --retune, trials each kernel gets on top")
    p.add_argument("--trials-per-batch", type=_int_at_least(1), default=16, metavar="N",
                   help="candidates built (on every CPU core) and measured per batch (16)")
    p.add_argument("--population", type=_int_at_least(2), default=None, metavar="N",
                   help="evolutionary search population (MetaSchedule's default 512; smaller searches "
                        "faster per batch, for small machines and short budgets)")
    p.add_argument("--retune", action="store_true", help="also tune kernels that have enough records (extends them)")
    p.add_argument("--target", default="auto",
                   help="TVM target: 'auto' (this machine's GPU, else CPU), 'llvm', 'cuda' or JSON")
    p.add_argument("--out", default="tuning", metavar="DIR", help="root of the databases (default tuning/)")
    p.add_argument("--small", action="store_true", help="the reduced test-size versions of the models")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="tune the models converted to this precision (ios_tvm.precision.convert; default float32)")
    p.add_argument("--keep", type=_int_at_least(0), default=8, metavar="K",
                   help="afterwards prune each database to the best K schedules per kernel (default 8; "
                        "kernel variants use the runner-ups); 0: keep everything")
    p.add_argument("--build-timeout", type=float, default=120.0, metavar="S",
                   help="per-candidate build limit (120)")
    p.set_defaults(func=cmd_tune)
    return parser


def _bug() -> int:
    """The exception being handled is a bug: its traceback, and one line asking to report it."""
    traceback.print_exc()
    print(f"ios-tvm: internal error while {_STATE.phase}: this is a bug in ios_tvm (or TVM), not a mistake of "
          f"yours. Please report it with the command line, the traceback above and these versions: "
          f"{_versions()}", file=sys.stderr, flush=True)
    return 1


def _error_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"ios-tvm: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a mistake, 130: interrupted, 1: a bug)."""
    args = build_parser().parse_args(argv)  # argparse's mistakes: one line, exit status 2
    _STATE.reset()
    previous = signal.signal(signal.SIGINT, _on_interrupt) if _is_main_thread() else None
    log = logging.getLogger("ios_tvm")
    handler = _LogToStderr(logging.INFO)
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted()
    except IosTvmError as err:
        if _STATE.interrupted:
            return _interrupted()
        if isinstance(err, MemoryPlanError):  # the CLI always builds with keep-alive: a bug of the lowering
            return _bug()
        print(_error_line(err), file=sys.stderr, flush=True)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug: show it whole
        if _STATE.interrupted:  # TVM turned the KeyboardInterrupt into another error
            return _interrupted()
        return _bug()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
