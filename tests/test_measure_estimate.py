"""A measured search says how long it will take before it starts, warns when that is long, and
keeps what it measured when it is interrupted (the next search resumes from the cache)."""

from __future__ import annotations

import logging

import pytest

import ios_tvm
from ios_tvm.cost import measure
from ios_tvm.cost.analytic import AnalyticCostModel
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel


class FakeTimer:
    """Stands in for the device: every stage takes 10 us; Ctrl-C arrives at stage ``stop``."""

    workers = 1
    device_name = "cpu"

    def __init__(self, stop: int | None = None) -> None:
        self.stop = stop
        self.timed = 0

    def load(self, executable, nodes) -> None:
        pass

    def flush_before_samples(self, nbytes: int) -> None:
        pass

    def time(self, groups, worker=0, replace=None) -> list[float]:
        if self.stop is not None and self.timed == self.stop:
            raise KeyboardInterrupt
        self.timed += 1
        return [1e-5] * 3


def _model(cache_dir, timer: FakeTimer) -> MeasuredCostModel:
    cm = MeasuredCostModel("llvm", MeasureConfig(warmup=1, repeat=3, cache_dir=cache_dir, progress=False), database=None)
    cm.timer = timer
    cm.build_model = lambda mod: None  # nothing to build: the fake timer runs no kernels
    return cm


def test_estimate_before_measuring_and_resume_after_ctrl_c(small_graphs, tmp_path, caplog, monkeypatch):
    graph = small_graphs["googlenet"]
    caplog.set_level(logging.INFO, logger="ios_tvm")
    first = FakeTimer(stop=40)
    with pytest.raises(KeyboardInterrupt):
        ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=_model(tmp_path, first),
                         end_to_end=False)
    announced = [r.getMessage() for r in caplog.records if "distinct candidate stages" in r.getMessage()]
    assert len(announced) == 1 and "(0 more are in the stage cache; each runs 4 times) takes about" in announced[0]
    assert first.timed == 40
    caplog.clear()
    second = FakeTimer()
    sched = ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=_model(tmp_path, second),
                             end_to_end=False)
    (message,) = [r.getMessage() for r in caplog.records if "distinct candidate stages" in r.getMessage()]
    assert f"measuring {second.timed} distinct candidate stages (40 more are in the stage cache" in message
    assert sched.meta["cost_model"] == "measure" and sched.latency > 0
    # a long measurement is a warning saying what to do
    caplog.clear()
    monkeypatch.setattr(measure, "LONG_MEASUREMENT_S", 0.0)
    ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=_model(tmp_path / "fresh", FakeTimer()),
                     end_to_end=False)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "CLI --cost-model analytic" in warning.getMessage() and "Ctrl-C keeps what was measured" in warning.getMessage()


def test_estimate_is_runs_times_the_analytic_latency(small_graphs, tmp_path):
    graph = small_graphs["squeezenet"]
    cm = _model(tmp_path, FakeTimer())
    stages = [((0,),), ((1,), (2,)), ((3, 4),)]
    analytic = AnalyticCostModel.for_target("llvm")
    want = sum(4 * analytic.stage_latency(graph, s) + measure.STAGE_OVERHEAD_S for s in stages)
    assert cm.estimate_seconds(graph, stages) == pytest.approx(want)
    assert [measure.format_duration(s) for s in (12, 600, 12960)] == ["12 s", "10 min", "3 h 36 min"]
