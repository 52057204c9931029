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
