"""Schedule files under random edits: each edited file is refused with ios_tvm's typed error or
loads as a schedule that is valid for the model, never another exception or a wrong schedule."""

from __future__ import annotations

import collections
import copy
import json
import math
import random
from typing import Any

import pytest

import ios_tvm
from ios_tvm import models
from ios_tvm.core.schedule import STAGE_KINDS, Schedule
from ios_tvm.errors import ScheduleFormatError, ScheduleMismatchError
from ios_tvm.ir.merge_plan import mergeable, node_merges

CUDA = {"kind": "cuda", "arch": "sm_90"}
EDITS = 300


@pytest.fixture(scope="module")
def made():
    """GoogLeNet (small, weights bound) for a CUDA target: concurrent stages of up to 4 groups and
    merge stages; its graph knows the merge candidates, so merges are checked too."""
    mod = models.get("googlenet", small=True)
    mod = models.bind_params(mod, models.random_params(mod))
    graph = ios_tvm.extract_graph(mod, CUDA)
    graph.merges = node_merges(mod, graph)
    sched = ios_tvm.optimize(mod, CUDA, graph=graph)
    assert sched.merges and sched.max_streams >= 3, "the fuzzed file should have merges and wide stages"
    return graph, sched.to_dict()


# -- edits ---------------------------------------------------------------------------------------
def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into nested dicts and lists (the root excluded)."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append(path + (key,))
        out.extend(_paths(child, path + (key,)))
    return out


def _parent(data: Any, path: tuple) -> tuple[Any, Any]:
    for key in path[:-1]:
        data = data[key]
    return data, path[-1]


def _other_value(rng: random.Random, value: Any) -> Any:
    """A value of another type, or a nearby or extreme number."""
    choices: list[Any] = ["", "x", "3", None, True, False, [], {}, [1, 2], {"a": 1}, -1, 0, 1, 10**9, 0.5,
                          -0.001, 1e300, float("nan"), float("inf")]
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        choices += [value + 1, value - 1, -value, value * 1000, float(value), str(value)]
    elif isinstance(value, float):
        choices += [-value, value * 1e6, int(value), str(value)]
    choices = [c for c in choices if not (type(c) is type(value) and c == value)]
    return rng.choice(choices)


def _at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def _edit(rng: random.Random, data: dict) -> str:
    """One random edit of ``data`` (in place); returns what it did (``"none"``: an earlier edit
    left nothing this kind of edit applies to)."""
    try:
        return _edit_once(rng, data)
    except (KeyError, TypeError, IndexError, AttributeError):
        return "none"


def _edit_once(rng: random.Random, data: dict) -> str:
    paths = _paths(data)
    kind = rng.choice(["number", "delete", "retype", "duplicate", "swap", "move", "add"])
    if kind == "number":
        numeric = [p for p in paths if isinstance(_at(data, p), (int, float)) and not isinstance(_at(data, p), bool)]
        parent, key = _parent(data, rng.choice(numeric))
        parent[key] = _other_value(rng, parent[key]) if rng.random() < 0.3 else rng.choice(
            [parent[key] + 1, parent[key] - 1, -parent[key], 0, parent[key] * 2])
    elif kind == "delete":
        parent, key = _parent(data, rng.choice(paths))
        del parent[key]
    elif kind == "retype":
        parent, key = _parent(data, rng.choice(paths))
        parent[key] = _other_value(rng, parent[key])
    elif kind == "duplicate":  # a list element twice: a node, a node id, a group, a stage, an edge
        items = _at(data, rng.choice([p for p in paths if isinstance(_at(data, p), list) and _at(data, p)]))
        items.insert(rng.randrange(len(items) + 1), copy.deepcopy(rng.choice(items)))
    elif kind == "swap":  # two elements of one list: stages, groups, node ids, nodes
        items = _at(data, rng.choice([p for p in paths if isinstance(_at(data, p), list) and len(_at(data, p)) > 1]))
        i, j = rng.sample(range(len(items)), 2)
        items[i], items[j] = items[j], items[i]
    elif kind == "move":  # a node id from one group to another (possibly of another stage)
        groups = [g for s in data["stages"] for g in s["groups"]]
        src = rng.choice([g for g in groups if g])
        node = src.pop(rng.randrange(len(src)))
        dst = rng.choice(groups)
        dst.insert(rng.randrange(len(dst) + 1), node)
    else:  # a key nobody reads (loads), or a known key where it does not belong
        target = _at(data, rng.choice([()] + [p for p in paths if isinstance(_at(data, p), dict)]))
        target[rng.choice(["extra", "variants", "kind", "latency_s", "target"])] = _other_value(rng, 1)
    return kind


# -- an independent check of what loaded -----------------------------------------------------
def _check_valid(sched: Schedule, graph: Any) -> None:
    """The schedule runs every kernel of ``graph`` once, respects every dependency, and its
    merge stages can be merged: checked here without Schedule.validate."""
    assert sched.fingerprint == graph.fingerprint
    assert sched.kernels == [n.kernel for n in graph.nodes]
    where: dict[int, tuple[int, int, int]] = {}
    for si, st in enumerate(sched.stages):
        assert st.kind in STAGE_KINDS and st.groups and all(st.groups)
        assert st.latency is None or (math.isfinite(st.latency) and st.latency >= 0)
        for gi, group in enumerate(st.groups):
            for k, v in enumerate(group):
                assert type(v) is int and 0 <= v < len(graph.nodes) and v not in where
                where[v] = (si, gi, k)
        if st.kind == "merge":
            nodes = st.nodes
            assert len(st.groups) == 1 and len(nodes) >= 2
            assert mergeable([graph.merges.units[v] for v in nodes])
    assert len(where) == len(graph.nodes)
    for u, v in graph.edges:
        su, gu, ku = where[u]
        sv, gv, kv = where[v]
        assert su < sv or (su == sv and gu == gv and ku < kv and sched.stages[su].kind == "concurrent")
    assert sched.latency is None or math.isfinite(sched.latency)


def test_random_edits_are_refused_or_valid(made):
    graph, original = made
    rng = random.Random(20261127)
    outcomes: dict[str, int] = {"refused": 0, "loaded": 0}
    kinds: collections.Counter = collections.Counter()
    for i in range(EDITS):
        data = copy.deepcopy(original)
        done = [_edit(rng, data) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        kinds.update(done)
        text = json.dumps(data)
        if rng.random() < 0.05:  # a truncated file
            text = text[:rng.randrange(len(text))]
        try:
            sched = Schedule.from_json(text, graph, target=CUDA)
        except (ScheduleFormatError, ScheduleMismatchError) as err:
            assert str(err) and "\n" not in str(err), (i, done, err)
            outcomes["refused"] += 1
            continue
        _check_valid(sched, graph)
        sched.to_text()  # what `ios-tvm show` prints must not fail either
        again = Schedule.from_json(sched.to_json(), graph, target=CUDA)
        assert again.as_lists() == sched.as_lists()
        outcomes["loaded"] += 1
    # both outcomes occur: the edits are neither all harmless nor all fatal
    assert outcomes["refused"] > EDITS // 3 and outcomes["loaded"] > 10, outcomes
    assert all(kinds[k] > 20 for k in ("number", "delete", "retype", "duplicate", "swap", "move", "add")), kinds


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["stages"][0].update(latency_s=-0.9851), "latency_s of stage 0 is -0.9851"),
    (lambda d: d["stages"][0].update(latency_s="1e-3"), "latency_s of stage 0 should be a number"),
    (lambda d: d["stages"][0]["groups"][0].__setitem__(0, 1.0), "a node id should be an int"),
    (lambda d: d["stages"][0]["groups"][0].__setitem__(0, True), "a node id should be an int"),
    (lambda d: d.update(version=True), "version True"),
    (lambda d: d.update(meta=[["target", "llvm"]]), "meta"),
    (lambda d: d["meta"].update(target=5), "names no target kind"),
    (lambda d: d["edges"].append([1, 2, 3]), "an edge should be"),
])
def test_corrupt_fields_are_named(made, edit, match):
    graph, original = made
    data = copy.deepcopy(original)
    edit(data)
    with pytest.raises(ScheduleFormatError, match=match):
        Schedule.from_json(json.dumps(data), graph)


def test_nan_and_edited_kernels_are_refused(made):
    graph, original = made
    with pytest.raises(ScheduleFormatError, match="NaN"):
        Schedule.from_json(json.dumps(original).replace('"latency_s": ' + json.dumps(original["stages"][0]["latency_s"]),
                                                        '"latency_s": NaN', 1), graph)
    data = copy.deepcopy(original)
    data["nodes"][3]["kernel"] = "fused_something_else"
    with pytest.raises(ScheduleMismatchError, match="kernels differ"):
        Schedule.from_json(json.dumps(data), graph)
