"""The C++ runtime library loads, matches the package, and raises typed errors."""

from __future__ import annotations

import pytest

import ios_tvm
from ios_tvm import runtime


def test_library_version_matches_package():
    assert runtime.version() in (ios_tvm.__version__, ios_tvm.__version__ + ".dev")
    info = runtime.build_info()
    assert info["version"] == runtime.version() and info["cuda"] in ("0", "1")


def test_typed_errors_cross_from_cpp():
    assert runtime.check_num_streams(3, 8) == 3
    with pytest.raises(ValueError, match="pool holds 8"):
        runtime.check_num_streams(9, 8)
    with pytest.raises(ValueError, match=">= 1"):
        runtime.check_num_streams(0, 8)


def test_globals_are_namespaced():
    """The library registers its globals under ``ios_tvm.runtime.``, the names compiled models and
    the Python face call, and they are the ones the wrappers call."""
    import tvm_ffi

    names = set(tvm_ffi.registry.list_global_func_names())
    calls = {"stage_fork", "stage_switch", "stage_join", "time_stage", "time_stage_graph", "time_stage_named",
             "version", "build_info", "check_num_streams", "pool_size", "set_pool_size", "stages_run",
             "stages_recovered"}
    assert {f"ios_tvm.runtime.{c}" for c in calls} <= names, sorted(calls - {n.rpartition(".")[2] for n in names})
    assert {runtime.FORK, runtime.SWITCH, runtime.JOIN} <= names
    assert tvm_ffi.get_global_func("ios_tvm.runtime.version")() == runtime.version()
    assert tvm_ffi.get_global_func("ios_tvm.runtime.pool_size")() == runtime.pool_size()


@pytest.mark.timing
def test_ctrl_c_stops_a_long_stage_timing_promptly(tmp_path):
    """The stage timer checks for signals between runs: SIGINT during a timing that would take
    minutes ends it within seconds, as a KeyboardInterrupt, with no stage left open."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent("""
        import sys, time
        import ios_tvm
        from ios_tvm import models, runtime
        from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
        from ios_tvm.models import NetBuilder
        nb = NetBuilder("two", (1, 4, 8, 8))
        with nb.scope() as x:
            nb.output(nb.concat([nb.conv(x, 8, 3), nb.conv(x, 8, 3)]))
        mod = nb.module()
        mod = models.bind_params(mod, models.random_params(mod))
        graph = ios_tvm.extract_graph(mod, "llvm")
        cm = MeasuredCostModel("llvm", MeasureConfig(warmup=0, repeat=10**8, cache_dir=False, progress=False))
        cm.load(graph)
        print("timing", flush=True)
        try:
            cm.timer.time(((0,), (1,)))
        except KeyboardInterrupt:
            print("interrupted", runtime.stages_run() >= 0, flush=True)
            runtime.time_stage(1, 0, [[cm.timer.funcs[0]], [cm.timer.funcs[1]]],
                               [[cm.timer.args[0]], [cm.timer.args[1]]], 0, 1)  # no stage left open
            print("ok", flush=True)
            sys.exit(0)
        sys.exit(3)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "timing":
        p.kill()
        raise AssertionError(p.communicate()[1][-3000:])
    time.sleep(1.0)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    took = time.monotonic() - sent
    assert p.returncode == 0, err[-2000:]
    assert out.split() == ["interrupted", "True", "ok"]
    assert took < 5, took
