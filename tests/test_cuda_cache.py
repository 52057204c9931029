"""The compiled-kernel cache (ios_tvm.cuda_cache): a CUDA source compiled once per content."""

from __future__ import annotations

import shutil

import pytest
import tvm
import tvm_ffi

from ios_tvm.compiler import cuda_cache
from ios_tvm.ir.tvm_private import CUDA_COMPILE_CALLBACK

KERNEL = 'extern "C" __global__ void ios_test_kernel(float* x) { x[threadIdx.x] *= 2.0f; }\n'


@pytest.fixture
def fake_compiler():
    """TVM's callback replaced by a counting fake for the test (and put back afterwards)."""
    import tvm.support.nvcc  # noqa: F401

    cuda_cache.disable()
    real = tvm_ffi.get_global_func(CUDA_COMPILE_CALLBACK)
    calls = []

    def fake(code):
        calls.append(str(code))
        return b"binary of " + str(code).encode()

    tvm_ffi.register_global_func(CUDA_COMPILE_CALLBACK, fake, override=True)
    yield calls
    cuda_cache.disable()
    tvm_ffi.register_global_func(CUDA_COMPILE_CALLBACK, real, override=True)


def test_each_source_compiles_once(fake_compiler, tmp_path):
    cuda_cache.enable(tmp_path)
    compile_ = tvm_ffi.get_global_func(CUDA_COMPILE_CALLBACK)
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}):
        first = compile_("source A")
        assert compile_("source A") == first == b"binary of source A"
        compile_("source B")
        assert fake_compiler == ["source A", "source B"]
        assert cuda_cache.stats() == {"hits": 1, "compiled": 2}
        cuda_cache.forget_memory()  # another process: from disk
        assert compile_("source A") == first and len(fake_compiler) == 2
    with tvm.target.Target({"kind": "cuda", "arch": "sm_80"}):
        compile_("source A")  # another architecture is another binary
    assert len(fake_compiler) == 3


def test_an_unreadable_file_is_compiled_again(fake_compiler, tmp_path):
    cuda_cache.enable(tmp_path)
    compile_ = tvm_ffi.get_global_func(CUDA_COMPILE_CALLBACK)
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}):
        compile_("source A")
        (stored,) = tmp_path.glob("*.bin")
        stored.write_bytes(b"")  # truncated
        cuda_cache.forget_memory()
        assert compile_("source A") == b"binary of source A" and len(fake_compiler) == 2
        assert stored.read_bytes() == b"binary of source A"  # replaced


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit's nvcc (no GPU needed)")
def test_real_nvcc_compiles_are_cached(tmp_path, monkeypatch):
    """TVM's own callback, through nvcc (no GPU needed), compiled once for two identical builds."""
    monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", "nvcc")
    cuda_cache.disable()
    cuda_cache.enable(tmp_path)
    try:
        compile_ = tvm_ffi.get_global_func(CUDA_COMPILE_CALLBACK)
        with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}):
            binary = compile_(KERNEL)
            assert len(binary) > 0 and compile_(KERNEL) == binary
        assert cuda_cache.stats() == {"hits": 1, "compiled": 1}
    finally:
        cuda_cache.disable()
