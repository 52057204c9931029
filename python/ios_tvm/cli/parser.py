"""The ``ios-tvm`` command line's arguments: one parser, a sub-command per ``cmd_*`` of
:mod:`ios_tvm.cli.commands`."""

from __future__ import annotations

import argparse
from typing import Callable

from . import commands


class Parser(argparse.ArgumentParser):
    """argparse, with its mistakes as one ``ios-tvm: error:`` line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"ios-tvm: error: {message} (see `{self.prog} --help`)\n")


def int_at_least(low: int) -> Callable[[str], int]:
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


def seconds_above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


seconds_above_zero.__name__ = "seconds > 0"


def add_variants_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", type=int_at_least(0), default=0, metavar="K",
                   help="after the search, try the K best schedules the tuning database holds for "
                        "each kernel of every concurrent stage and keep what runs the stage faster "
                        "(measured on the device; needs --database); 0: off (default)")


def memory_budget(text: str) -> str:
    """``--memory-budget``: checked now (one error line), kept as written for the schedule."""
    from ..driver.budget import MemoryBudget
    from ..errors import MemoryBudgetError

    try:
        MemoryBudget.parse(text)
    except MemoryBudgetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


memory_budget.__name__ = "memory budget"


def add_budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-budget", type=memory_budget, default=None, metavar="SIZE",
                   help="most activation memory the build may plan: a multiple of the sequential schedule's "
                        "(1.25x), or bytes (300MiB, 2GB, 123456); default: unbounded")


def add_model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
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
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="zoo models: batch size (1)")
    p.add_argument("--image-size", type=int_at_least(1), default=None,
                   help="zoo models: input resolution (default: the paper's)")
    p.add_argument("--small", action="store_true", help="zoo models: the reduced test-size version")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="precision: convert a float32 model to float16 or bfloat16 with TVM's mixed-precision pass "
                        "(float32 accumulation; ios_tvm.precision.convert); float32 keeps it; default: the model as "
                        "given (a half-precision ONNX file stays half)")
    p.add_argument("-r", "--max-group-size", type=int_at_least(1), default=3,
                   help="most kernels per stream per stage (3)")
    p.add_argument("-s", "--max-num-groups", type=int_at_least(1), default=8,
                   help="most concurrent streams per stage (8)")
    p.add_argument("--max-block-size", type=int_at_least(1), default=16, help="split blocks larger than this (16)")
    p.add_argument("--strategy", choices=["concurrent", "merge", "both"], default="both",
                   help="stages of concurrent groups, merged kernels (convolutions or matmuls on one input), "
                        "or both (default)")
    p.add_argument("--database", default="auto",
                   help="MetaSchedule tuning databases for the kernels: the --out DIR of `ios-tvm tune` (its "
                        "databases for the target's architecture), one database directory (ios_tvm.tune's work_dir), "
                        "'auto' (default: the ones shipped for the target's architecture, if any) or 'none' (untuned)")
    p.add_argument("--cost-model", choices=["measure", "analytic"], default=None,
                   help="stage costs: 'measure' (time the stages on the device; default for a CUDA "
                        "target with its GPU present) or 'analytic' (a roofline prediction; default "
                        "otherwise)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="the model runs as one CUDA graph (CUDA targets): builds replay the whole run as a graph, "
                        "and measured stage costs time each stage as a graph")
    p.add_argument("--kernels", choices=["tvm", "vendor", "auto"], default=None,
                   help="convolutions and matmuls: TVM's kernels ('tvm', the default of optimize), cuDNN / cuBLASLt "
                        "('vendor'), or per call the faster alone ('auto', measured on the GPU); build: default what "
                        "the schedule recorded (CUDA targets)")
    p.add_argument("--tf32", action="store_true", help="let float32 vendor kernels compute in TF32 (with --kernels)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ios-tvm", description=(
        "Inter-operator scheduling for TVM Relax models: find the kernels that can run "
        "concurrently and the stages to run them in. MODEL is a zoo model (see `ios-tvm models`) or an "
        ".onnx file."), epilog=(
        "A mistake ends in one `ios-tvm: error:` line (exit status 2); Ctrl-C in one line (130). "
        "`ios-tvm COMMAND --help` lists a command's options."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    p = sub.add_parser("demo", help="optimize a zoo model for this machine, print the schedule, then build and time "
                                    "it against the sequential model")
    add_model_args(p, "inception_v3")
    p.add_argument("--stages", type=int_at_least(0), default=30, help="stages to print (30)")
    add_variants_arg(p)
    p.add_argument("--no-run", action="store_true", help="only search; do not build and time the model")
    p.add_argument("--repeat", type=int_at_least(1), default=3, help="end-to-end timing samples (3)")
    add_budget_arg(p)
    p.set_defaults(func=commands.cmd_demo)
    p = sub.add_parser("optimize", help="search the schedule of a zoo model or an .onnx file and write it as JSON")
    add_model_args(p, None)
    p.add_argument("-o", "--output", help="schedule file (default MODEL.schedule.json)")
    add_variants_arg(p)
    add_budget_arg(p)
    p.set_defaults(func=commands.cmd_optimize)
    p = sub.add_parser("build", help="compile a model (zoo or .onnx) with a schedule into a shared library")
    add_model_args(p, None)
    p.add_argument("--schedule", help="schedule JSON from `ios-tvm optimize` (default: sequential)")
    p.add_argument("-o", "--output", help="library path (default MODEL.so)")
    p.set_defaults(func=commands.cmd_build)
    p = sub.add_parser("bench", help="build sequential, greedy and IOS, check their outputs agree and time them "
                                     "side by side on this machine (with the noise of the timings)")
    add_model_args(p, None)
    p.add_argument("--repeat", type=int_at_least(1), default=5, help="timing samples per schedule (5)")
    add_variants_arg(p)
    add_budget_arg(p)
    p.set_defaults(func=commands.cmd_bench)
    p = sub.add_parser("memory", help="search a model (zoo or .onnx) under a few memory budgets and print latency "
                                      "against planned memory (no device needed)")
    add_model_args(p, None)
    p.add_argument("--budgets", nargs="+", type=memory_budget, default=None, metavar="SIZE",
                   help="budgets to search under (default: 1.0x 1.1x 1.25x 1.5x, and unbounded)")
    p.add_argument("--png", help="also plot latency against memory to this file (PNG/SVG/PDF; needs matplotlib)")
    p.add_argument("--json", help="also write the points as JSON here")
    p.set_defaults(func=commands.cmd_memory)
    p = sub.add_parser("show", help="print a schedule file (and draw it as a Gantt chart)")
    p.add_argument("schedule")
    p.add_argument("--all", action="store_true", help="every stage, not the first 40")
    p.add_argument("--png", help="also draw a Gantt chart to this file (PNG/SVG/PDF; needs matplotlib)")
    p.set_defaults(func=commands.cmd_show)
    p = sub.add_parser("models", help="list the zoo models: input size, weights, kernels")
    p.add_argument("names", nargs="*", metavar="MODEL", help="these models only (default: all)")
    p.add_argument("--small", action="store_true", help="the reduced test-size versions")
    p.set_defaults(func=commands.cmd_models)
    p = sub.add_parser("tune", help="tune models' kernels (zoo or .onnx) with MetaSchedule into OUT/<arch>/<model>/")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="zoo model names or .onnx files (kernels they share are tuned once; an ONNX file's "
                        "database is named after the file)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape of an ONNX model's input with dynamic dimensions (repeatable)")
    p.add_argument("--time-budget", type=seconds_above_zero, default=None, metavar="S",
                   help="seconds for the whole command (preparation counts); no batch starts that would "
                        "end far past it. Default: no limit, trials decide")
    p.add_argument("--trials-per-task", type=int_at_least(1), default=None, metavar="N",
                   help="schedules a kernel is tuned up to, counting those on record (default 64; 512 with "
                        "--time-budget); with --retune, trials each kernel gets on top")
    p.add_argument("--trials-per-batch", type=int_at_least(1), default=16, metavar="N",
                   help="candidates built (on every CPU core) and measured per batch (16)")
    p.add_argument("--population", type=int_at_least(2), default=None, metavar="N",
                   help="evolutionary search population (MetaSchedule's default 512; smaller searches "
                        "faster per batch, for small machines and short budgets)")
    p.add_argument("--retune", action="store_true", help="also tune kernels that have enough records (extends them)")
    p.add_argument("--target", default="auto",
                   help="TVM target: 'auto' (this machine's GPU, else CPU), 'llvm', 'cuda' or JSON")
    p.add_argument("--out", default="tuning", metavar="DIR",
                   help="root of the databases (default tuning/): written to DIR/<arch>/<model>/; builds and "
                        "searches read them with --database DIR")
    p.add_argument("--small", action="store_true", help="zoo models: the reduced test-size versions")
    p.add_argument("--batch-size", type=int_at_least(1), default=1, help="zoo models: batch size (1)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="tune the models converted to this precision (ios_tvm.precision.convert; default float32)")
    p.add_argument("--keep", type=int_at_least(0), default=8, metavar="K",
                   help="afterwards prune each database to the best K schedules per kernel (default 8; "
                        "kernel variants use the runner-ups); 0: keep everything")
    p.add_argument("--build-timeout", type=seconds_above_zero, default=120.0, metavar="S",
                   help="per-candidate build limit (120)")
    p.set_defaults(func=commands.cmd_tune)
    return parser
