"""What the ``ios-tvm`` commands share: what the options say (target, database), loading and
searching the model, building it, and timing it end to end with the noise of the timings."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from ..errors import CUDAGraphError, DatabaseError, TargetError
from .loading import describe_model, is_onnx, load_model, model_inputs, model_meta
from .progress import STATE, say
from .report import explain, plural, spread_text, target_name


# -- what the options say ------------------------------------------------------------------------
def target_of(args: argparse.Namespace) -> Any:
    """``--target``: ``auto`` (this machine), a name, a tag or JSON; checked to be one ios_tvm
    builds for."""
    from ..ir.target import device_type_of, resolve_target

    target = resolve_target(args.target)
    device_type_of(target)  # TargetError for kinds without a runtime (opencl, c, ...)
    if getattr(args, "cuda_graph", False) and target.kind.name != "cuda":
        raise CUDAGraphError(f"--cuda-graph replays CUDA kernels and needs a CUDA target, not {target.kind.name!r}: "
                             "drop --cuda-graph or give --target cuda")
    if getattr(args, "kernels", None) not in (None, "tvm") and target.kind.name != "cuda":
        raise TargetError(f"--kernels {args.kernels} runs cuDNN / cuBLASLt kernels and needs a CUDA target, not "
                          f"{target.kind.name!r}: drop --kernels or give --target cuda")
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
def load_for(args: argparse.Namespace, target: Any) -> Any:
    """Load the model (saying so) and check that it can fit the target's device at all."""
    from ..cost.gpus import device_memory
    from ..ir.footprint import check_fits

    say(f"loading {describe_model(args)}")
    mod = load_model(args)
    fix = ("give smaller dimensions with --input-shape" if is_onnx(args) else
           "lower --batch-size (or --image-size)")
    check_fits(mod, *device_memory(target), fix)
    return mod


def search(args: argparse.Namespace, end_to_end: bool | None = None) -> tuple[Any, float, Any]:
    """Load the model and search its schedule: ``(schedule, seconds, model)``."""
    from ..cost import default_cost_model_name
    from ..driver import SearchConfig, optimize, select_variants

    target = target_of(args)
    check_database(args, target)
    config = SearchConfig(args.max_group_size, args.max_num_groups, args.max_block_size, args.strategy,
                          getattr(args, "memory_budget", None))
    mod = load_for(args, target)
    cost = args.cost_model or default_cost_model_name(target)
    STATE.measuring = cost == "measure"
    say(f"lowering it for {target_name(target)} and searching its stages ({cost} cost model"
        f"{': each candidate stage is timed on the device' if STATE.measuring else ''})",
        "measuring stage costs" if STATE.measuring else "searching stages")
    t0 = time.perf_counter()
    sched = optimize(mod, target, search=config, cost_model=cost, database=database_of(args),
                     cuda_graph=args.cuda_graph, end_to_end=end_to_end, kernels=args.kernels or "tvm", tf32=args.tf32)
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
    return build(mod, target, sched, database=database_of(args), cuda_graph=args.cuda_graph,
                 kernels=args.kernels, tf32=args.tf32 or None)


def runs_per_sample(target: Any) -> int:
    """Runs averaged into one timing sample: 20 on a GPU (a run is short), 1 on a CPU (as many
    more as :data:`MIN_SAMPLE_MS` takes)."""
    return 20 if target.kind.name == "cuda" else 1


#: a timing sample on a CPU runs at least this long: a single run of a small model (tens of
#: microseconds) is mostly noise
MIN_SAMPLE_MS = 100


def min_sample_ms(target: Any) -> int:
    return 0 if target.kind.name == "cuda" else MIN_SAMPLE_MS


def sampling(target: Any, repeat: int) -> str:
    """``"5 samples of 20 runs"``, ``"3 samples of at least 100 ms"``: how a timing samples."""
    least = min_sample_ms(target)
    return (f"{plural(repeat, 'sample')} of at least {least} ms" if least else
            f"{plural(repeat, 'sample')} of {plural(runs_per_sample(target), 'run')}")


def time_model(ex: Any, dev: Any, inputs: list, target: Any, repeat: int, label: str,
               expect_s: float | None) -> Any:
    """The :class:`~ios_tvm.driver.guard.Timing` of ``repeat`` end-to-end samples, saying how long
    it should take."""
    from ..driver.guard import Timing
    from ..runtime.profiling import time_vm

    number = runs_per_sample(target)
    total = (max(expect_s * number, min_sample_ms(target) / 1e3) * repeat + expect_s) if expect_s else 0.0
    hint = f", about {total:.0f} s predicted" if total > 2 else ""
    say(f"timing the {label} model ({sampling(target, repeat)}{hint})")
    return Timing.of(time_vm(ex, dev, inputs, number=number, repeat=repeat, min_repeat_ms=min_sample_ms(target)))


def measure_end_to_end(sched: Any, mod: Any, args: argparse.Namespace) -> str:
    """Build the sequential and the IOS model, check they agree, time both end to end."""
    import tvm
    from tvm import relax

    from ..driver.guard import same_within_noise
    from ..ir.precision import model_dtype, output_tolerance
    from ..ir.target import device_of

    target = target_of(args)
    dev = device_of(target)
    if not dev.exist:
        return f"(not run: {dev} is not present on this machine)"
    prepare_streams(sched)
    inputs = model_inputs(mod)
    sequential = None
    if (sched.meta.get("kernels") or {}).get("mode", "tvm") != "tvm":  # both run the kernels the search chose
        from ..core.schedule import Schedule
        from ..ir.graph import extract_graph

        sequential = Schedule.sequential(extract_graph(mod, target))
        sequential.meta["kernels"] = sched.meta["kernels"]
    seq_ex = build_model(mod, target, sequential, args, "sequential", sched.num_nodes)
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
    tie = "   (within the noise: no real difference)" if same_within_noise(seq, ios) and args.repeat > 1 else ""
    return "\n".join([
        f"measured end to end on {dev} (median of {args.repeat}, ± the spread of the samples; outputs equal):",
        f"  sequential {seq.median * 1e3:9.4f} ms {spread_text(seq.spread, seq.median):>6}   1.00x",
        f"  IOS        {ios.median * 1e3:9.4f} ms {spread_text(ios.spread, ios.median):>6}   "
        f"{seq.median / ios.median:.2f}x{tie}",
        *explain(sched, seq.median, target),
    ])
