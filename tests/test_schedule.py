"""Schedule: validation, JSON round trip, refusing foreign or corrupt files."""

from __future__ import annotations

import json

import pytest

import ios_tvm
from ios_tvm.core.schedule import Schedule
from ios_tvm.errors import ScheduleFormatError, ScheduleMismatchError

CUDA = {"kind": "cuda", "arch": "sm_90"}


@pytest.fixture
def graph(small_graphs):
    return small_graphs["googlenet"]


@pytest.fixture
def sched(graph):
    return ios_tvm.optimize(graph.source, CUDA, graph=graph)


def test_json_round_trip(sched, graph):
    again = Schedule.from_json(sched.to_json(), graph)
    assert again.to_dict() == sched.to_dict()
    assert again.latency == pytest.approx(sched.latency)
    assert again.as_lists() == sched.as_lists()


def test_save_and_load_are_atomic(sched, graph, tmp_path):
    path = sched.save(tmp_path / "sub" / "s.json")
    assert Schedule.load(path, graph).as_lists() == sched.as_lists()
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]
    with pytest.raises(FileNotFoundError, match="no schedule file"):
        Schedule.load(tmp_path / "missing.json")


def test_baselines_validate(graph):
    for s in (Schedule.sequential(graph), Schedule.greedy(graph), Schedule.greedy(graph, max_num_groups=2)):
        s.validate(graph)
    assert Schedule.sequential(graph).latency is None
    assert Schedule.greedy(graph, max_num_groups=2).max_streams <= 2


def _edited(sched, fn):
    data = json.loads(sched.to_json())
    fn(data)
    return json.dumps(data)


def test_invalid_schedules_are_refused(sched, graph):
    u, v = graph.edges[0]

    def swap(data):  # put a consumer before its producer
        stages = data["stages"]
        su = next(i for i, s in enumerate(stages) if any(u in g for g in s["groups"]))
        sv = next(i for i, s in enumerate(stages) if any(v in g for g in s["groups"]))
        stages[su], stages[sv] = stages[sv], stages[su]

    with pytest.raises(ScheduleMismatchError, match="runs before its input|concurrently"):
        Schedule.from_json(_edited(sched, swap), graph)
    with pytest.raises(ScheduleMismatchError, match="no stage"):
        Schedule.from_json(_edited(sched, lambda d: d["stages"].pop()), graph)
    with pytest.raises(ScheduleMismatchError, match="unknown kind"):
        Schedule.from_json(_edited(sched, lambda d: d["stages"][0].update(kind="teleport")), graph)
    with pytest.raises(ScheduleMismatchError, match="edited"):
        Schedule.from_json(_edited(sched, lambda d: d["edges"].pop()), graph)
    with pytest.raises(ScheduleMismatchError, match="max_num_groups"):
        sched.validate(graph, max_num_groups=1)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not JSON"),
    ("[]", "not an ios_tvm schedule"),
    ('{"format": "ios_tvm.schedule", "version": 99}', "version 99"),
    ('{"format": "ios_tvm.schedule", "version": 1, "stages": 3}', "corrupt"),
])
def test_corrupt_files_are_refused(text, match):
    with pytest.raises(ScheduleFormatError, match=match):
        Schedule.from_json(text)


def test_text_view(sched):
    text = sched.to_text(max_stages=3)
    assert text.splitlines()[0] == sched.summary()
    assert "stage 0" in text.replace("  ", " ") and "more stages" in text
    assert " | " in sched.to_text()  # some stage runs concurrent groups
