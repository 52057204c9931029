"""Schedules: stages -> groups -> nodes, with the fingerprint of the graph they were made for.

A schedule is plain data (no TVM objects) and round-trips through JSON::

    text = schedule.to_json()
    again = Schedule.from_json(text, graph)   # refuses a schedule made for another model
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import search
from .errors import ScheduleFormatError, ScheduleMismatchError

FORMAT = "ios_tvm.schedule"
FORMAT_VERSION = 2  #: written when a schedule has kernel variants; version 1 (none) otherwise
READ_VERSIONS = (1, 2)
STAGE_KINDS = ("concurrent", "merge")


@dataclass
class Stage:
    """Groups that start together and end at one join.

    ``groups[i]`` is a list of node ids run in order on stream ``i``; ``latency`` is the cost
    model's seconds for the stage (``None`` when unknown).
    """

    groups: list[list[int]]
    kind: str = "concurrent"
    latency: float | None = None

    @property
    def nodes(self) -> list[int]:
        return [v for g in self.groups for v in g]


@dataclass
class Schedule:
    """An IOS schedule of one graph.

    Attributes
    ----------
    stages
        In execution order.
    fingerprint
        ``OpGraph.fingerprint`` of the graph the schedule was made for.
    node_names, kernels
        Per node id, for people (the Relax variable and the kernel it launches).
    edges
        The graph's dependencies, so a schedule can be checked on its own.
    meta
        Free-form provenance: cost model, target, limits, search statistics, baselines.
    variants
        Call sites that run another schedule of their kernel than the one fastest alone
        (:mod:`ios_tvm.variants`): node id -> ``{"kernel", "target", "rank", "run_secs", "trace"}``.
    """

    stages: list[Stage]
    fingerprint: str
    node_names: list[str]
    kernels: list[str]
    edges: list[tuple[int, int]]
    meta: dict[str, Any] = field(default_factory=dict)
    variants: dict[int, dict[str, Any]] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_stages(cls, graph: Any, stages: Sequence[Sequence[Sequence[int]]],
                    latencies: Sequence[float | None] | None = None,
                    meta: dict[str, Any] | None = None, kinds: Sequence[str] | None = None) -> "Schedule":
        """Wrap plain ``stages`` (lists of groups of node ids) of an ``OpGraph``."""
        lats = list(latencies) if latencies is not None else [None] * len(stages)
        kinds = list(kinds) if kinds is not None else ["concurrent"] * len(stages)
        if not len(lats) == len(kinds) == len(stages):
            raise ValueError(f"{len(stages)} stages but {len(lats)} latencies and {len(kinds)} kinds")
        return cls(
            stages=[Stage([list(g) for g in st], k, lat) for st, lat, k in zip(stages, lats, kinds)],
            fingerprint=graph.fingerprint,
            node_names=[n.name for n in graph.nodes],
            kernels=[n.kernel for n in graph.nodes],
            edges=[tuple(e) for e in graph.edges],
            meta=dict(meta or {}),
        )

    @classmethod
    def sequential(cls, graph: Any, cost_model: Any = None) -> "Schedule":
        """One kernel per stage in binding order: what TVM runs without ios_tvm."""
        stages = [[[v]] for v in range(len(graph.nodes))]
        return cls._costed(graph, stages, cost_model, {"strategy": "sequential"})

    @classmethod
    def greedy(cls, graph: Any, cost_model: Any = None, max_num_groups: int | None = None) -> "Schedule":
        """The paper's greedy baseline: every ready kernel at once, one stream each."""
        stages = search.greedy(len(graph.nodes), graph.edges, max_num_groups)
        return cls._costed(graph, stages, cost_model, {"strategy": "greedy", "max_num_groups": max_num_groups})

    @classmethod
    def _costed(cls, graph: Any, stages: list, cost_model: Any, meta: dict) -> "Schedule":
        lats = None
        if cost_model is not None:
            lats = [cost_model.stage_latency(graph, tuple(tuple(g) for g in st)) for st in stages]
            meta = {**meta, "cost_model": cost_model.name}
        return cls.from_stages(graph, stages, lats, meta)

    # -- queries -----------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def latency(self) -> float | None:
        """Sum of the stage latencies, or ``None`` if any is unknown."""
        if any(s.latency is None for s in self.stages):
            return None
        return float(sum(s.latency for s in self.stages))  # type: ignore[misc]

    @property
    def merges(self) -> list[list[int]]:
        """Node sets of the merge stages."""
        return [s.nodes for s in self.stages if s.kind == "merge"]

    @property
    def max_streams(self) -> int:
        return max((len(s.groups) for s in self.stages), default=0)

    def as_lists(self) -> list[list[list[int]]]:
        return [[list(g) for g in s.groups] for s in self.stages]

    # -- checks ------------------------------------------------------------------------------
    def validate(self, graph: Any = None, max_group_size: int | None = None,
                 max_num_groups: int | None = None) -> None:
        """Raise :class:`ScheduleMismatchError` unless this is a valid schedule.

        Valid: every node exactly once; a dependency either crosses to a later stage or stays in
        one group in order; known stage kinds; within the limits when given. With ``graph``,
        also that the schedule was made for it (same fingerprint and edges).
        """
        if graph is not None:
            self.check_graph(graph)
        edge_set = set(map(tuple, self.edges))
        for i, st in enumerate(self.stages):
            if st.kind not in STAGE_KINDS:
                raise ScheduleMismatchError(f"stage {i} has unknown kind {st.kind!r} (known: {STAGE_KINDS})")
            if st.kind == "merge":
                nodes = st.nodes
                if len(st.groups) != 1 or len(nodes) < 2:
                    raise ScheduleMismatchError(f"merge stage {i} must be one group of >= 2 kernels")
                if any((u, v) in edge_set for u in nodes for v in nodes):
                    raise ScheduleMismatchError(f"merge stage {i} merges kernels that depend on each other")
                if graph is not None and getattr(graph, "merges", None) is not None:
                    from .merge import mergeable

                    units = graph.merges.units
                    if not all(v in units for v in nodes) or not mergeable([units[v] for v in nodes]):
                        raise ScheduleMismatchError(f"merge stage {i}: kernels {nodes} cannot be merged")
        try:
            search.check_stages(self.num_nodes, self.edges, self.as_lists(), None, None)
            for i, st in enumerate(self.stages):
                if st.kind != "concurrent":
                    continue
                if max_num_groups is not None and len(st.groups) > max_num_groups:
                    raise ValueError(f"stage {i} has {len(st.groups)} groups, more than max_num_groups={max_num_groups}")
                if max_group_size is not None and any(len(g) > max_group_size for g in st.groups):
                    raise ValueError(f"stage {i} has a group of more than max_group_size={max_group_size} nodes")
        except ValueError as err:
            raise ScheduleMismatchError(f"invalid schedule: {err}") from None
        merged = {v for nodes in self.merges for v in nodes}
        for v, var in self.variants.items():
            if not (isinstance(v, int) and 0 <= v < self.num_nodes):
                raise ScheduleMismatchError(f"kernel variant for node {v!r}, which the schedule does not have")
            if var.get("kernel") != self.kernels[v]:
                raise ScheduleMismatchError(f"kernel variant for node {v} names kernel {var.get('kernel')!r}, "
                                            f"but node {v} runs {self.kernels[v]}")
            if v in merged:
                raise ScheduleMismatchError(f"node {v} is merged into another kernel and cannot run a variant")
            if not isinstance(var.get("trace"), list) or not isinstance(var.get("rank"), int):
                raise ScheduleMismatchError(f"kernel variant for node {v} has no trace (list) or rank (int)")

    def check_graph(self, graph: Any) -> None:
        """Raise :class:`ScheduleMismatchError` if the schedule was made for another graph."""
        if graph.fingerprint != self.fingerprint:
            raise ScheduleMismatchError(
                f"this schedule was made for another model (schedule fingerprint {self.fingerprint}, "
                f"model fingerprint {graph.fingerprint}; the schedule has {self.num_nodes} kernels, "
                f"the model {len(graph.nodes)}). Re-run ios_tvm.optimize for this model, with the "
                "same target and batch size it will run with")
        if sorted(map(tuple, graph.edges)) != sorted(map(tuple, self.edges)):
            raise ScheduleMismatchError("the schedule's edges differ from the model's although the "
                                        "fingerprints match: the schedule file was edited")

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": FORMAT,
            "version": FORMAT_VERSION if self.variants else 1,
            "fingerprint": self.fingerprint,
            "nodes": [{"name": n, "kernel": k} for n, k in zip(self.node_names, self.kernels)],
            "edges": [list(e) for e in self.edges],
            "stages": [{"kind": s.kind, "groups": s.groups, "latency_s": s.latency} for s in self.stages],
            "meta": self.meta,
        }
        if self.variants:
            out["variants"] = {str(v): var for v, var in sorted(self.variants.items())}
        return out

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, graph: Any = None) -> "Schedule":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ScheduleFormatError(f"not an ios_tvm schedule (expected \"format\": \"{FORMAT}\")")
        if data.get("version") not in READ_VERSIONS:
            raise ScheduleFormatError(
                f"schedule format version {data.get('version')!r} is not supported by this ios_tvm "
                f"(it reads versions {READ_VERSIONS}): a newer ios_tvm wrote it (upgrade ios_tvm) or it is "
                "corrupt (re-create the schedule with ios_tvm.optimize)")
        if data.get("variants") and data.get("version") < 2:
            raise ScheduleFormatError("corrupt schedule: kernel variants in a version 1 file (variants need version 2)")
        try:
            sched = cls(
                stages=[Stage([[int(v) for v in g] for g in s["groups"]], str(s.get("kind", "concurrent")),
                              None if s.get("latency_s") is None else float(s["latency_s"]))
                        for s in data["stages"]],
                fingerprint=str(data["fingerprint"]),
                node_names=[str(n["name"]) for n in data["nodes"]],
                kernels=[str(n["kernel"]) for n in data["nodes"]],
                edges=[(int(u), int(v)) for u, v in data["edges"]],
                meta=dict(data.get("meta") or {}),
                variants={int(v): dict(var) for v, var in (data.get("variants") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ScheduleFormatError(f"corrupt schedule: {type(err).__name__}: {err}") from None
        sched.validate(graph)
        return sched

    @classmethod
    def from_json(cls, text: str, graph: Any = None) -> "Schedule":
        """Parse and validate; with ``graph``, refuse a schedule made for another model."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ScheduleFormatError(f"corrupt schedule file: not JSON ({err})") from None
        return cls.from_dict(data, graph)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, graph: Any = None) -> "Schedule":
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"no schedule file at {path}") from None
        return cls.from_json(text, graph)

    # -- display -----------------------------------------------------------------------------
    def summary(self) -> str:
        lat = self.latency
        parts = [f"{len(self.stages)} stages over {self.num_nodes} kernels",
                 f"up to {self.max_streams} concurrent streams"]
        if lat is not None:
            parts.append(f"latency {lat * 1e3:.4f} ms ({self.meta.get('cost_model', 'cost model')})")
        return ", ".join(parts)

    def to_text(self, max_stages: int | None = None) -> str:
        """A terminal view: one line per stage, groups as ``[kernel -> kernel] | [...]``."""
        lines = [self.summary()]
        shown = self.stages if max_stages is None else self.stages[:max_stages]
        width = len(str(len(self.stages)))
        for i, st in enumerate(shown):
            lat = "" if st.latency is None else f"{st.latency * 1e6:9.1f} us  "
            if st.kind == "merge":
                groups = "MERGE{" + " + ".join(self.kernels[v] for v in st.nodes) + "}"
            else:
                groups = " | ".join("[" + " -> ".join(self.kernels[v] for v in g) + "]" for g in st.groups)
            if any(v in self.variants for v in st.nodes):
                groups += "   (variants: " + ", ".join(
                    f"{self.kernels[v]}#{self.variants[v]['rank']}" for v in st.nodes if v in self.variants) + ")"
            lines.append(f"  stage {i:>{width}}  {lat}{groups}")
        if max_stages is not None and len(self.stages) > max_stages:
            lines.append(f"  ... {len(self.stages) - max_stages} more stages")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text(max_stages=40)
