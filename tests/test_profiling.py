"""The device lock: processes that share ``IOS_TVM_DEVICE_LOCK`` time one at a time, and the
timers of ios_tvm hold it while they time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from ios_tvm.runtime import profiling
from ios_tvm.runtime.profiling import DEVICE_LOCK_ENV, exclusive_device

HOLDER = textwrap.dedent("""
    import json, sys, time
    from ios_tvm.runtime.profiling import exclusive_device
    spans = []
    for _ in range(3):
        with exclusive_device():
            with exclusive_device():  # reentrant: the inner context neither waits nor releases
                t0 = time.monotonic()
                time.sleep(0.15)
            time.sleep(0.05)
            spans.append((t0, time.monotonic()))
    print(json.dumps(spans))
""")


def test_processes_sharing_the_lock_never_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv(DEVICE_LOCK_ENV, str(tmp_path / "device.lock"))
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    spans = sorted(s for out, _ in outs for s in json.loads(out))
    assert len(spans) == 9
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # each span lies wholly before the next


def test_without_the_variable_the_lock_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(DEVICE_LOCK_ENV, raising=False)
    with exclusive_device():
        assert profiling.device_lock_depth() == 0
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_released_after_an_error(tmp_path, monkeypatch):
    import fcntl
    import os

    path = tmp_path / "device.lock"
    monkeypatch.setenv(DEVICE_LOCK_ENV, str(path))
    try:
        with exclusive_device():
            with exclusive_device():  # reentrant
                assert profiling.device_lock_depth() == 2
            raise ValueError("inside")
    except ValueError:
        pass
    assert profiling.device_lock_depth() == 0
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: another holder gets it at once
    finally:
        os.close(fd)


def test_timers_hold_the_lock_while_timing(tmp_path, monkeypatch, tiny_branches):
    """time_vm and the stage timer of the measured cost model time inside the lock."""
    import tvm

    import ios_tvm
    from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel

    monkeypatch.setenv(DEVICE_LOCK_ENV, str(tmp_path / "device.lock"))
    held = []
    real = profiling.exclusive_device

    def spy():
        held.append(True)
        return real()

    monkeypatch.setattr(profiling, "exclusive_device", spy)
    import ios_tvm.cost.timers as timers

    monkeypatch.setattr(timers, "exclusive_device", spy)
    mod, data = tiny_branches
    ex = ios_tvm.build(mod, "llvm")
    times = profiling.time_vm(ex, tvm.cpu(0), [data], number=1, repeat=2)
    assert len(times) == 2 and len(held) == 1
    graph = ios_tvm.extract_graph(mod, "llvm")
    cm = MeasuredCostModel("llvm", MeasureConfig(warmup=1, repeat=2, cache_dir=False, progress=False))
    assert cm.stage_latency(graph, ((0,),)) > 0
    assert len(held) == 2
    assert np.isfinite(times).all()
