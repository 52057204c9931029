"""Every mistake a user can make on the command line ends in one ``ios-tvm: error:`` line and
exit status 2, before any long work; bugs show a traceback and ask to be reported (exit 1);
Ctrl-C is one line and exit status 130.

These run ``ios_tvm.cli.main`` in the test process (TVM is imported once, so each case takes
milliseconds to a few seconds); ``tests/test_cli.py`` runs the command in subprocesses.
"""

from __future__ import annotations

import json
import signal
import sys

import numpy as np
import pytest

import ios_tvm
from ios_tvm import cli, models

onnx = pytest.importorskip("onnx", reason="the test extra installs onnx")
from onnx import TensorProto, helper, numpy_helper

CUDA = {"kind": "cuda", "arch": "sm_90"}


def _conv_model(shape: list | None) -> bytes:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape and [shape[0], 4, 32, 32])],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _scalar_model(declared: bool) -> bytes:
    """``relu(conv(x)) * s`` with ``s`` a scalar input: declared rank 0, or with no shape at all."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["y"])]
    graph = helper.make_graph(nodes, "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                                helper.make_tensor_value_info("s", TensorProto.FLOAT,
                                                                              [] if declared else None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _nonzero_model() -> bytes:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [4, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs of every kind, and schedules to misuse."""
    d = tmp_path_factory.mktemp("mistakes")
    static = _conv_model([1, 3, 32, 32])
    paths = {"dir": d, "typo": d / "no_such_db", "missing": d / "none.json"}
    for name, blob in [("notonnx.onnx", b"hello\n"), ("half.onnx", static[: len(static) // 2]), ("empty.onnx", b""),
                       ("static.onnx", static), ("dyn.onnx", _conv_model(["N", 3, 32, 32])),
                       ("noshape.onnx", _conv_model(None)),
                       ("nonzero.onnx", _nonzero_model()), ("binary.json", bytes(range(256))),
                       ("scalar.onnx", _scalar_model(True)), ("scalar_noshape.onnx", _scalar_model(False)),
                       ("model.pb", static), ("notjson.json", b"{stages: [")]:
        (d / name).write_bytes(blob)
        paths[name.split(".")[0]] = d / name
    (d / "folder.onnx").mkdir()
    paths["folder"] = d / "folder.onnx"
    (d / "empty_db").mkdir()
    paths["empty_db"] = d / "empty_db"
    mod = models.get("squeezenet", small=True)
    cuda = ios_tvm.optimize(mod, CUDA)
    paths["cuda_sched"] = cuda.save(d / "cuda.json")
    data = cuda.to_dict()
    data["stages"][0]["latency_s"] = -0.9850106
    (d / "negative.json").write_text(json.dumps(data))
    paths["negative"] = d / "negative.json"
    data["stages"][0]["latency_s"] = 1e300
    (d / "huge.json").write_text(json.dumps(data))
    paths["huge"] = d / "huge.json"
    for f in ("database_workload.json", "database_tuning_record.json"):  # a tuning root with sm_80 databases
        (d / "sm80_root" / "sm_80" / "m").mkdir(parents=True, exist_ok=True)
        (d / "sm80_root" / "sm_80" / "m" / f).write_text("")
    paths["sm80_root"] = d / "sm80_root"
    foreign = ios_tvm.optimize(models.get("googlenet", small=True), "llvm")
    foreign.meta["model"] = {"name": "googlenet", "inputs": {"data": [1, 3, 32, 32]}}  # as ios-tvm optimize records
    paths["foreign"] = foreign.save(d / "googlenet.json")
    paths["lib"] = d / "lib.so"
    return paths


def run_cli(capfd, *args: str) -> tuple[int, str, str]:
    """``ios-tvm ARGS`` in this process: (exit status, stdout, stderr), C++ output included."""
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse's mistakes
        rc = exc.code
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_error(rc: int, err: str, match: str) -> str:
    """Exit status 2, exactly one ``ios-tvm: error:`` line (containing ``match``), no traceback,
    and nothing on stderr that is not an ``ios-tvm:`` line (no stray TVM warnings)."""
    errors = [line for line in err.splitlines() if line.startswith("ios-tvm: error:")]
    assert rc == 2, err
    assert len(errors) == 1 and match in errors[0], err
    assert "Traceback" not in err and all(line.startswith("ios-tvm: ") for line in err.splitlines()), err
    return errors[0]


MISTAKES = [
    # files that are not ONNX models
    (("optimize", "{notonnx}"), "is not an ONNX model"),
    (("optimize", "{half}"), "is not an ONNX model"),
    (("optimize", "{empty}"), "holds no graph"),
    (("optimize", "{folder}"), "is a directory"),
    (("optimize", "{dir}/missing.onnx"), "no ONNX file"),
    # ONNX input shapes
    (("optimize", "{dyn}", "--target", "llvm"), "give them, e.g. --input-shape x=1,3,32,32"),
    (("optimize", "{dyn}", "--target", "llvm", "--input-shape", "y=1,3,32,32"), "names y, which is not an input"),
    (("optimize", "{static}", "--target", "llvm", "--input-shape", "x=1,3,32"), "has 3 dimensions"),
    (("optimize", "{static}", "--target", "llvm", "--input-shape", "x=0,3,32,32"), "every dimension must be >= 1"),
    (("optimize", "{static}", "--target", "llvm", "--input-shape", "x=1,3,64,64"), "is fixed to 32"),
    (("optimize", "{static}", "--target", "llvm", "--input-shape", "x"), "wants NAME=D0,D1,..."),
    (("optimize", "{static}", "--target", "llvm", "--batch-size", "2"), "--batch-size applies to zoo models only"),
    (("optimize", "{nonzero}", "--target", "llvm"), "depends on values (NonZero"),
    (("optimize", "{noshape}", "--target", "llvm"), "declares no shape, and ios_tvm schedules static shapes"),
    # zoo input shapes
    (("optimize", "squeezenet", "--small", "--input-shape", "data=0,3,64,64"), "every dimension must be >= 1"),
    (("optimize", "squeezenet", "--small", "--input-shape", "data=1,3,64"), "of shape (N, 3, S, S)"),
    (("optimize", "squeezenet", "--small", "--input-shape", "x=1,3,64,64"), "has one input, data"),
    (("optimize", "squeezenet", "--input-shape", "data=2,3,64,64", "--batch-size", "1"), "disagree"),
    (("optimize", "squeezenet", "--image-size", "10", "--target", "llvm"), "needs image_size >= 64"),
    (("optimize", "squeezenet", "--batch-size", "0"), "--batch-size: must be >= 1"),
    # outputs, repeats, limits: refused before any work
    (("optimize", "squeezenet", "--small", "--target", "llvm", "-o", "{dir}"), "is a directory: give a file name"),
    (("build", "squeezenet", "--small", "--target", "llvm", "-o", "{dir}"), "is a directory: give a file name"),
    (("bench", "squeezenet", "--small", "--target", "llvm", "--repeat", "0"), "--repeat: must be >= 1"),
    (("demo", "--repeat", "0"), "--repeat: must be >= 1"),
    (("demo", "--stages", "-1"), "--stages: must be >= 0"),
    (("optimize", "squeezenet", "--small", "-r", "0"), "-r/--max-group-size: must be >= 1"),
    (("optimize", "squeezenet", "--small", "-s", "x"), "expected an integer"),
    (("optimize", "squeezenet", "--small", "--variants", "-1"), "--variants: must be >= 0"),
    (("optimize", "squeezenet", "--small", "--cost-model", "magic"), "invalid choice: 'magic'"),
    # targets and models
    (("optimize", "squeezenet", "--small", "--target", "opencl"), "cuda and llvm"),
    (("optimize", "squeezenet", "--small", "--target", "{{bad"), "looks like JSON"),
    (("optimize", "squeezenet", "--small", "--target", "no_such_target"), "not a valid TVM target"),
    (("optimize", "resnet"), "unknown model 'resnet'"),
    # tuning databases: a typo is not an empty database
    (("optimize", "squeezenet", "--small", "--target", "llvm", "--database", "{typo}"), "no tuning database at"),
    (("optimize", "squeezenet", "--small", "--target", "llvm", "--cost-model", "measure", "--database", "{typo}"),
     "no tuning database at"),
    (("build", "squeezenet", "--small", "--target", "llvm", "--database", "{empty_db}"), "no database_workload.json"),
    (("optimize", "squeezenet", "--small", "--target", "llvm", "--variants", "2", "--database", "none"),
     "tune first (ios_tvm.tune)"),
    # schedules
    (("show", "{missing}"), "no schedule file"),
    (("show", "{dir}"), "is a directory, not a schedule file"),
    (("show", "{binary}"), "not text"),
    (("show", "{negative}"), "latency_s of stage 0 is -0.9850106"),
    (("show", "{cuda_sched}", "--png", "{dir}/s.unknown"), "name the picture with one of the extensions"),
    (("build", "squeezenet", "--small", "--target", "llvm", "--schedule", "{cuda_sched}", "-o", "{lib}"),
     ("was made for a cuda target (sm_90) and this build is for llvm: its stages and predicted latencies are for "
      "other hardware; re-create it for this model (Python: ios_tvm.optimize(mod, target); command line: "
      "ios-tvm optimize MODEL -o FILE)")),
    (("build", "squeezenet", "--small", "--target", "llvm", "--schedule", "{foreign}"),
     "(made for googlenet, inputs data [1, 3, 32, 32]): this schedule was made for another model"),
    # issue 22: what a newcomer tripped over
    (("bench", "squeezenet", "--small", "--batch-size", "1000000000", "--target", "llvm"),
     "does not fit in the memory of this machine: its tensor data [1000000000, 3, 64, 64] float32 alone takes 44.7 TiB"),
    (("optimize", "squeezenet", "--small", "--batch-size", "1000000000000", "--target", "llvm"),
     "lower --batch-size"),
    (("build", "squeezenet", "--small", "--batch-size", "1000000", "--target", '{{"kind": "cuda", "arch": "sm_89"}}',
      "-o", "{lib}"), "does not fit in the memory of the L4 (sm_89)"),
    (("optimize", "{dyn}", "--target", "llvm", "--input-shape", "x=100000000,3,32,32"),
     "give smaller dimensions with --input-shape"),
    (("optimize", "squeezenet", "--small", "--target", '{{"kind":"cuda","arch":"sm_999"}}'),
     "arch 'sm_999': not a CUDA architecture"),
    (("optimize", "{scalar_noshape}", "--target", "llvm"), "declares no shape, and ios_tvm schedules static shapes: "
                                                           "give them, e.g. --input-shape s=D0,D1,... (or s= for a scalar)"),
    (("optimize", "{scalar}", "--target", "llvm", "--input-shape", "s=1"),
     "has 1 dimension; input s of"),
    (("optimize", "{static}", "--target", "llvm", "--input-shape", "x=1,3,a"), "(e.g. data=1,3,224,224; NAME= for a scalar)"),
    (("show", "{huge}"), "latency_s of stage 0 is 1e+300 s; no stage of a model runs for more than 3600 s"),
    (("show", "{notjson}"), "notjson.json: corrupt schedule file: not JSON"),
    (("show", "{negative}"), "negative.json: corrupt schedule: latency_s"),
    (("show", "{cuda_sched}", "--png", "{static}/g.png"), "--png {static}/g.png: {static} is a file, not a folder"),
    (("optimize", "squeezenet", "--small", "--target", "llvm", "-o", "{static}/s.json"), "is a file, not a folder"),
    (("optimize", "{model}", "--target", "llvm"), "model.pb is a file, not a zoo model, and ios_tvm reads model files in "
                                               "ONNX format, named *.onnx: if it is an ONNX model, name it model.onnx"),
    (("build", "{dir}/nothere/m.pt", "--target", "llvm"), "is neither a zoo model"),
    (("tune", "{model}", "--target", "llvm"), "model.pb is a file, not a zoo model"),
    (("models", "resnet"), "unknown model 'resnet'"),
    (("models", "{static}"), "goes straight to optimize"),
    (("optimize", "squeezenet", "--small", "--target", "llvm", "--database", "{sm80_root}"),
     "holds tuning databases for sm_80, none for this target's generic"),
    (("build", "squeezenet", "--small", "--target", "llvm", "--database", "{sm80_root}/sm_80"),
     "holds tuning databases for sm_80, none for this target's generic"),
]


@pytest.mark.parametrize("args, match", MISTAKES, ids=[" ".join(a)[:60] for a, _ in MISTAKES])
def test_mistakes_are_one_error_line(files, capfd, args, match):
    args = [a.format(**files) for a in args]
    rc, out, err = run_cli(capfd, *args)
    assert_one_error(rc, err, match.format(**files))
    assert out == ""
    assert not any(w in err for w in ("building", "timing")), "refused after work it could have skipped"
    if "-o" in args and args[args.index("-o") + 1] == str(files["dir"]):
        assert "searching" not in err and "loading" not in err, "a bad output path is refused before any work"


def test_mistakes_leave_nothing_behind(files, capfd):
    """A mistyped database is not created, an empty one not filled, a refused build writes no
    library and prints no predictions of the other target."""
    run_cli(capfd, "optimize", "squeezenet", "--small", "--target", "llvm", "--cost-model", "measure",
            "--database", files["typo"])
    rc, out, err = run_cli(capfd, "build", "squeezenet", "--small", "--target", "llvm", "--schedule",
                           files["cuda_sched"], "-o", files["lib"])
    assert rc == 2 and out == "" and "latency" not in err
    assert not files["typo"].exists() and not list(files["empty_db"].iterdir()) and not files["lib"].exists()


def test_zoo_input_shape_is_applied(files, capfd, tmp_path):
    out = tmp_path / "b2.json"
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--input-shape", "data=2,3,64,64", "--target", "llvm",
                         "-o", out)
    assert rc == 0, err
    meta = json.loads(out.read_text())["meta"]["model"]
    assert meta["batch_size"] == 2 and meta["image_size"] == 64 and meta["inputs"]["data"] == [2, 3, 64, 64]
    rc, _, err = run_cli(capfd, "optimize", "squeezenet", "--small", "--input-shape", "data=2,3,64,64",
                         "--batch-size", "2", "--target", "llvm", "-o", out)
    assert rc == 0, err  # the same batch size twice is no conflict
    # an ONNX file's open batch dimension, given on the command line
    rc, _, err = run_cli(capfd, "optimize", files["dyn"], "--input-shape", "x=3,3,32,32", "--target", "llvm",
                         "-o", out)
    assert rc == 0, err
    assert json.loads(out.read_text())["meta"]["model"]["inputs"]["x"] == [3, 3, 32, 32]


def test_onnx_importer_failures_are_the_models(files, capfd):
    """A shape the file does not declare, of the wrong rank: TVM's importer fails, and says so in
    one line (besides TVM's own C++ warning about the builder it left behind)."""
    rc, out, err = run_cli(capfd, "optimize", files["noshape"], "--target", "llvm", "--input-shape", "x=1,3,32")
    errors = [line for line in err.splitlines() if line.startswith("ios-tvm: error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err and out == ""
    assert "TVM's ONNX importer failed on" in errors[0] and "with --input-shape x=1,3,32 (" in errors[0]


def test_missing_optional_packages_name_the_extra(files, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc, _, err = run_cli(capfd, "show", files["cuda_sched"], "--png", files["dir"] / "s.png")
    assert_one_error(rc, err, "pip install matplotlib")
    monkeypatch.setitem(sys.modules, "onnx", None)
    rc, _, err = run_cli(capfd, "optimize", files["static"], "--target", "llvm")
    assert_one_error(rc, err, "pip install onnx")


def test_bugs_show_a_traceback_and_ask_to_be_reported(capfd, monkeypatch):
    for exc in (ZeroDivisionError("boom"), RuntimeError("a plain RuntimeError is ours, not the user's"),
                ValueError("so is a plain ValueError"), ImportError("and an ImportError")):
        def broken(exc=exc):
            raise exc

        monkeypatch.setattr(models, "names", broken)
        rc, _, err = run_cli(capfd, "models")
        assert rc == 1, err
        assert "Traceback" in err and str(exc) in err and "ios-tvm: error:" not in err
        last = err.strip().splitlines()[-1]
        assert "this is a bug in ios_tvm" in last and "Please report it" in last and "tvm 0.27" in last


def test_a_broken_memory_plan_is_a_bug_on_the_command_line(capfd, monkeypatch):
    """The CLI builds with keep-alive, so a MemoryPlanError there is ios_tvm's bug, not the user's."""
    from ios_tvm.errors import MemoryPlanError

    def broken():
        raise MemoryPlanError("groups 0 and 1 of stage 3 share storage")

    monkeypatch.setattr(models, "names", broken)
    rc, _, err = run_cli(capfd, "models")
    assert rc == 1 and "Traceback" in err and "this is a bug in ios_tvm" in err.splitlines()[-1]


def test_ctrl_c_is_one_line(capfd, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    def converted():  # SIGINT came, and TVM turned its KeyboardInterrupt into another error
        from ios_tvm.cli.progress import on_interrupt

        try:
            on_interrupt(signal.SIGINT, None)  # what the command's SIGINT handler does
        except KeyboardInterrupt:
            raise RuntimeError("") from None

    for fn in (interrupted, converted):
        monkeypatch.setattr(models, "names", fn)
        rc, _, err = run_cli(capfd, "models")
        assert rc == 130 and err.splitlines() == ["ios-tvm: interrupted while starting."], err


def test_database_reads_never_create(tmp_path):
    from ios_tvm.compiler.databases import open_database, resolve_database
    from ios_tvm.errors import DatabaseError

    with pytest.raises(DatabaseError, match="no directory"):
        resolve_database(tmp_path / "typo", "llvm")
    with pytest.raises(DatabaseError, match="no database_workload.json"):
        resolve_database(str(tmp_path), "llvm")
    assert not (tmp_path / "typo").exists() and not list(tmp_path.iterdir())
    (tmp_path / "database_workload.json").write_text("{not json\n")  # damaged, not cut short: kept as it is
    (tmp_path / "database_tuning_record.json").write_text("")
    with pytest.raises(DatabaseError, match="cannot be read"):
        resolve_database(str(tmp_path), "llvm")
    assert (tmp_path / "database_workload.json").read_text() == "{not json\n"
    open_database(tmp_path / "new")  # tuning creates its database
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["database_tuning_record.json",
                                                                    "database_workload.json"]
    assert resolve_database(str(tmp_path / "new"), "llvm") is not None


def test_schedule_target_check(files):
    from ios_tvm.core.schedule import Schedule
    from ios_tvm.errors import ScheduleMismatchError

    graph = ios_tvm.extract_graph(models.get("squeezenet", small=True), "llvm")
    with pytest.raises(ScheduleMismatchError, match="made for a cuda target"):
        Schedule.load(files["cuda_sched"], graph, target="llvm")
    assert Schedule.load(files["cuda_sched"], graph).meta["target"]  # no target given: the API may cross
    assert Schedule.load(files["cuda_sched"], graph, target={"kind": "cuda", "arch": "sm_90"}).stages
    old = json.loads(files["cuda_sched"].read_text())
    del old["meta"]["target"]  # files from before the target was recorded still load
    assert Schedule.from_json(json.dumps(old), graph, target="llvm").stages
