"""The schedule file format: its constants, :class:`Stage`, and the strict reading of every
field of a file (a field of the wrong type or value is a :class:`~ios_tvm.errors.ScheduleFormatError`
that names it). :class:`~ios_tvm.core.schedule.Schedule` writes and reads files with these."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ScheduleFormatError

FORMAT = "ios_tvm.schedule"
FORMAT_VERSION = 2  #: written when a schedule has kernel variants; version 1 (none) otherwise
READ_VERSIONS = (1, 2)
STAGE_KINDS = ("concurrent", "merge")
#: the longest stage latency a schedule file may hold (an hour): anything longer is corrupt
MAX_STAGE_S = 3600.0

#: what to do with a schedule that does not fit, for API and command-line users alike
RECREATE = ("re-create it for this model (Python: ios_tvm.optimize(mod, target); command line: "
            "ios-tvm optimize MODEL -o FILE) with the target, batch size and input shape it will run with")


def target_kind_arch(target: Any) -> tuple[str, str | None]:
    """``(kind, arch)`` of a target as schedules record it (``meta["target"]``: the target's JSON
    text, e.g. ``'{"kind": "cuda", "arch": "sm_90", ...}'``, or an older plain string such as
    ``"llvm -num-cores=2"``), or of a ``tvm.target.Target`` / dict / name. ``arch`` is the CUDA
    architecture (``None`` for CPUs and when unknown)."""
    if hasattr(target, "kind") and hasattr(target, "attrs"):  # a tvm.target.Target
        kind = str(target.kind.name)
        arch = target.attrs.get("arch") if kind == "cuda" else None
        return kind, None if arch is None else str(arch)
    if isinstance(target, str):
        text = target.strip()
        if text.startswith("{"):
            try:
                target = json.loads(text)
            except json.JSONDecodeError:
                raise ScheduleFormatError(f"corrupt schedule: its target {text!r} is not valid JSON") from None
        else:
            return (text.split()[0] if text else ""), None
    if isinstance(target, dict) and isinstance(target.get("kind"), str):
        arch = target.get("arch") if target["kind"] == "cuda" else None
        return target["kind"], None if arch is None else str(arch)
    raise ScheduleFormatError(f"corrupt schedule: its target {target!r} names no target kind")


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


def parse_json(text: str) -> Any:
    """``json.loads`` of a schedule file's text; what is not JSON (or holds NaN / Infinity) is a
    :class:`~ios_tvm.errors.ScheduleFormatError`."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, _Corrupt) as err:
        raise ScheduleFormatError(f"corrupt schedule file: not JSON ({err})") from None
    except RecursionError:
        raise ScheduleFormatError("corrupt schedule file: nested too deeply to be a schedule") from None


def read_fields(data: Any) -> dict[str, Any]:
    """The fields of a schedule's dict form, each checked (format, version, types, node ids,
    latencies finite, >= 0 and below :data:`MAX_STAGE_S`), as keywords of
    :class:`~ios_tvm.core.schedule.Schedule`.

    Raises
    ------
    ScheduleFormatError
        Not a schedule, a format version this ios_tvm cannot read, or a corrupt field.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ScheduleFormatError(f"not an ios_tvm schedule (expected \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ScheduleFormatError(
            f"schedule format version {version!r} is not supported by this ios_tvm "
            f"(it reads versions {READ_VERSIONS}): a newer ios_tvm wrote it (upgrade ios_tvm) or it is "
            f"corrupt ({RECREATE})")
    if data.get("variants") and version < 2:
        raise ScheduleFormatError("corrupt schedule: kernel variants in a version 1 file (variants need version 2)")
    try:
        return dict(
            stages=[_parse_stage(i, s) for i, s in enumerate(_field(data, "stages", list))],
            fingerprint=_field(data, "fingerprint", str),
            node_names=[_field(_typed(n, dict, "a node"), "name", str) for n in _field(data, "nodes", list)],
            kernels=[_field(n, "kernel", str) for n in data["nodes"]],
            edges=[_parse_edge(e) for e in _field(data, "edges", list)],
            meta=_typed(data.get("meta", {}), dict, "meta"),
            variants=_parse_variants(data.get("variants", {})),
        )
    except _Corrupt as err:
        raise ScheduleFormatError(f"corrupt schedule: {err}") from None


# -- strict parsing ----------------------------------------------------------------------------
class _Corrupt(Exception):
    """A field of a schedule file of the wrong type or value (becomes a ScheduleFormatError)."""


def _no_constant(name: str) -> Any:
    raise _Corrupt(f"{name} is not a number a schedule can hold")


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Corrupt(f"{what} should be {_a(kind.__name__)}, got {type(value).__name__} {_short(value)}")
    return value


def _field(data: Any, key: str, kind: type) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise _Corrupt(f"no {key!r} field")
    return _typed(data[key], kind, f"{key!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _node_id(value: Any) -> int:
    return _typed(value, int, "a node id")


def _parse_stage(i: int, data: Any) -> Stage:
    what = f"stage {i}"
    _typed(data, dict, what)
    groups = [[_node_id(v) for v in _typed(g, list, f"a group of {what}")]
              for g in _field(data, "groups", list)]
    kind = _typed(data.get("kind", "concurrent"), str, f"the kind of {what}")
    latency = data.get("latency_s")
    if latency is not None:
        if not isinstance(latency, (int, float)) or isinstance(latency, bool):
            raise _Corrupt(f"latency_s of {what} should be a number or null, got {_short(latency)}")
        if not math.isfinite(latency) or latency < 0:
            raise _Corrupt(f"latency_s of {what} is {latency!r}; a latency is a finite number of seconds >= 0")
        if latency > MAX_STAGE_S:
            raise _Corrupt(f"latency_s of {what} is {latency:.3g} s; no stage of a model runs for more than "
                           f"{MAX_STAGE_S:.0f} s (an hour)")
        latency = float(latency)
    return Stage(groups, kind, latency)


def _parse_edge(data: Any) -> tuple[int, int]:
    pair = _typed(data, list, "an edge")
    if len(pair) != 2:
        raise _Corrupt(f"an edge should be [producer, consumer], got {_short(pair)}")
    return _node_id(pair[0]), _node_id(pair[1])


def _parse_variants(data: Any) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, var in _typed(data, dict, "'variants'").items():
        if not (isinstance(key, str) and key.isdigit()):
            raise _Corrupt(f"kernel variants are keyed by node id, got {_short(key)}")
        out[int(key)] = dict(_typed(var, dict, f"the kernel variant of node {key}"))
    return out
