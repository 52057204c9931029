"""The runtime side of the vendor kernels without a GPU: where cuDNN / cuBLASLt are looked for
(src/vendor_lib.cc), the messages when they are missing, typed errors of the calls, the CLI, and
the analytic model's order of vendor and TVM kernels. Library look-ups run in subprocesses (a
library once opened stays opened), against small stand-in libraries built here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi

from ios_tvm import cli, models
from ios_tvm.cost.analytic import AnalyticCostModel
from ios_tvm.cost.vendor import VendorAnalyticCostModel
from ios_tvm.errors import MissingDependencyError, TargetError
from ios_tvm.ir.graph import extract_graph
from ios_tvm.ir.vendor import plan_sites
from ios_tvm.runtime import vendor

SM90 = {"kind": "cuda", "arch": "sm_90"}


def stand_in(directory: Path, soname: str, symbol: str, version: int) -> Path:
    """A shared library named ``soname`` whose ``symbol()`` returns ``version`` (what the lookup checks)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libraries")
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f"{symbol}.c"
    src.write_text(f"#include <stddef.h>\nsize_t {symbol}(void) {{ return {version}; }}\n")
    out = directory / soname
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out), str(src)], check=True)
    return out


def lookup(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (after ``import ios_tvm.runtime.vendor as v``)."""
    full = {**os.environ, **(env or {})}
    full.pop("IOS_TVM_VENDOR_LIB_PATH", None) if env is None or "IOS_TVM_VENDOR_LIB_PATH" not in env else None
    prog = "import ios_tvm.runtime.vendor as v\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", prog], env=full, capture_output=True, text=True, timeout=120)


def test_lookup_order_env_then_packages(tmp_path):
    """$IOS_TVM_VENDOR_LIB_PATH first (folders and files, ':'-separated), then the Python packages'
    nvidia/*/lib folders (found on sys.path without importing anything)."""
    cudnn = stand_in(tmp_path / "env", "libcudnn.so.9", "cudnnGetVersion", 91000)
    lt = stand_in(tmp_path / "site" / "nvidia" / "cu13" / "lib", "libcublasLt.so.13", "cublasLtGetVersion", 130000)
    decoy = stand_in(tmp_path / "decoy", "libcudnn.so.9", "cudnnGetVersion", 92000)
    r = lookup(f"""
        import sys
        sys.path.insert(0, {str(tmp_path / 'site')!r})
        dirs = v.package_dirs()
        assert {str(lt.parent)!r} in dirs, dirs
        v.register_search_dirs([{str(decoy.parent)!r}, {str(lt.parent)!r}])
        print(v.find_library('cudnn'))
        print(v.find_library('cublaslt'))
    """, {"IOS_TVM_VENDOR_LIB_PATH": f"/nonexistent:{cudnn}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"('{cudnn}', 91000)", f"('{lt}', 130000)"]


def test_a_loaded_copy_is_used_and_old_versions_are_refused(tmp_path):
    """A copy the process already loaded (as PyTorch loads its own) wins over the search; where no
    cuBLASLt 13 is found, PyTorch-for-CUDA-12's cuBLASLt 12 is taken; a library of another major
    version is refused, saying which is needed."""
    lt12 = stand_in(tmp_path / "torch", "libcublasLt.so.12", "cublasLtGetVersion", 120800)
    stand_in(tmp_path / "old", "libcudnn.so.9", "cudnnGetVersion", 8907)
    r = lookup(f"""
        import ctypes
        ctypes.CDLL({str(lt12)!r})
        v.register_search_dirs([])
        print(v.find_library('cublaslt'))
        try:
            v.find_library('cudnn')
        except v.MissingDependencyError as err:
            print('ERR', err)
    """, {"IOS_TVM_VENDOR_LIB_PATH": str(tmp_path / "old")})
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.split("\n")[:2]
    assert first == f"('{lt12}', 120800)"
    assert "is version 8907" in second and "needs cuDNN 9" in second and "pip install nvidia-cudnn-cu13" in second


def test_a_missing_library_says_what_to_install():
    r = lookup("""
        import ctypes
        v.register_search_dirs([])
        try:
            ctypes.CDLL('libcublasLt.so.13')
            print('SYSTEM', v.find_library('cublaslt'))
        except OSError:  # not on the system's library path either
            try:
                v.find_library('cublaslt')
            except v.MissingDependencyError as err:
                print('ERR', err)
    """, {"IOS_TVM_VENDOR_LIB_PATH": "/nonexistent/folder"})
    assert r.returncode == 0, r.stderr
    if r.stdout.startswith("SYSTEM"):  # a machine with cuBLAS installed system-wide finds it there
        assert "libcublasLt.so.13" in r.stdout
        return
    msg = r.stdout
    assert msg.startswith("ERR ios_tvm: cuBLASLt 13 (libcublasLt.so.13) was not found")
    for part in ("$IOS_TVM_VENDOR_LIB_PATH (/nonexistent/folder)", "pip install nvidia-cublas",
                 "pip install 'ios-tvm[vendor]'", "kernels='tvm'"):
        assert part in msg


def test_vendor_calls_on_cpu_tensors_are_typed_errors():
    x = tvm.runtime.tensor(np.zeros((1, 4, 8, 8), "float32"))
    w = tvm.runtime.tensor(np.zeros((4, 4, 3, 3), "float32"))
    y = tvm.runtime.tensor(np.zeros((1, 4, 8, 8), "float32"))
    ws = tvm.runtime.tensor(np.zeros((256,), "uint8"))
    conv = tvm_ffi.get_global_func("ios_tvm.vendor.conv2d")
    ints = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    expected = TargetError if vendor.compiled() else MissingDependencyError
    with pytest.raises(expected, match="CUDA device|no vendor kernels"):
        conv(x, w, *ints, y, ws)
    if vendor.compiled():
        with pytest.raises(TypeError, match="arguments"):
            conv(x, w, y, ws)
        matmul = tvm_ffi.get_global_func("ios_tvm.vendor.matmul")
        with pytest.raises(TargetError, match="CUDA device"):
            matmul(x, w, 0, 0, 0, y, ws)


def test_check_reports_the_libraries_found():
    if not vendor.compiled():
        with pytest.raises(MissingDependencyError, match="ios-tvm\\[vendor\\]"):
            vendor.check()
        return
    if not any("cudnn" in d for d in vendor.package_dirs()):
        pytest.skip("nvidia-cudnn-cu13 is not installed here (pip install 'ios-tvm[vendor]')")
    found = vendor.check()
    assert found["cudnn"][1] >= 90000 and 130000 <= found["cublaslt"][1] < 140000


def test_cli_kernels_on_a_cpu_target_is_one_error_line(capfd):
    try:
        rc = cli.main(["optimize", "squeezenet", "--small", "--target", "llvm", "--kernels", "vendor"])
    except SystemExit as exc:
        rc = exc.code
    out, err = capfd.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("ios-tvm: error: --kernels vendor runs cuDNN / cuBLASLt kernels and needs a CUDA target")


def test_analytic_orders_vendor_and_tvm_kernels():
    mod = models.get("inception_v3")  # full size: convolutions from 1 to 300 MFLOP
    graph = extract_graph(mod, SM90)
    sites = plan_sites(mod, graph, SM90)
    base = AnalyticCostModel.for_target(SM90)
    with_v = VendorAnalyticCostModel(base.device, sites)
    big = max(sites, key=lambda v: graph.nodes[v].flops)
    assert with_v.kernel_times(graph, big)[0] < base.kernel_times(graph, big)[0] / 2  # untuned TVM convs are slow
    tiny = min(sites, key=lambda v: graph.nodes[v].flops)
    assert with_v.kernel_times(graph, tiny)[0] > base.kernel_times(graph, tiny)[0]  # a vendor call costs more to launch
    tf32 = VendorAnalyticCostModel(base.device, sites, tf32=True)
    assert tf32.kernel_times(graph, big)[0] < with_v.kernel_times(graph, big)[0]
    note = with_v.prediction_note()["known_error"]
    assert "vendor kernels" in note and "not yet measured" in note
