"""What a newcomer tripped over (issue 22), beyond the one-line mistakes of
``tests/test_cli_errors.py``: output pipes, files written (permissions, folders, concurrent
writers, unwritable places), scalar ONNX inputs, schedules kept by the end-to-end check, what the
commands print, ``tune --out D`` then ``--database D``, and the README's promises."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ios_tvm
from ios_tvm import models

onnx = pytest.importorskip("onnx", reason="the test extra installs onnx")
from test_cli_errors import _conv_model, _scalar_model, assert_one_error, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sched_file(tmp_path_factory):
    """A schedule of SqueezeNet (small) for llvm, as ``ios-tvm optimize`` writes it."""
    sched = ios_tvm.optimize(models.get("squeezenet", small=True), "llvm")
    sched.meta["model"] = {"name": "squeezenet"}
    return sched.save(tmp_path_factory.mktemp("sched") / "s.json")


# -- tracebacks that were labelled bugs ------------------------------------------------------------
def test_a_closed_pipe_ends_quietly(sched_file, capfd, monkeypatch):
    """``ios-tvm show s.json | head -3``: the reader goes away; no traceback, exit status 141 as a
    command killed by SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "ios_tvm", "show", str(sched_file), "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""

    class Closed:  # the same in this process: a stdout whose reader went away
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    rc, _, err = run_cli(capfd, "show", sched_file)
    assert rc == 141 and err == ""


def test_an_output_that_cannot_be_replaced_is_one_line(sched_file, capfd, monkeypatch, tmp_path):
    """An immutable file or a read-only mount refuses the rename: one line, the old file intact,
    no temporary file left behind."""
    from ios_tvm.core import files

    out = tmp_path / "s.json"
    out.write_text("the old schedule")

    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files.os, "replace", refuse)
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--small", "--target", "llvm", "-o", out)
    assert_one_error(rc, err, f"cannot write {out} (Operation not permitted): what was there is left as it was")
    assert out.read_text() == "the old schedule" and sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_scalar_onnx_inputs(tmp_path, capfd):
    """A rank-0 input is static as declared; one declared without a shape is given as NAME=."""
    for name, blob, extra in (("scalar.onnx", _scalar_model(True), []),
                              ("noshape.onnx", _scalar_model(False), ["--input-shape", "s="])):
        (tmp_path / name).write_bytes(blob)
        out = tmp_path / f"{name}.json"
        rc, _, err = run_cli(capfd, "optimize", tmp_path / name, "--target", "llvm", "-o", out, *extra)
        assert rc == 0, err
        assert json.loads(out.read_text())["meta"]["model"]["inputs"] == {"x": [1, 3, 8, 8], "s": []}


# -- accepted in silence -----------------------------------------------------------------------
def test_a_model_too_large_for_the_device_is_refused_in_python_too():
    from ios_tvm.errors import InvalidArgumentError
    from ios_tvm.ir.tensors import input_arrays

    mod = models.get("squeezenet", small=True, batch_size=10**9)
    with pytest.raises(InvalidArgumentError, match=r"does not fit in the memory of the A100 80GB SXM \(sm_80\)"):
        ios_tvm.optimize(mod, {"kind": "cuda", "arch": "sm_80"})
    with pytest.raises(InvalidArgumentError, match="more than this machine's"):
        input_arrays(mod)


def test_another_writer_is_not_overwritten(capfd, tmp_path, monkeypatch):
    """Two commands writing one -o: the one finishing second says so and leaves the file alone."""
    from ios_tvm.cli import commands

    out = tmp_path / "s.json"
    search = commands.search

    def meanwhile(args, *a, **kw):  # another process writes the file while this one searches
        out.write_text("the other command's schedule")
        return search(args, *a, **kw)

    monkeypatch.setattr(commands, "search", meanwhile)
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--small", "--target", "llvm", "-o", out)
    assert_one_error(rc, err, f"-o {out} was written by another process while this command ran")
    assert out.read_text() == "the other command's schedule"


def test_missing_folders_are_made_and_said(sched_file, capfd, tmp_path):
    out = tmp_path / "new" / "sub" / "s.json"
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--small", "--target", "llvm", "-o", out)
    assert rc == 0 and out.is_file(), err
    assert re.search(rf"ios-tvm: \[ *[0-9.]+ s\] creating the folder {tmp_path / 'new' / 'sub'} for -o s.json", err)
    png = tmp_path / "pics" / "g.png"
    rc, _, err = run_cli(capfd, "show", sched_file, "--png", png)
    assert rc == 0 and png.is_file() and f"creating the folder {png.parent} for --png g.png" in err
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--small", "--target", "llvm", "-o",
                         tmp_path / "refused" / "s.json", "--batch-size", "0")
    assert rc == 2 and not (tmp_path / "refused").exists()  # a refused command makes no folder


def test_files_are_written_with_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        s = ios_tvm.optimize(models.get("squeezenet", small=True), "llvm")
        assert s.save(tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        assert s.save(tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
        (tmp_path / "c.json").write_text("{}")
        os.chmod(tmp_path / "c.json", 0o600)
        assert s.save(tmp_path / "c.json").stat().st_mode & 0o777 == 0o600  # a replaced file keeps its mode
    finally:
        os.umask(old)


# -- leads nowhere -------------------------------------------------------------------------------
def test_show_says_which_schedule_the_end_to_end_check_kept(capfd, tmp_path):
    from ios_tvm.cost import AnalyticCostModel
    from ios_tvm.driver.guard import keep_fastest

    mod = models.get("squeezenet", small=True)
    graph = ios_tvm.extract_graph(mod, "llvm")
    model = AnalyticCostModel.for_target("llvm")
    ios = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=model)
    samples = {"sequential": [2.0e-3, 2.1e-3], "greedy": [1.0e-3, 1.01e-3], "ios": [1.2e-3, 1.21e-3]}
    kept = keep_fastest(ios, graph, model, 8, lambda label, c: samples[label])
    path = kept.save(tmp_path / "kept.json")
    rc, out, err = run_cli(capfd, "show", path)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("the greedy schedule (kept instead of the IOS schedule by the end-to-end check), ")
    assert any(line.startswith("  greedy ") and line.endswith("<- kept") for line in lines)
    assert "IOS ran 19.9% slower than greedy" in out


def test_format_duration_never_says_0_s():
    from ios_tvm.cost.measure import format_duration

    assert [format_duration(s) for s in (0.04, 0.3, 4.26, 12, 600)] == ["under 0.1 s", "0.3 s", "4.3 s", "12 s",
                                                                         "10 min"]


def test_ctrl_c_while_timing_acts_within_a_run(tiny_branches):
    """A long run is timed from Python, run by run: SIGINT interrupts it at once, not after every
    sample (the demo's timing of Inception-v3 on a CPU took 12 s to stop)."""
    import tvm

    from ios_tvm.runtime import profiling

    mod, data = tiny_branches
    ex = ios_tvm.build(mod, "llvm")
    old = profiling.LONG_RUN_S
    profiling.LONG_RUN_S = 0.0  # every run counts as long here (a run takes microseconds)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            profiling.time_vm(ex, tvm.cpu(), [data], number=1, repeat=10**7)  # hours, unless interrupted
    finally:
        timer.cancel()
        profiling.LONG_RUN_S = old
    assert time.perf_counter() - t0 < 10


# -- smaller ---------------------------------------------------------------------------------------
def test_stage_lists_say_how_to_see_the_rest(sched_file, capfd):
    rc, out, _ = run_cli(capfd, "demo", "--model", "squeezenet", "--small", "--target", "llvm", "--no-run",
                         "--stages", "3")
    n = json.loads(Path(sched_file).read_text())["stages"]
    assert rc == 0 and f"  ... {len(n) - 3} more stages (--stages {len(n)} shows them all)" in out
    text = ios_tvm.Schedule.load(sched_file).to_text(max_stages=len(n) - 1, more=" (--all shows them)")
    assert text.endswith("  ... 1 more stage (--all shows them)")


def test_help_and_models_say_what_there_is(capfd):
    rc, out, _ = run_cli(capfd, "--help")
    text = " ".join(out.split())  # argparse wraps the lines
    assert rc == 0
    assert "or an .onnx file" in text and "then build and time it" in text and "Ctrl-C" in text
    assert "search the schedule of a zoo model or an .onnx file" in text
    rc, out, err = run_cli(capfd, "models", "squeezenet", "googlenet", "--small")
    assert rc == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert out.splitlines()[0].split() == ["model", "input", "weights", "kernels", "what"]
    assert rows["squeezenet"][1:] == ["1x3x64x64", "0.1", "M", "39", "64x64"] and rows["googlenet"][1] == "1x3x32x32"


def test_reports_count_in_words(tmp_path, capfd):
    """"1 kernel, 1 block", not "1 kernels, 1 blocks"."""
    (tmp_path / "c.onnx").write_bytes(_conv_model([1, 3, 32, 32]))
    rc, out, err = run_cli(capfd, "optimize", tmp_path / "c.onnx", "--target", "llvm", "-o", tmp_path / "c.json")
    assert rc == 0, err
    assert "graph: 1 kernel, 1 block; search: 2 states, 1 transition, 1 candidate stage," in out
    assert "(0 merge stages, strategy both)" in out


def test_gantt_chart_is_readable(sched_file):
    pytest.importorskip("matplotlib")
    from ios_tvm.viz import figure

    fig = figure(ios_tvm.Schedule.load(sched_file))  # 1.1 ms predicted on a CPU
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("time (ms, analytic cost model)")
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""  # no 1e6 offset
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "conv" in labels and "pool" in labels
    assert "one after another" in ax.get_title()


def test_readme_runs_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    after = ci.split("# The README's test command")[1].splitlines()[1:]
    lines = [line for line in after if line.strip() and line.strip() != "set +e"]
    command = []
    for line in lines:  # the command, its continued lines joined
        command.append(line.rstrip().removesuffix("\\").strip())
        if not line.rstrip().endswith("\\"):
            break
    command = " ".join(command)
    assert command.startswith("python3 -m pip install") and command in readme, command
    extras = (ROOT / "pyproject.toml").read_text().split("\ntest = [")[1].split("]")[0]
    assert '"torch>=2.4"' in extras  # the torch.export import test runs, as in CI
    assert "tutorials/" in readme and "models.random_params(mod)" in readme


# -- tune --out D, then --database D ---------------------------------------------------------------
def _seed_database(path: Path, mod, target) -> int:
    """Records of ``mod``'s kernels (their default schedule, an invented run time) in a database
    at ``path``, as another model's tuning would have left them: what ``tune`` finds and shares."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from ios_tvm.compiler.databases import open_database
    from ios_tvm.ir.graph import lower_for_graph

    db = open_database(path)
    tasks = ms.relax_integration.extract_tasks(lower_for_graph(mod, target), target)
    for task in tasks:
        kernel = task.dispatched[0]
        sch = tvm.s_tir.Schedule(kernel)
        sch.get_child_blocks(sch.get_sblock("root"))  # a trace MetaSchedule counts (an empty one it skips)
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(kernel), [1e-5], target,
                                                         ms.arg_info.ArgInfo.from_prim_func(kernel["main"])))
    return len(tasks)


def test_tune_out_then_database(tmp_path, capfd):
    """``ios-tvm tune M --out D`` writes ``D/<arch>/M/``; ``optimize``, ``build`` and ``bench`` take
    ``--database D`` (and ``D/<arch>``). The kernels' records come from another database under
    ``D/<arch>/``, which tune shares into M's (MetaSchedule's own search is tested in
    ``test_tuning.py``; here nothing is left to tune, so no build worker starts)."""
    from ios_tvm.cli.loading import load_onnx
    from ios_tvm.compiler.databases import count_records
    from ios_tvm.ir.target import tuning_target

    model = tmp_path / "tiny.onnx"
    model.write_bytes(_conv_model([1, 3, 32, 32]))
    root = tmp_path / "D"
    tasks = _seed_database(root / "generic" / "seed", load_onnx(str(model), {}), tuning_target("llvm"))
    rc, out, err = run_cli(capfd, "tune", model, "--target", "llvm", "--out", root, "--trials-per-task", "1")
    assert rc == 0, err
    assert f"tiny: {root / 'generic' / 'tiny'} ({tasks} record)" in out and f"--database {root}" in out
    assert count_records(root / "generic" / "tiny") == tasks
    lib = tmp_path / "out" / "tiny.so"
    said = {}
    for args in (("optimize", model, "-o", tmp_path / "s.json"), ("build", model, "-o", lib),
                 ("bench", model, "--repeat", "3")):
        rc, out, err = run_cli(capfd, *args, "--target", "llvm", "--database", root)
        assert rc == 0, (args, err)
        said[args[0]] = out + err
    assert "building the sequential model for llvm (TVM compiles the kernels, with the tuning database)" in said["build"]
    assert lib.is_file() and "noise" in said["bench"] and "outputs equal" in said["bench"]
    import tvm

    from ios_tvm.compiler.pipeline import plan_memory

    def scheduled(database):  # the kernels the database's records scheduled
        planned = plan_memory(load_onnx(str(model), {}), tuning_target("llvm"), database=database)
        return [gv.name_hint for gv, f in planned.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
                and f.attrs is not None and "tirx.is_scheduled" in f.attrs]

    assert scheduled(str(root)) and not scheduled(None)
    rc, _, err = run_cli(capfd, "build", model, "--target", "llvm", "--database", root / "generic", "-o", lib)
    assert rc == 0 and "with the tuning database" in err
    rc, _, err = run_cli(capfd, "build", model, "--target", '{"kind": "cuda", "arch": "sm_90"}', "--database", root)
    assert_one_error(rc, err, f"{root} holds tuning databases for generic, none for this target's sm_90")
