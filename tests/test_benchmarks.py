"""The benchmark scripts run (CPU dry runs) and the report renders what they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert {"sequential_s", "greedy_s", "ios_concurrent_s", "ios_merge_s", "ios_both_s", "ios_both_budget_s"} <= set(row)
    assert row["planned_memory_bytes"]["ios_both_budget"] <= row["memory_budget"]["budget_bytes"]
    assert row["memory_budget"]["budget"] == "1.25x" and "planned memory vs sequential: sequential 1.00x" in p.stdout
    assert data["provenance"]["tvm"] and data["provenance"]["machine"]
    png = tmp_path / "speedups.png"
    results = sorted((ROOT / "benchmarks/results").glob("*.json"))
    p = _run(str(ROOT / "benchmarks/report.py"), str(out), *map(str, results), "--plot", str(png), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| squeezenet | ios_both |" in p.stdout and "### Search cost" in p.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_e2e_dry_run_of_a_transformer(tmp_path):
    """A transformer's rows (the reduced MoE, one layer of 8 tokens): IOS and its peers, TVM with
    CombineParallelMatmul among them, every output checked against sequential; the search's
    block size for the mixture's fan-out, the zoo sizes, recorded. (The PyTorch twins run on a
    GPU only: tests/test_transformers.py checks them against the zoo.)"""
    out = tmp_path / "e2e.json"
    p = _run(str(ROOT / "benchmarks/gpu_e2e.py"), "--target", "llvm", "--small", "--models", "moe", "--layers", "1",
             "--seq-len", "8", "--number", "1", "--repeat", "2", "--no-torch", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    row = json.loads(out.read_text())["models"]["moe"]
    assert {"sequential_s", "ios_both_s", "greedy_s", "tvm_cpm_sequential_s", "ios_merge_s"} <= set(row)
    assert row["failed"] == {} and row["max_block_size"] == 10
    assert row["zoo_kwargs"] == {"batch_size": 1, "small": True, "seq_len": 8, "num_layers": 1}

def _gpu_e2e_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_e2e", ROOT / "benchmarks/gpu_e2e.py")
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    return e2e


def test_e2e_records_a_failing_row_and_runs_the_others(tmp_path, monkeypatch, capsys):
    """A row that cannot be built (here: greedy's build raises) and a phase that fails (the other
    strategies: the merge search raises) are recorded with their reasons, the other rows are still
    checked and timed, a model that fails whole leaves the next one running, and the script exits
    non-zero so that on_gpu.sh's steps.tsv shows it."""
    import ios_tvm

    e2e = _gpu_e2e_module()
    real_build = ios_tvm.build

    def build(mod, target, schedule=None, **kw):
        if schedule is not None and schedule.meta.get("strategy") == "greedy":
            raise RuntimeError("planted: greedy cannot be built")
        return real_build(mod, target, schedule, **kw)

    def get(name, **kw):
        if name == "randwire":
            raise ValueError("planted: randwire cannot be made")
        return real_get(name, **kw)

    def optimize(mod, target, search=None, **kw):
        if search is not None and search.strategy == "merge":
            raise RuntimeError("planted: the merge search fails")
        return real_optimize(mod, target, search=search, **kw)

    real_get, real_optimize = e2e.models.get, ios_tvm.optimize
    monkeypatch.setattr(ios_tvm, "build", build)
    monkeypatch.setattr(ios_tvm, "optimize", optimize)
    monkeypatch.setattr(e2e.models, "get", get)
    out = tmp_path / "e2e.json"
    monkeypatch.setattr(sys, "argv", ["gpu_e2e.py", "--target", "llvm", "--small", "--models", "randwire",
                                      "squeezenet", "--number", "1", "--repeat", "1", "--no-torch", "--out", str(out)])
    assert e2e.main() == 1
    data = json.loads(out.read_text())["models"]
    assert data["randwire"]["error"] == "ValueError: planted: randwire cannot be made"
    row = data["squeezenet"]
    assert row["failed"] == {"greedy": "RuntimeError: planted: greedy cannot be built",
                             "strategies_phase": "RuntimeError: planted: the merge search fails"}
    assert "greedy_s" not in row and "greedy" not in row["planned_memory_bytes"]
    assert {"sequential_s", "ios_both_s"} <= set(row) and "ios_concurrent_s" not in row  # the phase's rows
    assert "greedy" not in row["measured_over_predicted"] and "ios_both" in row["measured_over_predicted"]
    printed = capsys.readouterr().out
    assert "squeezenet: row greedy FAILED" in printed and "randwire: FAILED" in printed
    assert data["squeezenet"]["complete"] is True and data["randwire"]["complete"] is False
    report = _run(str(ROOT / "benchmarks/report.py"), str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "| squeezenet | ios_both |" in report.stdout and "randwire |" not in report.stdout
    assert "- squeezenet greedy: failed: RuntimeError: planted" in report.stdout
    assert "- squeezenet strategies_phase: failed: RuntimeError: planted" in report.stdout
    assert "- randwire: ValueError: planted" in report.stdout


def test_e2e_stage_sums_by_cache_state(tmp_path, monkeypatch, tiny_branches):
    """The stages of a schedule re-timed hot and flushed: one sum per state and schedule, each
    the sum of that state's stage latencies, a merge stage timed as its merged kernel (a fake
    timer that knows the state, and the real one on the CPU)."""
    import ios_tvm
    from ios_tvm.core.schedule import Schedule
    from ios_tvm.cost.measure import MeasureConfig

    e2e = _gpu_e2e_module()
    mod, _ = tiny_branches
    graph = ios_tvm.extract_graph(mod, "llvm")
    convs = [v for v, n in enumerate(graph.nodes) if "conv" in n.kernel]
    rest = [v for v in range(len(graph)) if v not in convs]
    assert len(convs) == 2 and rest
    # the two convs merged (a schedule as the search writes one), and side by side
    merged = Schedule.from_stages(graph, [[convs], *[[[v]] for v in rest]], kinds=["merge"] + ["concurrent"] * len(rest))
    scheds = {"sequential": Schedule.sequential(graph), "ios_both": merged}
    config = MeasureConfig(warmup=1, repeat=3, cache_dir=tmp_path)

    class Fake:
        def __init__(self, target, config, database):
            assert config.progress is False and database == "db"
            self.scale = {"hot": 1.0, "flush": 10.0}[config.cache_state]

        def stage_latency(self, graph, groups):
            return self.scale * sum(len(g) for g in groups)

        def merge_latency(self, graph, nodes):
            return self.scale * 100 * len(nodes)

    monkeypatch.setattr(e2e, "MeasuredCostModel", Fake)
    sums = e2e.stage_sums(graph, "llvm", "db", scheds, config)
    assert sums == {"hot": {"sequential": len(graph), "ios_both": 200 + len(rest)},
                    "flush": {"sequential": 10 * len(graph), "ios_both": 10 * (200 + len(rest))}}
    monkeypatch.undo()
    from ios_tvm.ir.merge_plan import node_merges

    graph.merges = node_merges(mod, graph)  # as optimize(strategy="both") leaves it in gpu_e2e
    side_by_side = Schedule.from_stages(graph, [[[convs[0]], [convs[1]]], *[[[v]] for v in rest]])
    real = e2e.stage_sums(graph, "llvm", None, {**scheds, "side_by_side": side_by_side}, config)
    assert all(v > 0 for by in real.values() for v in by.values())


@pytest.mark.timing  # its tuning step runs to a wall-clock budget on every core: alone, not beside other tests
def test_gpu_script_dry_run(tmp_path):
    """``benchmarks/on_gpu.sh --dry-run``: the GPU machine's one command, on the CPU (llvm, the
    reduced squeezenet, a 30 s tuning budget): every step ends well and leaves its files."""
    import os
    import tarfile
    import xml.etree.ElementTree as ET

    from ios_tvm.compiler.databases import count_records, open_database

    out, pack = tmp_path / "run", tmp_path / "back" / "run.tgz"
    p = subprocess.run(["bash", str(ROOT / "benchmarks/on_gpu.sh"), "--dry-run", str(out)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=600,
                       env={**os.environ, "PYTHON": sys.executable, "IOS_TVM_PACK": str(pack)})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    steps = {row.split("\t")[0]: row.split("\t")[1:] for row in (out / "steps.tsv").read_text().splitlines()[1:]}
    assert {"gpu_tests", "gpu_timing_tests", "tune_float32", "e2e_squeezenet"} <= set(steps), steps
    with tarfile.open(pack) as tar:  # the whole folder in one file, as it stood at the end
        assert tar.extractfile("./steps.tsv").read() == (out / "steps.tsv").read_bytes()
        names = set(tar.getnames())
    want = {"./" + str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()}
    assert want <= names and "./e2e_squeezenet.json" in names, want - names
    assert [f.name for f in pack.parent.iterdir()] == ["run.tgz"]  # no part left behind
    assert all(rc == "0" for rc, _ in steps.values()), steps
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dry_run"] and prov["arch"] == "generic" and prov["models"] == ["squeezenet"] and prov["tvm"]
    assert set(prov["packages"]) >= {"xgboost", "pytest-xdist", "torch"}  # what the steps will find
    suite = ET.parse(out / "gpu_tests.xml").getroot().iter("testsuite").__next__()
    assert int(suite.get("skipped")) > 0 and int(suite.get("failures")) == int(suite.get("errors")) == 0
    assert "stopped by" in (out / "tune_float32.log").read_text()
    db = out / "tuning" / "generic" / "squeezenet"  # records only if a batch fitted the 30 s
    assert len(open_database(db, create=False)) == count_records(db)
    e2e = json.loads((out / "e2e_squeezenet.json").read_text())
    assert {"sequential_s", "ios_both_s"} <= set(e2e["models"]["squeezenet"])
    assert e2e["settings"]["database"] == str(db)
    # the vendor-kernel rows are asked for, and a CPU says why it has none
    assert e2e["settings"]["kernels"] == "['tvm', 'vendor']"
    assert e2e["models"]["squeezenet"]["skipped"] == {"kernels_vendor": "vendor kernels need a CUDA target"}


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


def test_bring_home_puts_a_gpu_run_where_the_repository_keeps_it(tmp_path, tiny_tuned, capsys):
    """A packed on_gpu.sh output (faked around a real tuned database): the database goes to
    tuning/<arch>/<model>/ without its logs, the e2e JSON to benchmarks/results/ named by GPU,
    model and date, a log of the steps beside it; a second run refuses to overwrite, a dry run's
    output is refused, a damaged database is refused before anything is copied."""
    import importlib.util
    import shutil
    import tarfile

    spec = importlib.util.spec_from_file_location("bring_home", ROOT / "benchmarks/bring_home.py")
    home = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(home)
    assert home.gpu_slug("NVIDIA H100 80GB HBM3") == "h100" and home.gpu_slug("NVIDIA H200") == "h200"

    work, _ = tiny_tuned
    out = tmp_path / "out"
    db = out / "tuning" / "sm_90" / "tiny"
    shutil.copytree(work, db, ignore=shutil.ignore_patterns("logs"))
    (out / "tuning" / "sm_90" / "logs").mkdir()
    (out / "tuning" / "sm_90" / "logs" / "task.log").write_text("log")
    (out / "provenance.json").write_text(json.dumps({"gpu": "NVIDIA H100 80GB HBM3", "driver": "580", "tvm": "0.27",
                                                     "arch": "sm_90", "dry_run": False}))
    (out / "steps.tsv").write_text("step\trc\tseconds\ngpu_tests\t0\t50\n")
    (out / "gpu_tests.log").write_text("....\n7 passed, 2 skipped in 50.1s\n")
    (out / "e2e_tiny.json").write_text(json.dumps({"models": {}}))
    pack = tmp_path / "on_gpu.tgz"
    with tarfile.open(pack, "w:gz") as tar:
        tar.add(out, arcname=".")
    repo = tmp_path / "repo"
    written = home.bring_home(pack, repo, date="2026-12-01")
    got = {str(p.relative_to(repo)) for p in written}
    dbs = {f"tuning/sm_90/tiny/{f.name}" for f in db.iterdir()}
    assert "tuning/sm_90/tiny/database_tuning_record.json" in dbs
    assert got == dbs | {"benchmarks/results/gpu_e2e_h100_tiny_2026-12-01.json",
                         "benchmarks/results/on_gpu_h100_2026-12-01.log"}
    assert (repo / "tuning/sm_90/tiny/database_tuning_record.json").read_bytes() == \
        (work / "database_tuning_record.json").read_bytes()
    log = (repo / "benchmarks/results/on_gpu_h100_2026-12-01.log").read_text()
    assert "gpu_tests\t0\t50" in log and "gpu_tests.log: 7 passed, 2 skipped" in log
    message = capsys.readouterr().out.split("suggested commit message:")[1]
    assert "gpu NVIDIA H100 80GB HBM3, driver 580" in message and "tuning/sm_90: tiny" in message
    with pytest.raises(home.BringHomeError, match="would overwrite"):
        home.bring_home(out, repo, date="2026-12-01")
    assert home.main([str(out), "--date", "2026-12-01", "--repo", str(repo)]) == 2
    home.bring_home(out, repo, date="2026-12-01", force=True)
    prov = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**prov, "dry_run": True}))
    with pytest.raises(home.BringHomeError, match="dry run"):
        home.bring_home(out, repo, date="2026-12-02")
    (out / "provenance.json").write_text(json.dumps(prov))
    (db / "database_tuning_record.json").write_text('["not a record"]\n{broken')
    assert home.main([str(out), "--date", "2026-12-03", "--repo", str(repo)]) == 2
    assert not (repo / "benchmarks/results/gpu_e2e_h100_tiny_2026-12-03.json").exists()
    assert home.main([str(tmp_path / "nothing"), "--repo", str(repo)]) == 2


def test_report_shows_which_cache_state_predicts_the_run(tmp_path):
    """gpu_e2e's measured / stage-sum ratios per cache state become one table row per schedule."""
    row = {"sequential_s": [1e-3, 1e-3], "ios_both_s": [8e-4, 8e-4], "complete": True,
           "measured_over_stage_sum": {"hot": {"sequential": 1.31, "ios_both": 1.4},
                                       "flush": {"sequential": 0.97, "ios_both": 1.02}}}
    f = tmp_path / "e2e.json"
    f.write_text(json.dumps({"provenance": {"gpu": "NVIDIA H100"}, "models": {"inception_v3": row}}))
    p = _run(str(ROOT / "benchmarks/report.py"), str(f), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| inception_v3 | sequential | 1.31x | 0.97x |" in p.stdout
    assert "| inception_v3 | ios_both | 1.40x | 1.02x |" in p.stdout
    f.write_text(json.dumps({"provenance": {}, "models": {"squeezenet": {"sequential_s": [1e-3]}}}))
    assert "flushed" not in _run(str(ROOT / "benchmarks/report.py"), str(f), cwd=tmp_path).stdout  # none measured


def test_search_cost_checks_the_fast_search_against_the_direct_one(tmp_path):
    out = tmp_path / "search.json"
    p = _run(str(ROOT / "benchmarks/search_cost.py"), "--models", "squeezenet", "--onnx", "--reference",
             "--json", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["identical"] is True and row["states"] == 70 and row["stages"] == 71
    assert 0 < row["distinct_stages"] <= row["stages"] and row["measure_estimate_s"] > 0
    assert len(row["load_avg_1min"]) == 2 and row["budgeted_search_s"] > 0
    assert row["budgeted_predicted_ms"] >= row["predicted_ms"]
