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


def test_gpu_script_dry_run(tmp_path):
    """``benchmarks/on_gpu.sh --dry-run``: the GPU machine's one command, on the CPU (llvm, the
    reduced squeezenet, a 30 s tuning budget): every step ends well and leaves its files."""
    import os
    import xml.etree.ElementTree as ET

    from ios_tvm.tuning_db import count_records, open_database

    out = tmp_path / "run"
    p = subprocess.run(["bash", str(ROOT / "benchmarks/on_gpu.sh"), "--dry-run", str(out)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    steps = {row.split("\t")[0]: row.split("\t")[1:] for row in (out / "steps.tsv").read_text().splitlines()[1:]}
    assert {"gpu_tests", "tune_float32", "e2e_squeezenet"} <= set(steps), steps
    assert all(rc == "0" for rc, _ in steps.values()), steps
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dry_run"] and prov["arch"] == "generic" and prov["models"] == ["squeezenet"] and prov["tvm"]
    suite = ET.parse(out / "gpu_tests.xml").getroot().iter("testsuite").__next__()
    assert int(suite.get("skipped")) > 0 and int(suite.get("failures")) == int(suite.get("errors")) == 0
    assert "stopped by" in (out / "tune_float32.log").read_text()
    db = out / "tuning" / "generic" / "squeezenet"  # records only if a batch fitted the 30 s
    assert len(open_database(db, create=False)) == count_records(db)
    e2e = json.loads((out / "e2e_squeezenet.json").read_text())
    assert {"sequential_s", "ios_both_s"} <= set(e2e["models"]["squeezenet"])
    assert e2e["settings"]["database"] == str(db)


def test_torch_peers_switch_tf32_off_and_back():
    """The fair fp32 peer runs with TF32 off; PyTorch's own switches come back afterwards."""
    import importlib.util

    torch = __import__("pytest").importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_e2e", ROOT / "benchmarks/gpu_e2e.py")
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    before = e2e.torch_tf32_settings()
    torch.backends.cudnn.allow_tf32 = True
    with e2e.torch_fp32_mode(False) as fp32:
        assert fp32 == {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False,
                        "float32_matmul_precision": "highest"}
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True
    with e2e.torch_fp32_mode(None) as default:
        assert default["cudnn.allow_tf32"] is True
    torch.backends.cudnn.allow_tf32 = before["cudnn.allow_tf32"]
