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
        (("optimize", "squeezenet", "--small", "--target", "llvm", "--variants", "2", "--database", "none"),
         "tuning database"),
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


def test_optimize_build_run_show_png(tmp_path):
    """The whole CLI flow on CPU: optimize -> build -> load and run the library -> show --png."""
    import numpy as np
    import tvm
    from tvm import relax

    import ios_tvm  # noqa: F401  (the library calls ios_tvm.runtime.*)
    from ios_tvm import models

    sched = tmp_path / "s.json"
    lib = tmp_path / "g.so"
    png = tmp_path / "g.png"
    assert run("optimize", "googlenet", "--small", "--target", "llvm", "-o", str(sched)).returncode == 0
    p = run("build", "googlenet", "--small", "--target", "llvm", "--schedule", str(sched), "-o", str(lib))
    assert p.returncode == 0, p.stderr
    mod = models.get("googlenet", small=True)
    bound = models.bind_params(mod, models.random_params(mod))
    data = models.random_input(mod)
    got = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    want = relax.VirtualMachine(ios_tvm.build(bound, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    p = run("show", str(sched), "--png", str(png))
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    p = run("build", "squeezenet", "--small", "--target", "llvm", "--schedule", str(sched), "-o", str(lib))
    assert p.returncode == 2 and "another model" in p.stderr


def test_bench_and_onnx_input(tmp_path):
    from test_frontend import _inception_like  # the ONNX model the frontend test builds

    import numpy as np

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(_inception_like(np.random.default_rng(0)))
    p = run("optimize", str(onnx_path), "--target", "llvm", "-o", str(tmp_path / "m.json"))
    assert p.returncode == 0, p.stderr
    p = run("bench", "squeezenet", "--small", "--target", "llvm", "--repeat", "2")
    assert p.returncode == 0, p.stderr
    assert all(k in p.stdout for k in ("sequential", "greedy", "IOS", "outputs equal"))
    p = run("optimize", str(tmp_path / "missing.onnx"))
    assert p.returncode == 2 and "no ONNX file" in p.stderr
