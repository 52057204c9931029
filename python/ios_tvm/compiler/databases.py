"""MetaSchedule JSON databases on disk: opened safely, found per architecture, pruned.

A database is a directory with two files of one JSON document per line (plus ios_tvm's note of
the workloads whose design space is measured out, :data:`STATE_FILE`):
``database_workload.json`` (``[structural_hash, workload]``: the kernels) and
``database_tuning_record.json`` (``[workload_index, [trace, run_secs, target, args_info]]``: one
measured schedule each). MetaSchedule appends a line per record and flushes, so a run stopped at
any moment loses at most what it was writing, but a half-written last line makes the whole file
fail to load. :func:`open_database` (every place ios_tvm opens a JSON database goes through it)
first trims such a line with :func:`repair_database`.

:func:`prune_database` keeps the best ``K`` distinct schedules of each workload, to keep
committed databases small (kernel variants use the runner-ups, so keep ``K >= 3``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Union

import tvm
from tvm.s_tir import meta_schedule as ms

from ..errors import DatabaseError, TuningError
from ..ir.target import arch_of

logger = logging.getLogger("ios_tvm")

#: what ``database=`` takes: a directory made by ``ios_tvm.tune``, a ``ms.Database``, ``"auto"``
#: (the database shipped for the target's architecture, if any) or ``None`` (untuned kernels)
DatabaseLike = Union[str, "os.PathLike[str]", ms.Database, None]

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
#: ios_tvm's note beside a database: workloads whose search ran out of new schedules
STATE_FILE = "ios_tvm_tuning.json"
#: MetaSchedule stores failed candidates with ``run_secs`` 1e10; anything above this is a failure
FAILED_S = 1e9
#: default records kept per workload by :func:`prune_database`
DEFAULT_KEEP = 8

# The repo's tuning/ directory: installed into the wheel as ios_tvm/tuning_db (CMakeLists.txt);
# in a source checkout it is read in place.
SHIPPED_DIRS = (Path(__file__).resolve().parents[1] / "tuning_db", Path(__file__).resolve().parents[3] / "tuning")


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _trim_file(path: Path) -> int:
    """Drop a cut-off last line of ``path`` (what an interrupted append leaves: no newline after
    it, and it does not parse), keeping the dropped bytes beside it (``*.partial-<time>``); a
    complete last line that only lacks its newline gets one. Returns the lines dropped (0 or 1).

    Anything else that does not parse (a line that ends with its newline) is not an interrupted
    append but damage: it is left as it is, and reading the database then fails with a clear
    error instead of data being dropped in silence.
    """
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    head, _, tail = data.rpartition(b"\n")
    kept = data + b"\n" if _parses(tail) else (head + b"\n" if head else b"")
    if kept != data + b"\n":
        aside = path.with_name(f"{path.name}.partial-{int(time.time())}")
        aside.write_bytes(tail)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(kept)
    os.replace(tmp, path)
    return 0 if kept == data + b"\n" else 1


def repair_database(work_dir: str | os.PathLike) -> int:
    """Trim a half-written last line from the database files in ``work_dir``.

    Parameters
    ----------
    work_dir
        A database directory (missing files are fine).

    Returns
    -------
    int
        Lines dropped (0 when both files were whole). A complete last line that only lacks its
        newline is kept and terminated.
    """
    dropped = 0
    for name in (WORKLOAD_FILE, RECORD_FILE):
        path = Path(work_dir) / name
        try:
            n = _trim_file(path)
        except PermissionError:
            logger.warning("ios_tvm: %s may be cut short and is read-only; not repaired", path)
            continue
        if n:
            logger.warning("ios_tvm: dropped a half-written line at the end of %s (an interrupted run; kept "
                           "beside it as %s.partial-*)", path, path.name)
        dropped += n
    return dropped


def open_database(database: str | os.PathLike | ms.Database, *, create: bool = True) -> ms.Database:
    """A ``ms.Database`` from a database or a work directory, repaired first
    (:func:`repair_database`: a half-written last line, left by an interrupted run, is trimmed).

    Parameters
    ----------
    database
        A ``ms.Database`` (returned as it is) or a directory.
    create
        Make the directory and empty database files when missing (tuning writes into it);
        ``False`` (reading, as builds and measurements do) refuses a directory that holds no
        database, so a mistyped path is an error, never an empty database made on the side.

    Raises
    ------
    DatabaseError
        ``create=False`` and no readable database in the directory.
    """
    if isinstance(database, ms.Database):
        return database
    path = Path(database)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    else:
        missing = [f for f in (WORKLOAD_FILE, RECORD_FILE) if not (path / f).is_file()]
        if missing:
            where = "no directory" if not path.exists() else ("no " + " and ".join(missing) + " in")
            raise DatabaseError(
                f"no tuning database at {path} ({where} {path}): tune into it first (Python: "
                f"ios_tvm.tune(mod, target, {str(path)!r}); command line: ios-tvm tune MODEL --out DIR, then "
                "--database DIR), or use database 'auto' (the one shipped for the target, if any) or 'none' "
                "(untuned kernels); CLI: --database DIR|auto|none")
    repair_database(path)
    try:
        return ms.database.JSONDatabase(work_dir=str(path), allow_missing=create)
    except Exception as err:  # noqa: BLE001 - TVM's JSON reader raises several types for a bad file
        raise DatabaseError(f"the tuning database at {path} cannot be read ({str(err).strip().splitlines()[-1]}): "
                            "re-create it with ios_tvm.tune") from None


def has_database(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a database (its record file)."""
    return (Path(path) / RECORD_FILE).is_file()


def model_databases(arch_dir: str | os.PathLike) -> list[Path]:
    """The per-model databases in an architecture's directory (``arch_dir/<model>/``)."""
    return sorted(p.parent for p in Path(arch_dir).glob(f"*/{RECORD_FILE}"))


def _union(dirs: list[Path]) -> ms.Database:
    dbs = [open_database(d, create=False) for d in dirs]
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def shipped_database(target: str | dict | tvm.target.Target) -> ms.Database | None:
    """Union of the databases shipped for ``target``'s architecture, or ``None``."""
    for root in SHIPPED_DIRS:
        arch_dir = root / arch_of(target)
        if arch_dir.is_dir():
            dirs = model_databases(arch_dir)
            return _union(dirs) if dirs else None
    return None


def tuning_root_database(path: str | os.PathLike, target: str | dict | tvm.target.Target) -> ms.Database | None:
    """The databases ``ios_tvm.tune_models`` / ``ios-tvm tune --out ROOT`` wrote for ``target``,
    given ``ROOT`` (all of ``ROOT/<arch>/<model>/``, as one union) or ``ROOT/<arch>``; ``None``
    when ``path`` is not such a directory.

    Raises
    ------
    DatabaseError
        ``path`` holds tuning databases, but for other architectures only (it names them).
    """
    path = Path(path)
    arch = arch_of(target)
    if model_databases(path / arch):  # ROOT
        return _union(model_databases(path / arch))
    own = model_databases(path)  # ROOT/<arch>, or a folder of model databases
    if own and (path.name == arch or not _looks_like_arch(path.name)):
        return _union(own)
    others = sorted({p.parent.parent.name for p in path.glob(f"*/*/{RECORD_FILE}")} | ({path.name} if own else set()))
    if others:
        root = path.parent if own else path
        raise DatabaseError(f"{path} holds tuning databases for {', '.join(others)}, none for this target's {arch}: "
                            f"tune for it (ios-tvm tune MODEL --target TARGET --out {root}) or build for the "
                            "architecture they were tuned for")
    return None


def _looks_like_arch(name: str) -> bool:
    """Whether a directory name is an architecture's (``sm_90``, ``generic``, an LLVM ``mcpu``
    cannot be told from a model's name: only the first two are recognized)."""
    return name.startswith("sm_") or name == "generic"


def resolve_database(database: DatabaseLike, target: str | dict | tvm.target.Target) -> ms.Database | None:
    """``database=`` of builds: ``"auto"`` -> the shipped one for the target (if any),
    ``None`` -> untuned (dlight defaults), else a ``ms.Database`` or a directory: one database
    (``ios_tvm.tune``'s ``work_dir``), or the root ``ios_tvm.tune_models`` / ``ios-tvm tune --out``
    wrote (its ``<arch>/<model>/`` databases of the target's architecture, together), or that
    root's ``<arch>`` directory. Never created here: :class:`~ios_tvm.errors.DatabaseError` when
    the directory holds none."""
    if database is None:
        return None
    if isinstance(database, str) and database == "auto":
        return shipped_database(target)
    if isinstance(database, (str, os.PathLike)) and not has_database(database) and Path(database).is_dir():
        found = tuning_root_database(database, target)
        if found is not None:
            return found
    return open_database(database, create=False)


def database_tag(database: DatabaseLike, target: str | dict | tvm.target.Target) -> str:
    """What kernels a build with ``database`` runs, for cache keys: ``"untuned"``, or a digest of
    the database's records (the cached latency of a stage depends on its kernels' schedules)."""
    db = resolve_database(database, target)
    if db is None:
        return "untuned"
    h = hashlib.sha256()
    try:
        for rec in db.get_all_tuning_records():
            h.update(str(rec.as_json()).encode())
    except Exception:  # noqa: BLE001 - a database we cannot enumerate: never share its cache
        h.update(str(id(db)).encode())
    return "tuned:" + h.hexdigest()[:16]


def exhausted_workloads(work_dir: str | os.PathLike) -> dict[str, str]:
    """Workloads (structural hash -> task name) whose search found no new schedule in an earlier
    run: their design space is measured out, and tuning leaves them alone unless retuning."""
    path = Path(work_dir) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("exhausted", {}))
    except (ValueError, AttributeError):
        logger.warning("ios_tvm: ignoring unreadable %s", path)
        return {}


def mark_exhausted(work_dir: str | os.PathLike, workloads: dict[str, str]) -> None:
    """Add ``workloads`` (structural hash -> task name) to :func:`exhausted_workloads`."""
    if not workloads:
        return
    state = {"format": 1, "exhausted": {**exhausted_workloads(work_dir), **workloads}}
    path = Path(work_dir) / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def record_seconds(run_secs: Any) -> float | None:
    """Mean of a record's ``run_secs``, or ``None`` for a failed or missing measurement."""
    if not run_secs:
        return None
    secs = [float(s) for s in run_secs]
    mean = sum(secs) / len(secs)
    return None if mean >= FAILED_S else mean


def count_records(work_dir: str | os.PathLike) -> int:
    """Lines (records, failed ones included) in the database's record file; 0 without one."""
    path = Path(work_dir) / RECORD_FILE
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def prune_database(work_dir: str | os.PathLike, keep: int = DEFAULT_KEEP) -> tuple[int, int]:
    """Keep the ``keep`` fastest distinct schedules of each workload; drop failed records.

    The record file is rewritten (atomically) with the kept lines in their original order; the
    workload file is left as it is, so workload indices stay valid.

    Parameters
    ----------
    work_dir
        The database directory.
    keep
        Records kept per workload (kernel variants try the runner-ups: keep at least 3).

    Returns
    -------
    tuple of int
        Record lines before and after.

    Raises
    ------
    TuningError
        ``keep`` < 1.
    """
    if keep < 1:
        raise TuningError(f"prune_database keeps at least one record per workload, got keep={keep}")
    repair_database(work_dir)
    path = Path(work_dir) / RECORD_FILE
    if not path.is_file():
        return 0, 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    best: dict[tuple[int, str], tuple[float, int]] = {}  # (workload, trace) -> (seconds, line)
    for i, line in enumerate(lines):
        index, (trace, run_secs, *_rest) = json.loads(line)
        secs = record_seconds(run_secs)
        if secs is None:
            continue
        key = (int(index), json.dumps(trace, sort_keys=True))
        if key not in best or secs < best[key][0]:
            best[key] = (secs, i)
    per_workload: dict[int, list[tuple[float, int]]] = {}
    for (index, _), found in best.items():
        per_workload.setdefault(index, []).append(found)
    kept = sorted(i for found in per_workload.values() for _, i in sorted(found)[:keep])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines[i] + "\n" for i in kept))
    os.replace(tmp, path)
    return len(lines), len(kept)
