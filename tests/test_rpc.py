"""Stage measurement through TVM's RPC tracker: a tracker and two RPC servers on 127.0.0.1,
measurement spread over both, the same schedule as local measurement under the same costs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

import ios_tvm
from ios_tvm import models, runtime
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.cost.remote import RPCConfig

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (in the test extra)")
KEY = "ios-tvm-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracker():
    from tvm import rpc

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                               "--port", str(port), "--port-end", str(port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            base = _free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(base),
                 "--port-end", str(base + 50), "--tracker", f"127.0.0.1:{port}", "--key", KEY,
                 "--load-library", runtime.library_path()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 90
        while True:  # both servers registered and free
            try:
                info = rpc.connect_tracker("127.0.0.1", port).summary()
                if info["queue_info"].get(KEY, {}).get("free", 0) >= 2:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.time() > deadline:
                pytest.fail("the loopback RPC tracker and servers did not come up within 90 s")
            time.sleep(0.5)
        yield port
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)


def _cfg(cache, **kw):
    return MeasureConfig(warmup=1, repeat=2, cache_dir=cache, progress=False, **kw)


def test_rpc_measurement_matches_local(tracker, tmp_path, monkeypatch):
    graph = ios_tvm.extract_graph(models.get("squeezenet", small=True), "llvm")
    rpc_cfg = RPCConfig("127.0.0.1", tracker, KEY, sessions=2)
    remote = MeasuredCostModel("llvm", _cfg(tmp_path / "remote", rpc=rpc_cfg))
    ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=remote, search=ios_tvm.SearchConfig(strategy="concurrent"))
    assert remote.measured > 0 and len(remote.timer.sessions) == 2
    # cold-cache samples over RPC (the servers hold both sessions: reuse them): flush buffers on the server
    import ios_tvm.cost.remote as remote_mod

    made = []
    real_flush = remote_mod.flush_buffers
    monkeypatch.setattr(remote_mod, "flush_buffers", lambda n, dev: made.append((n, dev)) or real_flush(n, dev))
    remote.timer.flush_before_samples(1 << 20)
    assert len(remote.timer.time(((0,), (1,)), worker=1)) == 2
    assert made == [(1 << 20, remote.timer.sessions[1].device)]  # buffers on the server of session 1, made once
    remote.timer.time(((0,),), worker=1)
    assert len(made) == 1
    local = MeasuredCostModel("llvm", _cfg(tmp_path / "local"))
    ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=local, search=ios_tvm.SearchConfig(strategy="concurrent"), end_to_end=False)
    files = {}
    for side in ("remote", "local"):
        (f,) = (tmp_path / side).glob("stages-*.json")
        files[side] = f
    data = {side: json.loads(f.read_text()) for side, f in files.items()}
    assert data["remote"]["entries"].keys() == data["local"]["entries"].keys()  # the same stages
    assert data["remote"]["context"]["device"] == f"rpc:{KEY}"
    # the same (deterministic) costs on both sides give the same schedule
    for side, f in files.items():
        entries = data[side]["entries"]
        data[side]["entries"] = {k: [1e-6 * (1 + int(k[:6], 16) % 97)] for k in entries}
        f.write_text(json.dumps(data[side]))
    again_remote = MeasuredCostModel("llvm", _cfg(tmp_path / "remote", rpc=rpc_cfg))
    again_local = MeasuredCostModel("llvm", _cfg(tmp_path / "local"))
    cfg = ios_tvm.SearchConfig(strategy="concurrent")
    a = ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=again_remote, search=cfg)
    b = ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=again_local, search=cfg, end_to_end=False)
    assert again_remote.measured == again_local.measured == 0
    assert a.as_lists() == b.as_lists() and a.latency == pytest.approx(b.latency)


def test_unreachable_tracker_is_a_clear_error(tmp_path):
    graph = ios_tvm.extract_graph(models.get("squeezenet", small=True), "llvm")
    cm = MeasuredCostModel("llvm", _cfg(tmp_path, rpc=RPCConfig("127.0.0.1", _free_port(), KEY)))
    with pytest.raises(RuntimeError, match="cannot reach the RPC tracker"):
        ios_tvm.optimize(graph.source, "llvm", graph=graph, cost_model=cm)
