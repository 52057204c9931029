"""How tuning shares out trials and stops on time, without compiling anything: the allocator on
its own, then MetaSchedule's real task loop with a fake builder and runner (tiny PrimFuncs,
deterministic latencies), and the database files (repair, prune)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time

import pytest
import tvm
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult

from ios_tvm.compiler.databases import (
    RECORD_FILE,
    WORKLOAD_FILE,
    count_records,
    open_database,
    prune_database,
)
from ios_tvm.errors import TuningError
from ios_tvm.tuning.allocator import TaskInfo, TrialAllocator
from ios_tvm.tuning.builder import fast_tvmscript_parsing
from ios_tvm.tuning.scheduler import run_tasks

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})


def _simulate(alloc: TrialAllocator, latency, trials: int) -> list[int]:
    """Run the allocator's loop by hand: pick, issue, measure ``latency(k, batch_no)``."""
    live = range(len(alloc.tasks))
    batches = [0] * len(alloc.tasks)
    while sum(alloc.trials) < trials:
        k = alloc.pick(live)
        assert k is not None
        alloc.issue(k)
        alloc.record(k, [latency(k, batches[k])] * alloc.batch)
        batches[k] += 1
    return alloc.trials


def _tasks(calls, estimates=None, allowance=10_000):
    estimates = estimates or [1e-3] * len(calls)
    return [TaskInfo(f"t{i}", None, {"m": c}, e, allowance=allowance) for i, (c, e) in enumerate(zip(calls, estimates))]


def test_trials_follow_weights_exactly_without_potential():
    """Weights 3 : 3 : 1 (3 ms x 1 call, 1 ms x 3 calls, 1 ms x 1 call). With potential off the
    stride rule keeps every task within one batch of its share at all times, so at 140 trials
    the split is 60 / 60 / 20 give or take a batch (2 trials)."""
    lat = [3e-3, 1e-3, 1e-3]
    alloc = TrialAllocator(_tasks([1, 3, 1]), batch=2, floor=1.0)
    got = _simulate(alloc, lambda k, b: lat[k], 140)
    assert [round(w, 3) for w in alloc.weights()] == [0.429, 0.429, 0.143]
    for n, want in zip(got, (60, 60, 20)):
        assert abs(n - want) <= 2, got


def test_trials_follow_weights_with_default_potential():
    """All tasks plateau (constant latencies): each keeps ``floor`` after its first ``window``
    batches, so the split still follows the weights, within the ``window + 1`` batches a task
    may run at full rate while the others already run at ``floor`` (8 trials here)."""
    lat = [3e-3, 1e-3, 1e-3]
    alloc = TrialAllocator(_tasks([1, 3, 1]), batch=2)
    got = _simulate(alloc, lambda k, b: lat[k], 280)
    for n, want in zip(got, (120, 120, 40)):
        assert abs(n - want) <= 8, got
    assert got[0] > 2.5 * got[2] and got[1] > 2.5 * got[2]


def test_potential_moves_trials_to_tasks_that_still_improve():
    """Same calls and starting latency: the task whose best latency keeps falling (2% a batch)
    gets more trials than the one that plateaued, although its falling latency lowers its
    weight (a task that got much faster matters less: 10% a batch ends up even)."""
    alloc = TrialAllocator(_tasks([1, 1]), batch=4)
    got = _simulate(alloc, lambda k, b: 1e-3 * (0.98 ** b if k == 0 else 1.0), 200)
    assert got[0] > 1.5 * got[1], got
    assert alloc.potential(1) == pytest.approx(0.2) and alloc.potential(0) == 1.0


def test_weights_calibrate_estimates_and_count_each_model_equally():
    tasks = [TaskInfo("a", None, {"x": 1}, 1e-3), TaskInfo("b", None, {"x": 1}, 2e-3),
             TaskInfo("c", None, {"x": 2, "y": 1}, 1e-3), TaskInfo("d", None, {"y": 1}, 3e-3)]
    alloc = TrialAllocator(tasks, batch=4)
    alloc.record(0, [4e-3])  # measured 4x its estimate: the others' estimates scale by 4
    assert alloc.latencies() == pytest.approx([4e-3, 8e-3, 4e-3, 12e-3])
    w = alloc.weights()
    # model x: 4 + 8 + 2*4 = 20; model y: 4 + 12 = 16 (each model's shares sum to 1)
    assert w == pytest.approx([4 / 20, 8 / 20, 8 / 20 + 4 / 16, 12 / 16])
    assert sum(w) == pytest.approx(2.0)
    alloc.record(0, [1e-3])  # tuned 4x faster: the calibration keeps its first measurement
    assert alloc.latencies() == pytest.approx([1e-3, 8e-3, 4e-3, 12e-3])


def test_heavy_tasks_start_first_and_allowances_hold():
    alloc = TrialAllocator(_tasks([1, 1, 1], [1e-3, 9e-3, 3e-3], allowance=8), batch=4)
    first = alloc.pick(range(3))
    assert first == 1
    got = _simulate(alloc, lambda k, b: 1e-3, 24)
    assert got == [8, 8, 8]
    assert alloc.pick(range(3)) is None  # every allowance spent


# -- MetaSchedule's own task loop, fake builds and runs ------------------------------------------

def _tiny(i: int) -> tvm.IRModule:
    """A small matmul (task ``i``): small to schedule, with thousands of distinct schedules."""
    n = 64
    a = te.placeholder((n, n), name="a")
    w = te.placeholder((n, n + 8 * i), name="w")
    r = te.reduce_axis((0, n), name="r")
    b = te.compute((n, n + 8 * i), lambda x, y: te.sum(a[x, r] * w[r, y], axis=r), name="b")
    return tvm.IRModule({"main": te.create_prim_func([a, w, b]).with_attr("fake_id", i)})


@derived_object
class FakeBuilder(PyBuilder):
    """Builds nothing: an artifact path naming the task (MetaSchedule removes its directory)."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds

    def build(self, build_inputs):
        time.sleep(self.seconds)
        out = []
        for x in build_inputs:
            attrs = x.mod["main"].attrs
            task = int(attrs["fake_id"]) if attrs is not None and "fake_id" in attrs else 0
            out.append(BuilderResult(os.path.join(tempfile.mkdtemp(), f"fake:{task}"), None))
        return out


@derived_object
class FakeRunner(PyRunner):
    """Latency of a candidate: ``latency[task]`` seconds; sends SIGINT at batch ``interrupt_at``."""

    def __init__(self, latency, interrupt_at: int = 0) -> None:
        super().__init__()
        self.latency = latency
        self.interrupt_at = interrupt_at
        self.batches = 0

    def run(self, runner_inputs):
        self.batches += 1
        if self.batches == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        out = []
        for x in runner_inputs:
            res = RunnerResult([self.latency[int(x.artifact_path.rsplit(":", 1)[1])]], None)
            out.append(RunnerFuture(lambda: True, lambda res=res: res))
        return out


def _fake_run(tasks, latency, **kwargs):
    fast_tvmscript_parsing()
    ctxs = [ms.TuneContext(mod=t.mod, target=TARGET, space_generator="post-order-apply",
                           search_strategy="replay-trace", task_name=t.name, num_threads=1).clone()
            for t in tasks if t.allowance > 0]
    lines = []
    builder = kwargs.pop("builder", None) or FakeBuilder()
    runner = FakeRunner(latency, kwargs.pop("interrupt_at", 0))
    clock = kwargs.pop("clock", None)
    if clock is not None:  # the clock starts once the contexts are made: clock["start"], deadline after it
        kwargs["start"] = clock["start"] = time.monotonic()
        kwargs["deadline"] = clock["start"] + clock["deadline_after"]
    res = run_tasks(tasks, ctxs, TARGET, builder=builder, runner=runner, cost_model=ms.cost_model.RandomModel(),
                    report=lines.append, **kwargs)
    return res, lines


def test_metaschedule_loop_follows_weights_and_writes_records(tmp_path):
    """Through ``TaskScheduler.tune``: 3 : 3 : 1 weights give 3 : 3 : 1 trials (within the
    allocator's bound), every valid record lands in its task's database, progress says so."""
    dbs = [open_database(tmp_path / f"db{i}") for i in range(3)]
    tasks = [TaskInfo(f"t{i}", _tiny(i), {"m": c}, 1e-3, allowance=1000, databases=[dbs[i]])
             for i, c in enumerate([1, 3, 1])]
    res, lines = _fake_run(tasks, {0: 3e-3, 1: 1e-3, 2: 1e-3}, num_trials_per_iter=2, max_trials_global=280)
    assert sum(res.trials) == 280 and res.stopped_by == "trials"
    for n, want in zip(res.trials, (120, 120, 40)):
        assert abs(n - want) <= 8, res.trials
    assert res.written == 280
    for i, db in enumerate(dbs):
        assert count_records(tmp_path / f"db{i}") == res.trials[i]
        again = open_database(tmp_path / f"db{i}")
        top = again.get_top_k(again.commit_workload(tasks[i].mod), 1)
        assert float(top[0].run_secs[0]) == pytest.approx({0: 3e-3, 1: 1e-3, 2: 1e-3}[i])
    assert "trials | t1:" in lines[0] and "best 1.0000 ms" in lines[0]


def test_xgboost_missing_falls_back_to_random_with_a_warning(monkeypatch, caplog):
    """MetaSchedule imports xgboost only when its model first trains (after the first batch):
    without it the run would end there, so the cost model is chosen, and said, up front."""
    import importlib.util

    from ios_tvm.tuning import scheduler as tune_scheduler

    real = importlib.util.find_spec
    assert isinstance(tune_scheduler.make_cost_model("random"), ms.cost_model.RandomModel)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a))
    with caplog.at_level("WARNING", logger="ios_tvm"):
        model = tune_scheduler.make_cost_model("xgb")
    assert isinstance(model, ms.cost_model.RandomModel)
    assert "xgboost is not installed" in caplog.text and "pip install xgboost" in caplog.text
    monkeypatch.undo()
    if importlib.util.find_spec("xgboost") is not None:
        assert isinstance(tune_scheduler.make_cost_model("xgb"), ms.cost_model.XGBModel)


@pytest.mark.timing
def test_deadline_stops_the_loop_before_it(tmp_path):
    """Batches of 0.25 s against a 2 s deadline: no batch starts that would end after it, so the
    loop ends before the deadline, within about a batch of it (the fake runner adds nothing;
    MetaSchedule's own per-batch work is milliseconds here)."""
    tasks = [TaskInfo(f"t{i}", _tiny(i), {"m": 1}, 1e-3, allowance=100_000) for i in range(2)]
    # MetaSchedule's first run in a process prepares for seconds (more on a busy machine): not
    # the loop's doing, so a short run takes it first
    _fake_run(tasks, {0: 1e-3, 1: 1e-3}, num_trials_per_iter=2, max_trials_global=4)
    clock = {"deadline_after": 2.0}
    res, _ = _fake_run(tasks, {0: 1e-3, 1: 1e-3}, builder=FakeBuilder(0.25), num_trials_per_iter=2, clock=clock)
    took = time.monotonic() - clock["start"]
    assert res.stopped_by == "time"
    assert 2.0 - 0.25 - 0.15 <= took <= 2.0 + 0.05, took
    assert sum(res.trials) >= 2 * 5


def test_a_preparation_past_the_budget_tunes_nothing_and_says_so(tiny_branches, tmp_path, monkeypatch):
    """Tuning says what it prepares (MetaSchedule's design spaces take long the first time in a
    process); when that took the whole budget it stops there, without MetaSchedule's own start."""
    import ios_tvm
    from ios_tvm.tuning import tuner

    budget = 1.5
    t0 = time.monotonic()

    def slow_contexts(*args, **kwargs):  # preparing takes past the deadline
        time.sleep(max(0.0, t0 + budget + 0.1 - time.monotonic()))
        return []

    monkeypatch.setattr(tuner, "_contexts", slow_contexts)
    lines = []
    report = ios_tvm.tune_models({"tiny": tiny_branches[0]}, "llvm", tmp_path, time_budget_s=budget,
                                 builder=FakeBuilder(), runner=FakeRunner({}), progress=lines.append)
    assert report.stopped_by == "time" and sum(report.trials.values()) == 0
    assert any(line.startswith("preparing the search of 2 tasks (MetaSchedule's design spaces") for line in lines)
    assert any(line.startswith("the preparation took the whole time budget: nothing tuned") for line in lines)
    assert time.monotonic() - t0 < budget + 1.0, lines


def test_ctrl_c_ends_the_run_cleanly_after_the_batch(tmp_path):
    db = open_database(tmp_path)
    tasks = [TaskInfo("t0", _tiny(0), {"m": 1}, 1e-3, allowance=1000, databases=[db])]
    res, lines = _fake_run(tasks, {0: 1e-3}, num_trials_per_iter=2, interrupt_at=4)
    assert res.stopped_by == "interrupt"
    assert any("interrupted" in line for line in lines)
    assert 6 <= sum(res.trials) <= 8  # the batch under way still counts
    assert len(open_database(tmp_path)) == count_records(tmp_path) == sum(res.trials)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_models_share_a_kernel_and_each_database_stays_whole(tmp_path):
    """Two models launching the same conv: one task, tuned once, its records in both models'
    databases; a third model with that conv, tuned later, gets them copied and tunes nothing."""
    import ios_tvm
    from ios_tvm import models
    from ios_tvm.models import NetBuilder

    def net(name, branches):
        nb = NetBuilder(name, (1, 4, 8, 8))
        with nb.scope() as x:
            outs = [nb.conv(x, 8, 3) for _ in range(branches)]
            nb.output(nb.concat(outs) if branches > 1 else outs[0])
        mod = nb.module()
        return models.bind_params(mod, models.random_params(mod))

    def tune(mods):
        return ios_tvm.tune_models(mods, TARGET, tmp_path, builder=FakeBuilder(), runner=FakeRunner({0: 1e-3}),
                                   search_strategy="replay-trace", cost_model="random", max_trials_per_task=4,
                                   num_trials_per_iter=2, progress=lambda line: None)

    fast_tvmscript_parsing()
    report = tune({"two": net("two", 2), "one": net("one", 1)})
    conv = [t for t in report.tasks if "conv2d" in t]
    assert len(conv) == 1 and len(report.tasks) == 2 and report.models["one"] == conv
    assert report.trials[conv[0]] == 4 and report.weights[conv[0]] > report.weights[report.models["two"][0]] > 0
    dbs = {m: tmp_path / "generic" / m for m in ("one", "two")}
    assert report.databases == {m: str(d) for m, d in dbs.items()}
    n_conv = count_records(dbs["one"])
    assert n_conv == 4 and count_records(dbs["two"]) == report.records_added > n_conv  # + the concat's
    later = tune({"three": net("three", 1)})
    assert later.reused == conv and later.stopped_by == "nothing to tune" and later.records_added == 0
    assert count_records(tmp_path / "generic" / "three") == n_conv
    assert len(open_database(tmp_path / "generic" / "three", create=False)) == n_conv


# -- database files ---------------------------------------------------------------------------------

def _write_db(path, latencies):
    """A JSON database with one task and records of the given seconds (None: failed)."""
    db = open_database(path)
    wl = db.commit_workload(_tiny(0))
    plain, other = tvm.s_tir.Schedule(_tiny(0)), tvm.s_tir.Schedule(_tiny(0))
    other.get_sblock("b")
    for i, s in enumerate(latencies):  # two distinct traces, alternating
        trace = (plain, other)[i % 2].trace
        db.commit_tuning_record(ms.database.TuningRecord(trace, wl, [1e10 if s is None else s], TARGET))
    return db


def test_half_written_lines_are_trimmed_on_open(tmp_path):
    _write_db(tmp_path, [1e-3, 2e-3, 3e-3])
    rec = tmp_path / RECORD_FILE
    whole = rec.read_text()
    rec.write_text(whole + whole.splitlines()[0][:37])  # killed while appending
    with pytest.raises(RuntimeError):  # what MetaSchedule makes of it
        ms.database.JSONDatabase(work_dir=str(tmp_path))
    assert len(open_database(tmp_path)) == 3
    assert rec.read_text() == whole
    (aside,) = tmp_path.glob(f"{RECORD_FILE}.partial-*")  # what was dropped is kept
    assert aside.read_text() == whole.splitlines()[0][:37]
    rec.write_text(whole.rstrip("\n"))  # complete, only the newline missing: kept
    assert len(open_database(tmp_path)) == 3 and rec.read_text() == whole
    wl = tmp_path / WORKLOAD_FILE
    wl.write_text(wl.read_text() + '["123", "PT')
    assert len(open_database(tmp_path)) == 3


def test_prune_keeps_the_best_distinct_records(tmp_path):
    _write_db(tmp_path, [5e-3, 4e-3, None, 3e-3, 2e-3, 1e-3])
    before, after = prune_database(tmp_path, keep=2)
    assert (before, after) == (6, 2)
    db = open_database(tmp_path)
    secs = sorted(float(r.run_secs[0]) for r in db.get_all_tuning_records())
    # two distinct traces, alternating (5, None, 2 ms and 4, 3, 1 ms): the best of each survives
    assert secs == pytest.approx([1e-3, 2e-3])
    lines = (tmp_path / RECORD_FILE).read_text().splitlines()
    assert all(json.loads(line)[0] == 0 for line in lines)
    with pytest.raises(TuningError):
        prune_database(tmp_path, keep=0)


@pytest.mark.parametrize("args, message", [
    (["--time-budget", "0"], "argument --time-budget: must be a positive number of seconds, got 0"),
    (["--time-budget", "nan"], "argument --time-budget: must be a positive number of seconds, got nan"),
    (["--build-timeout", "-5"], "argument --build-timeout: must be a positive number of seconds, got -5"),
    (["--batch-size", "1000000000"], "does not fit in the memory of this machine"),
    (["--keep", "-1"], "argument --keep: must be >= 0, got -1"),
    (["--population", "1"], "argument --population: must be >= 2, got 1"),
    (["--trials-per-task", "0"], "argument --trials-per-task: must be >= 1, got 0"),
])
def test_tune_command_refuses_bad_input(args, message, capsys):
    from ios_tvm import cli

    try:
        code = cli.main(["tune", "squeezenet", "--target", "llvm", "--out", "/nonexistent/x", *args])
    except SystemExit as stop:  # argparse's own checks exit from parse_args
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("ios-tvm: error:")]
    assert message in line and "Traceback" not in err


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error given when no GPU is present")
def test_tuning_for_a_gpu_without_one_is_refused_up_front(tmp_path, capsys):
    """Without the device every candidate would fail to run and the whole budget pass for
    nothing: the local runner's device is checked first, and nothing is written."""
    from ios_tvm import cli

    out = tmp_path / "db"
    code = cli.main(["tune", "squeezenet", "--small", "--target", '{"kind": "cuda", "arch": "sm_90"}',
                     "--time-budget", "60", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ios-tvm: error: tuning for cuda (MetaSchedule measures every candidate "
                                        "on the device) needs the target's device, and CUDA GPU 0 is not present")
    assert "RPCRunner" in err and "--target auto" in err and not out.exists()
