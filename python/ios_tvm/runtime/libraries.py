"""Where installed Python packages keep NVIDIA's libraries (for the vendor kernels' lookup,
:mod:`ios_tvm.runtime.vendor`); plain file-system look-ups, nothing imported or loaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dirs() -> list[str]:
    """Folders of installed Python packages that may hold the libraries: every ``nvidia/*/lib``
    (``nvidia-cudnn-cu13``, ``nvidia-cublas``, and the same packages PyTorch for CUDA installs)
    and ``torch/lib``. Found without importing anything."""
    out: list[str] = []
    for name, sub in (("nvidia", "*/lib"), ("torch", "lib")):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            out.extend(str(p) for p in sorted(Path(root).glob(sub)) if p.is_dir())
    return list(dict.fromkeys(out))
