"""The ios-tvm command line, end to end in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ios_tvm", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_demo_on_a_small_model():
    p = run("demo", "--model", "squeezenet", "--small", "--target", "llvm")
    assert p.returncode == 0, p.stderr
    assert "stage 0" in p.stdout.replace("  ", " ")
    for word in ("sequential", "greedy", "IOS", "candidate stages"):
        assert word in p.stdout


def test_optimize_then_show(tmp_path):
    out = tmp_path / "g.json"
    p = run("optimize", "googlenet", "--small", "--target", '{"kind": "cuda", "arch": "sm_90"}',
            "-r", "2", "-s", "4", "-o", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["meta"]["search"]["max_group_size"] == 2
    assert all(len(s["groups"]) <= 4 for s in data["stages"])
    p = run("show", str(out), "--all")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1 + len(data["stages"])


def test_user_mistakes_are_one_line_errors(tmp_path):
    for args, match in [
        (("optimize", "resnet"), "unknown model"),
        (("optimize", "squeezenet", "--small", "-r", "0"), "max_group_size"),
        (("optimize", "squeezenet", "--target", "{bad"), "JSON"),
        (("show", str(tmp_path / "none.json")), "no schedule file"),
    ]:
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert match in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    p = run("show", str(bad))
    assert p.returncode == 2 and "corrupt" in p.stderr


def test_models_lists_the_zoo():
    p = run("models")
    assert p.stdout.split() == ["googlenet", "inception_v3", "nasnet_a_large", "randwire", "squeezenet"]
