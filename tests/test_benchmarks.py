"""The benchmark scripts run (CPU dry runs) and the report renders what they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, cwd):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


def test_e2e_dry_run_and_report(tmp_path):
    out = tmp_path / "e2e.json"
    p = _run(str(ROOT / "benchmarks/gpu_e2e.py"), "--target", "llvm", "--small", "--models", "squeezenet",
             "--number", "1", "--repeat", "2", "--no-torch", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    row = data["models"]["squeezenet"]
    assert {"sequential_s", "greedy_s", "ios_concurrent_s", "ios_merge_s", "ios_both_s"} <= set(row)
    assert data["provenance"]["tvm"] and data["provenance"]["machine"]
    png = tmp_path / "speedups.png"
    results = sorted((ROOT / "benchmarks/results").glob("*.json"))
    p = _run(str(ROOT / "benchmarks/report.py"), str(out), *map(str, results), "--plot", str(png), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| squeezenet | ios_both |" in p.stdout and "### Search cost" in p.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
