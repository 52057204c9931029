"""The ios-tvm command line, end to end in subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from ios_tvm import models


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "ios_tvm", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=None if env is None else {**os.environ, **env})


def test_demo_on_a_small_model():
    p = run("demo", "--model", "squeezenet", "--small", "--target", "llvm")
    assert p.returncode == 0, p.stderr
    assert "stage 0" in p.stdout.replace("  ", " ")
    for word in ("sequential", "greedy", "IOS", "candidate stages", "how far to trust it"):
        assert word in p.stdout
    # what it waits for is said as it starts, with the time since the start
    for step in ("loading squeezenet (small) (64x64, batch 1)", "building the sequential model for llvm",
                 "building the IOS-scheduled model", "timing the sequential model"):
        assert re.search(r"ios-tvm: \[ *[0-9.]+ s\] " + re.escape(step), p.stderr), (step, p.stderr)
    # and predicted against measured, with the model's known error
    assert re.search(r"the analytic cost model predicted [0-9.]+ ms for the sequential schedule \(cpu-\d+core\); "
                     r"this machine ran it [0-9.]+x (slower|faster) than predicted", p.stdout), p.stdout
    assert "its known error: calibrated on untuned TVM kernels" in p.stdout


def test_optimize_then_show(tmp_path):
    out = tmp_path / "g.json"
    p = run("optimize", "googlenet", "--small", "--target", '{"kind": "cuda", "arch": "sm_90"}',
            "-r", "2", "-s", "4", "-o", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["meta"]["search"]["max_group_size"] == 2
    assert all(len(s["groups"]) <= 4 for s in data["stages"])
    assert data["meta"]["prediction"]["cost_model"] == "analytic"
    assert "H200" in data["meta"]["prediction"]["known_error"]
    p = run("show", str(out), "--all")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1 + len(data["stages"])
    assert "(predicted, analytic cost model), for cuda sm_90" in p.stdout.splitlines()[0]


def test_mistakes_through_the_entry_point(tmp_path):
    """The process exits with main's status: 2 for a mistake (one line), 2 for argparse's own."""
    for args, match in [(("optimize", "resnet"), "unknown model"),
                        (("bench", "squeezenet", "--repeat", "0"), "--repeat: must be >= 1")]:
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stderr.strip().splitlines()[-1].startswith("ios-tvm: error:") and match in p.stderr
        assert "Traceback" not in p.stderr


def test_ctrl_c_during_a_measured_search(tmp_path):
    """SIGINT while the search measures (building or timing): one line, exit status 130."""
    env = dict(os.environ, IOS_TVM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "ios_tvm", "optimize", "googlenet", "--small", "--target", "llvm",
                             "--cost-model", "measure", "-o", str(tmp_path / "s.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:  # wait for the estimate: the measuring starts right after it
        seen.append(line)
        if "distinct candidate stages" in line:
            break
    assert re.search(r"measuring \d+ distinct candidate stages .* takes about", "".join(seen)), seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.splitlines() == [("ios-tvm: interrupted while measuring stage costs. Stage costs measured so far "
                                 "are kept in the stage cache: the same command resumes from them.")], err


def test_models_lists_the_zoo():
    p = run("models", "squeezenet", "inception_v3")
    assert p.returncode == 0, p.stderr
    rows = [line.split()[:5] for line in p.stdout.splitlines()[1:3]]
    assert rows == [["squeezenet", "1x3x224x224", "1.2", "M", "39"], ["inception_v3", "1x3x299x299", "23.8", "M", "120"]]
    p = run("models", "bert", "llama", "moe", "--small")  # the transformers, on hidden states
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()[1:4]]
    assert [r[0] for r in rows] == ["bert", "llama", "moe"] and all(r[-1] == "wide" and r[-3] == "tokens," for r in rows)
    assert {"bert", "llama", "moe"} <= set(models.names())


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
    import numpy as np
    from test_frontend import _inception_like  # the ONNX model the frontend test builds

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(_inception_like(np.random.default_rng(0)))
    p = run("optimize", str(onnx_path), "--target", "llvm", "-o", str(tmp_path / "m.json"))
    assert p.returncode == 0, p.stderr
    p = run("bench", "squeezenet", "--small", "--target", "llvm", "--repeat", "2",
            env={"IOS_TVM_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert all(k in p.stdout for k in ("sequential", "greedy", "ios", "outputs equal", "measured/predicted", "MiB",
                                       "± the spread of the samples", "fastest beyond the noise:"))
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.strip().startswith(("seq", "gre", "ios"))}
    assert rows["sequential"][-1] == "1.00x"  # activation memory against the sequential plan
    (record,) = [json.loads(line) for line in (tmp_path / "cache" / "predictions.jsonl").read_text().splitlines()]
    assert set(record["measured_s"]) == set(record["predicted_s"]) == {"sequential", "greedy", "ios"}
    p = run("optimize", str(tmp_path / "missing.onnx"))
    assert p.returncode == 2 and "no ONNX file" in p.stderr
    p = run("bench", str(onnx_path), "--target", "llvm", "--repeat", "1")
    assert p.returncode == 0, p.stderr
    assert "outputs equal" in p.stdout
