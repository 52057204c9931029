"""Never slower than the simple schedules (ios_tvm.guard): the fastest candidate end to end wins."""

from __future__ import annotations

import numpy as np
import pytest

import ios_tvm
from ios_tvm import models
from ios_tvm.cost import AnalyticCostModel
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.driver.guard import EndToEndConfig, Timing, choose, keep_fastest, pick_fastest, same_within_noise

CUDA = {"kind": "cuda", "arch": "sm_90"}


@pytest.fixture(scope="module")
def searched():
    mod = models.get("googlenet", small=True)
    graph = ios_tvm.extract_graph(mod, "llvm")
    model = AnalyticCostModel.for_target(CUDA)
    return graph, model, ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=model, end_to_end=False)


@pytest.mark.parametrize("fastest", ["sequential", "greedy", "ios"])
def test_the_fastest_of_three_is_returned(searched, fastest):
    graph, model, ios = searched
    fake = {"sequential": 3.0, "greedy": 2.0, "ios": 1.0}
    fake[fastest] = 0.5
    asked = []

    def time_of(label, schedule):
        asked.append(label)
        return fake[label]

    out = keep_fastest(ios, graph, model, 8, time_of)
    assert asked == ["sequential", "greedy", "ios"]
    e2e = out.meta["end_to_end"]
    assert e2e["chosen"] == fastest == out.meta["strategy"] and e2e["times_s"] == fake
    want = {"sequential": ios_tvm.Schedule.sequential(graph), "greedy": ios_tvm.Schedule.greedy(graph, None, 8),
            "ios": ios}[fastest]
    assert out.as_lists() == want.as_lists()
    assert e2e["ios_slower_by"] == pytest.approx(1.0 / 0.5 - 1 if fastest != "ios" else 0.0)
    assert out.meta["stats"] == ios.meta["stats"]  # the search's record stays


def test_ties_go_to_the_simpler_schedule():
    assert pick_fastest({"sequential": 0, "greedy": 1, "ios": 2}, lambda label, c: 1.0)[0] == "sequential"
    assert pick_fastest({"sequential": 0, "ios": 2}, lambda label, c: {"sequential": 2.0, "ios": 1.0}[label])[0] == "ios"
    with pytest.raises(ValueError, match="number"):
        EndToEndConfig(number=0)


def test_differences_inside_the_noise_are_ties():
    """Two runs of one search whose medians swap inside the spread of their samples keep the same
    (simplest) schedule; a difference beyond the spread wins."""
    runs = [{"sequential": [1.00, 1.10, 1.05], "greedy": [1.04, 1.09, 1.01], "ios": [1.02, 0.98, 1.08]},
            {"sequential": [1.06, 1.01, 1.09], "greedy": [1.10, 1.02, 1.00], "ios": [0.99, 1.03, 1.00]}]
    kept = [choose(dict.fromkeys(run), lambda label, c, run=run: run[label])[0] for run in runs]
    assert kept == ["sequential", "sequential"]
    kept, timings = choose({"sequential": 0, "greedy": 1, "ios": 2},
                           lambda label, c: {"sequential": [1.0, 1.1, 1.05], "greedy": [1.0, 1.02, 1.01],
                                             "ios": [0.80, 0.82, 0.81]}[label])
    assert kept == "ios" and timings["ios"].median == pytest.approx(0.81)
    assert timings["sequential"].spread == pytest.approx(0.1) and timings["ios"].relative_spread == pytest.approx(
        0.02 / 0.81)
    # greedy is beyond the noise of sequential, IOS within greedy's: greedy
    assert choose({"sequential": 0, "greedy": 1, "ios": 2},
                  lambda label, c: {"sequential": [2.0, 2.01], "greedy": [1.0, 1.2], "ios": [0.95, 0.96]}[label])[0] \
        == "greedy"
    assert not same_within_noise(Timing.of(1.0), Timing.of(1.01)) and same_within_noise(Timing.of([1, 2]), Timing.of(1.5))


def test_a_tie_keeps_the_simpler_schedule_and_says_so(searched):
    graph, model, ios = searched
    samples = {"sequential": [3.0e-3, 3.3e-3, 3.1e-3], "greedy": [3.4e-3, 3.5e-3, 3.45e-3], "ios": [2.9e-3, 3.2e-3, 3.0e-3]}
    out = keep_fastest(ios, graph, model, 8, lambda label, c: samples[label])
    e2e = out.meta["end_to_end"]
    assert e2e["chosen"] == out.meta["strategy"] == "sequential" and e2e["within_noise"]
    assert e2e["ios_slower_by"] == pytest.approx(3.0 / 3.1 - 1) and e2e["ios_slower_by"] < 0 and e2e["samples"] == 3
    assert e2e["spread_s"]["sequential"] == pytest.approx(0.3e-3)
    assert out.as_lists() == ios_tvm.Schedule.sequential(graph).as_lists()
    from ios_tvm.cli.report import search_report as _report

    out.meta["model"] = {"name": "googlenet"}
    text = _report(out, 1.0)
    assert "median of 3, ± the spread of the samples" in text and "± 9.7%" in text
    assert "IOS ran 3.2% faster than sequential, within the measurement noise" in text
    assert out.summary().startswith("the sequential schedule (kept instead of the IOS schedule by the end-to-end "
                                    "check)")


def test_measured_search_ends_with_end_to_end_times(tmp_path, monkeypatch):
    """On the device (here the CPU), a measured search times the three candidates end to end by
    default, checks their outputs against sequential, and returns the fastest."""
    from ios_tvm.driver.guard import read_predictions

    monkeypatch.setenv("IOS_TVM_CACHE_DIR", str(tmp_path))
    mod = models.get("squeezenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    cm = MeasuredCostModel("llvm", MeasureConfig(warmup=1, repeat=2, cache_dir=tmp_path, progress=False))
    sched = ios_tvm.optimize(mod, "llvm", cost_model=cm, end_to_end=EndToEndConfig(number=1, repeat=2))
    e2e = sched.meta["end_to_end"]
    assert set(e2e["times_s"]) == {"sequential", "greedy", "ios"} and min(e2e["times_s"].values()) > 0
    # the simplest candidate within the noise (the larger spread of the two) of the fastest one
    times, spread = e2e["times_s"], e2e["spread_s"]
    fastest = min(times, key=times.get)
    near = [label for label in ("sequential", "greedy", "ios")
            if times[label] - times[fastest] <= max(spread[label], spread[fastest])]
    assert e2e["chosen"] == near[0] and e2e["samples"] == 2
    assert e2e["ios_slower_by"] == pytest.approx(times["ios"] / times[e2e["chosen"]] - 1)
    base = sched.meta["baselines_s"]  # predicted by the same cost model as the search's
    assert e2e["predicted_s"]["sequential"] == pytest.approx(base["sequential"])
    assert e2e["predicted_s"]["greedy"] == pytest.approx(base["greedy"]) and e2e["predicted_s"]["ios"] > 0
    (record,) = read_predictions(ios_tvm.extract_graph(mod, "llvm").fingerprint)  # kept per model
    assert record["measured_s"] == e2e["times_s"] and record["predicted_s"] == e2e["predicted_s"]
    assert record["measure"]["launch"] == "kernels" and record["measure"]["cache_state"] == "hot"
    analytic = ios_tvm.optimize(mod, "llvm")  # predicted only: no device work by default
    assert "end_to_end" not in analytic.meta and np.isfinite(analytic.latency)


def test_the_cli_report_shows_measured_against_predicted(searched):
    from ios_tvm.cli.report import search_report as _report

    graph, model, ios = searched
    times = {"sequential": 3e-3, "greedy": 2e-3, "ios": 2.5e-3}
    out = keep_fastest(ios, graph, model, 8, lambda label, c: times[label])
    out.meta["model"] = {"name": "googlenet"}
    text = _report(out, 1.0)
    assert "measured end to end (kernel launches, median of 1," in text
    rows = {line.split()[0]: line for line in text.split("end to end")[-1].splitlines()[1:4]}
    assert "2.0000 ms" in rows["greedy"] and rows["greedy"].endswith("<- kept") and "kept" not in rows["ios"]
    assert f"IOS        {out.meta['end_to_end']['predicted_s']['ios'] * 1e3:9.4f} ms" in text  # the search's own
    assert "IOS ran 25.0% slower than greedy" in text
