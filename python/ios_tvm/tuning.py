"""Kernel tuning with MetaSchedule (XGBoost cost model), feeding IOS's costs and builds.

``ios_tvm.tune(mod, target, work_dir)`` extracts the model's tasks (its fused PrimFuncs, the very
kernels IOS schedules) and tunes the ones the database in ``work_dir`` has no record of, so a
second call re-uses what the first found; ``retune=True`` spends more trials on all of them. The
database is MetaSchedule's JSON database (``database_workload.json``,
``database_tuning_record.json``): one made by any other MetaSchedule run works as it is.

Builds and measurements take ``database=`` (a directory or a ``ms.Database``): the pipeline
applies it right after fusion (``MetaScheduleApplyDatabase``), and dlight's default schedules
cover what it lacks, so the sequential baseline, the stage costs and the scheduled model all run
the same tuned kernels.

Databases shipped with ios_tvm live in the repository's ``tuning/<arch>/<model>/`` (``arch`` is
``sm_90`` for CUDA targets, the LLVM ``mcpu`` or ``generic`` for CPUs); :func:`shipped_database`
finds the ones matching a target, and builds use them unless told otherwise.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from .errors import DatabaseError
from .graph import lower_for_graph
from .target import arch_of, tuning_target

logger = logging.getLogger("ios_tvm")

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")  #: MetaSchedule's JSON database
# The repo's tuning/ directory: installed into the wheel as ios_tvm/tuning_db (CMakeLists.txt);
# in a source checkout it is read in place.
SHIPPED_DIRS = (Path(__file__).resolve().parent / "tuning_db", Path(__file__).resolve().parents[2] / "tuning")


def open_database(database: str | os.PathLike | ms.Database, create: bool = True) -> ms.Database:
    """A ``ms.Database`` from a database or a work directory.

    ``create``: make the directory and empty database files when missing (tuning writes into
    it); ``False`` (reading, as builds and measurements do) refuses a directory that holds no
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
        return ms.database.JSONDatabase(work_dir=str(path))
    missing = [f for f in DATABASE_FILES if not (path / f).is_file()]
    if missing:
        where = "no directory" if not path.exists() else ("no " + " and ".join(missing) + " in")
        raise DatabaseError(
            f"no tuning database at {path} ({where} {path}): tune into it first (Python: "
            f"ios_tvm.tune(mod, target, {str(path)!r})), or use database 'auto' (the one shipped for the "
            "target, if any) or 'none' (untuned kernels); CLI: --database DIR|auto|none")
    try:
        return ms.database.JSONDatabase(work_dir=str(path), allow_missing=False)
    except Exception as err:  # noqa: BLE001 - TVM's JSON reader raises several types for a bad file
        raise DatabaseError(f"the tuning database at {path} cannot be read ({str(err).strip().splitlines()[-1]}): "
                            "re-create it with ios_tvm.tune") from None


def shipped_database(target: str | dict | tvm.target.Target) -> ms.Database | None:
    """Union of the databases shipped for ``target``'s architecture, or ``None``."""
    dirs = []
    for root in SHIPPED_DIRS:
        arch_dir = root / arch_of(target)
        if arch_dir.is_dir():
            dirs = sorted(p.parent for p in arch_dir.glob("*/database_tuning_record.json"))
            break
    if not dirs:
        return None
    dbs = [ms.database.JSONDatabase(work_dir=str(d), allow_missing=False) for d in dirs]
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def resolve_database(database: Any, target: str | dict | tvm.target.Target) -> ms.Database | None:
    """``database=`` of builds: ``"auto"`` -> the shipped one for the target (if any),
    ``None`` -> untuned (dlight defaults), else a directory holding a database (never created
    here: :class:`~ios_tvm.errors.DatabaseError` when there is none) or a ``ms.Database``."""
    if database is None:
        return None
    if isinstance(database, str) and database == "auto":
        return shipped_database(target)
    return open_database(database, create=False)


def database_tag(database: Any, target: str | dict | tvm.target.Target) -> str:
    """What kernels a build with ``database`` runs, for cache keys: ``"untuned"``, or a digest of
    the database's records (the cached latency of a stage depends on its kernels' schedules)."""
    import hashlib

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


@dataclass
class TuneReport:
    """What :func:`tune` did."""

    work_dir: str
    tasks: list[str]
    tuned: list[str]
    reused: list[str]
    trial_budget: int
    seconds: float
    database: Any = field(default=None, repr=False)
    failed: list[str] = field(default_factory=list)  #: tuned now, yet no schedule that built and ran


def _has_record(db: ms.Database, task: Any) -> bool:
    mod = task.dispatched[0]
    if not db.has_workload(mod):
        return False
    return len(db.get_top_k(db.commit_workload(mod), 1)) > 0


def tune(
    mod: tvm.IRModule,
    target: str | dict | tvm.target.Target,
    work_dir: str | os.PathLike,
    *,
    max_trials_global: int | None = None,
    max_trials_per_task: int = 64,
    num_trials_per_iter: int = 16,
    retune: bool = False,
    seed: int | None = 0,
    runner: Any = "local",
    builder: Any = "local",
    build_timeout_s: float = 120.0,
) -> TuneReport:
    """Tune the kernels of ``mod`` for ``target`` into the JSON database in ``work_dir``.

    Parameters
    ----------
    max_trials_global
        Trials over all tasks tuned now (default ``max_trials_per_task`` times their number).
    max_trials_per_task, num_trials_per_iter
        MetaSchedule's budget per task and batch size.
    retune
        Also tune tasks the database already has records of (extends it; nothing is lost).
    runner, builder
        MetaSchedule's (``"local"``, or e.g. an ``ms.runner.RPCRunner``).
    build_timeout_s
        Per-candidate build limit of the local builder (MetaSchedule's own default, 30 s, kills
        whole batches on a small or busy machine, leaving tasks without any schedule).

    Progress goes to MetaSchedule's logs in ``work_dir/logs`` and to the ``ios_tvm`` logger.
    """
    tgt = tuning_target(target)
    t0 = time.perf_counter()
    lowered = lower_for_graph(mod, tgt)
    tasks = ms.relax_integration.extract_tasks(lowered, tgt)
    work_dir = str(work_dir)
    db = open_database(work_dir)
    known = [_has_record(db, t) for t in tasks]
    todo = [t for t, k in zip(tasks, known) if retune or not k]
    reused = [t.task_name for t, k in zip(tasks, known) if k and not retune]
    logger.info("ios_tvm.tune: %d tasks, %d to tune, %d found in %s", len(tasks), len(todo), len(reused), work_dir)
    budget = 0
    if todo:
        if isinstance(builder, str) and builder == "local":
            builder = ms.builder.LocalBuilder(timeout_sec=build_timeout_s)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=todo, work_dir=work_dir, seed=seed)
        budget = max_trials_global if max_trials_global is not None else max_trials_per_task * len(contexts)
        ms.relax_integration.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=budget,
            max_trials_per_task=max_trials_per_task, num_trials_per_iter=num_trials_per_iter,
            builder=builder, runner=runner, database=db, cost_model="xgb")
    failed = [t.task_name for t in todo if not _has_record(db, t)]
    if failed:
        logger.warning("ios_tvm.tune: %d of %d tuned tasks have no schedule that built and ran (%s); builds use "
                       "dlight's defaults for them. See %s/logs; raise build_timeout_s or the trial budget and tune "
                       "again (tasks without a record are tuned again)", len(failed), len(todo),
                       ", ".join(failed[:5]), work_dir)
    return TuneReport(work_dir, [t.task_name for t in tasks], [t.task_name for t in todo], reused, budget,
                      time.perf_counter() - t0, db, failed)
