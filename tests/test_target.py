"""Targets and devices (ios_tvm.target): parsing, CUDA limits, the local machine, typed errors."""

from __future__ import annotations

import logging

import pytest
import tvm

from ios_tvm import models
from ios_tvm.errors import DeviceNotFoundError
from ios_tvm.ir.target import (
    CPU,
    CUDA,
    arch_of,
    as_target,
    device_of,
    device_type_of,
    has_gpu,
    local_target,
    require_device,
    resolve_target,
    target_key,
    tuning_target,
)

SM90 = {"kind": "cuda", "arch": "sm_90"}


@pytest.mark.parametrize("spec", ["llvm", {"kind": "llvm"}, '{"kind": "llvm"}', tvm.target.Target("llvm")])
def test_every_spelling_gives_the_same_target(spec):
    assert as_target(spec).kind.name == "llvm"


@pytest.mark.parametrize("spec", ["no_such_kind", '{"kind": "cuda", ', {"kind": "cuda", "arch": 90}])
def test_bad_targets_are_value_errors(spec):
    with pytest.raises(ValueError, match="target"):
        as_target(spec)


def test_cuda_targets_carry_the_device_limits():
    tgt = as_target(SM90)
    assert int(tgt.attrs["max_shared_memory_per_block"]) == 49152
    assert int(tgt.attrs["max_threads_per_block"]) == 1024 and int(tgt.attrs["thread_warp_size"]) == 32
    assert str(tgt.attrs["arch"]) == "sm_90"
    mine = as_target({**SM90, "max_shared_memory_per_block": 1234})
    assert int(mine.attrs["max_shared_memory_per_block"]) == 1234  # what the user wrote wins
    assert as_target(tgt).same_as(tgt)  # complete targets pass through


@pytest.mark.skipif(has_gpu(), reason="checks the warning given when no GPU is present to ask")
def test_a_cuda_target_without_an_architecture_and_no_gpu_is_said(caplog):
    """TVM compiles bare "cuda" for sm_50 when no GPU is here to ask: said once, with the fix;
    a target that names its architecture, in any spelling, is not warned about."""
    from ios_tvm.ir import target as target_mod

    target_mod._warn_default_arch.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ios_tvm"):
        for spec in (SM90, '{"kind": "cuda", "arch": "sm_90"}', "nvidia/nvidia-a100", as_target(SM90)):
            as_target(spec)
        assert caplog.text == ""
        assert str(as_target("cuda").attrs["arch"]) == "sm_50"
        as_target({"kind": "cuda"})
    assert caplog.text.count("names no CUDA architecture") == 1 and "compiles for sm_50" in caplog.text
    assert '"arch": "sm_90"' in caplog.text


def test_cuda_builds_do_not_guess_the_shared_memory(caplog):
    """dlight warned "Target cuda missing 'max_shared_memory_per_block'" on every CUDA build."""
    from ios_tvm.compiler.pipeline import plan_memory

    mod = models.get("squeezenet", small=True)
    with caplog.at_level(logging.WARNING):
        plan_memory(mod, SM90, database=None)
    assert "max_shared_memory_per_block" not in caplog.text


def test_device_types_and_names():
    assert device_type_of("llvm") == CPU and device_type_of(SM90) == CUDA
    assert device_of("llvm").dlpack_device_type() == CPU
    assert device_of(SM90, 1).index == 1
    with pytest.raises(ValueError, match="cuda and llvm"):
        device_type_of("opencl")
    assert arch_of(SM90) == "sm_90" and arch_of("llvm") == "generic"
    assert arch_of({"kind": "llvm", "mcpu": "znver3"}) == "znver3"
    assert target_key(SM90) == "cuda:sm_90"
    assert int(tuning_target("llvm").attrs["num-cores"]) >= 1


def test_auto_is_this_machine():
    tgt = resolve_target("auto")
    assert tgt.kind.name == ("cuda" if has_gpu() else "llvm")
    assert resolve_target(None).kind.name == local_target().kind.name
    if not has_gpu():
        assert int(tgt.attrs["num-cores"]) >= 1


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error for a missing GPU, and this machine has one")
def test_a_missing_gpu_is_a_typed_error_that_says_what_to_do():
    with pytest.raises(DeviceNotFoundError, match="analytic"):
        require_device(SM90, 0, "measuring")
    assert require_device("llvm").dlpack_device_type() == CPU


def test_one_module_asks_for_devices():
    """Only ios_tvm.target talks to the driver or turns targets into devices."""
    import pathlib
    import re

    import ios_tvm

    root = pathlib.Path(ios_tvm.__file__).parent
    asks = re.compile(r"tvm\.cuda\(|tvm\.target\.Target\(|device_type == \d")  # device types by number
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "target.py" and asks.search(p.read_text())]
    assert offenders == [], offenders
