"""Put what a GPU run of ``benchmarks/on_gpu.sh`` brought back where the repository keeps it.

    python benchmarks/bring_home.py on_gpu.tgz           # the IOS_TVM_PACK file, or the OUT folder

- each tuned database ``OUT/tuning/<arch>/<model>/`` (checked: it opens, its records count) over
  ``tuning/<arch>/<model>/`` (MetaSchedule's logs stay behind);
- each ``OUT/e2e_<model>.json`` as ``benchmarks/results/gpu_e2e_<gpu>_<model>_<date>.json``;
- ``steps.tsv`` and the GPU tests' summary lines as ``benchmarks/results/on_gpu_<gpu>_<date>.log``;

then prints what it copied and a commit message with the run's provenance (GPU, driver, CUDA,
TVM, commit). It refuses a dry run's output (``--dry-run`` of on_gpu.sh: CPU numbers are not GPU
results) and never overwrites a result file (``--force`` does); a database directory is replaced
(tuning continues from the committed one, so the new one holds it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB_FILES = ("database_workload.json", "database_tuning_record.json", "ios_tvm_tuning.json")


class BringHomeError(Exception):
    """The run's output is not what on_gpu.sh writes, or would overwrite a result."""


def gpu_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``: the model number of the GPU, for file names."""
    for token in name.lower().replace("-", " ").split():
        if re.fullmatch(r"[a-z]{1,2}\d{2,4}[a-z]?", token):
            return token
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def _summary_lines(log: Path) -> list[str]:
    """pytest's last line (``N passed, M skipped in S s``) of a log, if there is one."""
    if not log.is_file():
        return [f"{log.name}: missing"]
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    tail = [ln for ln in lines if re.search(r"\b(passed|failed|error|skipped|no tests ran)\b", ln)]
    return [f"{log.name}: {tail[-1] if tail else (lines[-1] if lines else 'empty')}"]


def bring_home(source: Path, repo: Path = ROOT, *, force: bool = False, allow_dry_run: bool = False,
               date: str | None = None) -> list[Path]:
    """Copy the results of one on_gpu.sh run (a packed ``.tgz`` or its folder) into ``repo``.

    Returns
    -------
    list of Path
        What was written, in ``repo``.
    """
    from ios_tvm.compiler.databases import count_records, open_database

    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file():
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            out = Path(tmp)
        elif source.is_dir():
            out = source
        else:
            raise BringHomeError(f"{source} is neither on_gpu.sh's packed file nor its output folder")
        prov_path = out / "provenance.json"
        if not prov_path.is_file():
            raise BringHomeError(f"{source} holds no provenance.json: not the output of benchmarks/on_gpu.sh")
        prov = json.loads(prov_path.read_text())
        if prov.get("dry_run") and not allow_dry_run:
            raise BringHomeError(f"{source} is the output of a dry run (CPU): its numbers are not GPU results")
        gpu = gpu_slug(str(prov.get("gpu") or prov.get("arch") or "cpu"))
        day = date or time.strftime("%Y-%m-%d", time.gmtime(prov_path.stat().st_mtime))
        arch = str(prov["arch"])
        plan: list[tuple[Path, Path]] = []  # (from, to) files
        databases = sorted(p for p in (out / "tuning" / arch).glob("*") if p.is_dir() and p.name != "logs")
        for db in databases:
            if not (db / "database_tuning_record.json").is_file():
                continue
            open_database(db, create=False)  # raises if it does not open
            plan += [(db / f, repo / "tuning" / arch / db.name / f) for f in DB_FILES if (db / f).is_file()]
        results = repo / "benchmarks" / "results"
        for e2e in sorted(out.glob("e2e_*.json")):
            model = e2e.stem[len("e2e_"):]
            plan.append((e2e, results / f"gpu_e2e_{gpu}_{model}_{day}.json"))
        clashes = [dst for src, dst in plan if dst.parent == results and dst.exists()]
        log = results / f"on_gpu_{gpu}_{day}.log"
        if log.exists():
            clashes.append(log)
        if clashes and not force:
            raise BringHomeError("would overwrite " + ", ".join(str(c) for c in clashes) + " (--force to replace)")
        written = []
        for db in {dst.parent for src, dst in plan if dst.parent != results}:
            shutil.rmtree(db, ignore_errors=True)  # replaced whole: no stale file of an older run
        for src, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(dst)
        steps = (out / "steps.tsv").read_text() if (out / "steps.tsv").is_file() else "steps.tsv: missing\n"
        tests = _summary_lines(out / "gpu_tests.log") + _summary_lines(out / "gpu_timing_tests.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"benchmarks/on_gpu.sh on {prov.get('gpu', '?')}, {day}\n\n{steps}\n" + "\n".join(tests) + "\n")
        written.append(log)
        counts = {db.name: count_records(repo / "tuning" / arch / db.name) for db in databases
                  if (repo / "tuning" / arch / db.name).is_dir()}
    print("\n".join(str(p.relative_to(repo)) for p in written))
    facts = ", ".join(f"{k} {prov[k]}" for k in ("gpu", "driver", "nvcc", "tvm", "commit") if prov.get(k))
    dbs = ", ".join(f"{m} {n} records" for m, n in counts.items())
    print(f"\nsuggested commit message:\nGPU run of benchmarks/on_gpu.sh ({day}): {facts}"
          + (f"; tuning/{arch}: {dbs}" if dbs else ""))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="on_gpu.sh's packed file (IOS_TVM_PACK) or its output folder")
    ap.add_argument("--force", action="store_true", help="replace result files of the same GPU, model and date")
    ap.add_argument("--date", help="date in the file names (default: the run's)")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the checkout to copy into (default: this one)")
    ap.add_argument("--allow-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from ios_tvm.errors import IosTvmError

    try:
        bring_home(args.source, args.repo, force=args.force, allow_dry_run=args.allow_dry_run, date=args.date)
    except (BringHomeError, IosTvmError, OSError, tarfile.TarError, json.JSONDecodeError, KeyError) as err:
        print(f"bring_home: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
