"""Schedules: stages -> groups -> nodes, with the fingerprint of the graph they were made for.

A schedule is plain data (no TVM objects) and round-trips through JSON::

    text = schedule.to_json()
    again = Schedule.from_json(text, graph)   # refuses a schedule made for another model
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import (
    InputFileError,
    InvalidArgumentError,
    MissingFileError,
    OutputFileError,
    ScheduleFormatError,
    ScheduleMismatchError,
)
from . import search
from .files import write_atomically
from .schedule_format import (
    FORMAT,
    FORMAT_VERSION,
    RECREATE,
    STAGE_KINDS,
    Stage,
    parse_json,
    read_fields,
    target_kind_arch,
)

logger = logging.getLogger("ios_tvm")

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
        (:mod:`ios_tvm.transform.kernel_schedules`): node id -> ``{"kernel", "target", "rank", "run_secs", "trace"}``.
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
    def measured(self) -> bool:
        """Whether the stage latencies were measured on a device (the search recorded how, in
        ``meta["measure"]``) rather than predicted by a model."""
        return "measure" in self.meta

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
                merges = getattr(graph, "merges", None)  # the graph's merge candidates: can_merge(nodes)
                if merges is not None and not merges.can_merge(nodes):
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
        """Raise :class:`ScheduleMismatchError` if the schedule was made for another graph (or its
        kernels and edges were edited since)."""
        if graph.fingerprint != self.fingerprint:
            raise ScheduleMismatchError(
                f"this schedule was made for another model (schedule fingerprint {self.fingerprint}, "
                f"model fingerprint {graph.fingerprint}; the schedule has {self.num_nodes} kernels, "
                f"the model {len(graph.nodes)}): {RECREATE}")
        if [(n.name, n.kernel) for n in graph.nodes] != list(zip(self.node_names, self.kernels)) \
                or len(self.node_names) != len(self.kernels):
            raise ScheduleMismatchError("the schedule's kernels differ from the model's although the "
                                        f"fingerprints match: the schedule file was edited; {RECREATE}")
        if sorted(map(tuple, graph.edges)) != sorted(map(tuple, self.edges)):
            raise ScheduleMismatchError("the schedule's edges differ from the model's although the "
                                        f"fingerprints match: the schedule file was edited; {RECREATE}")

    def check_target(self, target: Any) -> None:
        """Refuse to run this schedule for ``target`` when it was made for another kind of target.

        The stages were chosen with the costs of the target the schedule was made for
        (``meta["target"]``): a schedule made for a CUDA GPU says nothing about a CPU, and the
        reverse. Another CUDA architecture is allowed with a warning (the stages still run, but
        were costed on other hardware). Schedules that record no target (older files) pass.

        Raises
        ------
        ScheduleMismatchError
            The target kinds differ.
        """
        made_for = self.meta.get("target")
        if made_for is None:
            return
        kind, arch = target_kind_arch(made_for)
        want_kind, want_arch = target_kind_arch(target)
        if kind != want_kind:
            raise ScheduleMismatchError(
                f"this schedule was made for a {kind} target{f' ({arch})' if arch else ''} and this build is "
                f"for {want_kind}: its stages and predicted latencies are for other hardware; {RECREATE}")
        if arch and want_arch and arch != want_arch:
            logger.warning("ios_tvm: this schedule was made for %s %s and is used for %s %s; it runs, but its "
                           "stages were costed on other hardware (re-create it for %s for the best stages)",
                           kind, arch, want_kind, want_arch, want_arch)

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
    def from_dict(cls, data: Any, graph: Any = None, target: Any = None) -> "Schedule":
        """A schedule from its :meth:`to_dict` form, checked strictly: every field of the right
        type, node ids integers, latencies finite and >= 0, then :meth:`validate` (against
        ``graph`` when given) and :meth:`check_target` (when ``target`` is given).

        Raises
        ------
        ScheduleFormatError
            Not a schedule, a format version this ios_tvm cannot read, or a corrupt field.
        ScheduleMismatchError
            Not a valid schedule (of ``graph``), or made for another kind of ``target``.
        """
        sched = cls(**read_fields(data))
        if "target" in sched.meta:
            target_kind_arch(sched.meta["target"])  # ScheduleFormatError unless it names a target kind
        sched.validate(graph)
        if target is not None:
            sched.check_target(target)
        return sched

    @classmethod
    def from_json(cls, text: str, graph: Any = None, target: Any = None) -> "Schedule":
        """Parse and validate; with ``graph``, refuse a schedule made for another model; with
        ``target``, one made for another kind of target (see :meth:`from_dict`)."""
        data = parse_json(text)
        return cls.from_dict(data, graph, target)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temporary file renamed over ``path``; missing parent directories
        are created), with the permissions the umask gives (a file replaced keeps its own).

        Raises
        ------
        InvalidArgumentError
            ``path`` is a directory.
        OutputFileError
            ``path`` cannot be written (a read-only folder or file system, an immutable file);
            a file already there is left as it was.
        """
        path = Path(path)
        if path.is_dir():
            raise InvalidArgumentError(f"{path} is a directory; give the schedule a file name, e.g. "
                                       f"{path / 'model.schedule.json'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputFileError(f"cannot create the folder {path.parent} for {path.name} "
                                  f"({err.strerror or err}): write the schedule elsewhere") from None
        text = self.to_json()
        return write_atomically(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: str | os.PathLike, graph: Any = None, target: Any = None) -> "Schedule":
        """Read a schedule file (see :meth:`from_dict` for ``graph`` and ``target``).

        Raises
        ------
        MissingFileError
            No file at ``path`` (a ``FileNotFoundError``).
        InputFileError
            ``path`` is a directory or cannot be read.
        ScheduleFormatError, ScheduleMismatchError
            See :meth:`from_dict`.
        """
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise MissingFileError(f"no schedule file at {path}") from None
        except IsADirectoryError:
            raise InputFileError(f"{path} is a directory, not a schedule file") from None
        except OSError as err:
            raise InputFileError(f"cannot read schedule file {path}: {err.strerror or err}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ScheduleFormatError(f"corrupt schedule file {path}: not text (a schedule is JSON)") from None
        try:
            return cls.from_json(text, graph, target)
        except (ScheduleFormatError, ScheduleMismatchError) as err:  # say which file
            raise type(err)(f"{path}: {err}") from None

    # -- display -----------------------------------------------------------------------------
    def summary(self) -> str:
        """One line: stages, kernels, streams, latency and who predicted it, and the target."""
        lat = self.latency
        parts = [f"{len(self.stages)} stage{'s' if len(self.stages) != 1 else ''} over {self.num_nodes} kernels",
                 f"up to {self.max_streams} concurrent stream{'s' if self.max_streams != 1 else ''}"]
        if lat is not None:
            what = "measured" if self.measured else "predicted"
            parts.append(f"latency {lat * 1e3:.4f} ms ({what}, {self.meta.get('cost_model', 'cost model')} cost model)")
        made_for = self.meta.get("target")
        if made_for is not None:
            kind, arch = target_kind_arch(made_for)
            parts.append(f"for {kind}{f' {arch}' if arch else ''}")
        strategy = self.meta.get("strategy")
        if isinstance(self.meta.get("end_to_end"), dict) and strategy in ("sequential", "greedy"):
            parts.insert(0, f"the {strategy} schedule (kept instead of the IOS schedule by the end-to-end check)")
        return ", ".join(parts)

    def to_text(self, max_stages: int | None = None, more: str = "") -> str:
        """A terminal view: one line per stage, groups as ``[kernel -> kernel] | [...]``; past
        ``max_stages``, a line saying how many more there are, followed by ``more`` (how to see
        them, e.g. ``" (--all shows them)"``)."""
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
            rest = len(self.stages) - max_stages
            lines.append(f"  ... {rest} more stage{'s' if rest != 1 else ''}{more}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text(max_stages=40)
