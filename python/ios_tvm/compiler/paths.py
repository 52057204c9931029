"""Where ios_tvm keeps what it computed once (measured stage costs, compiled CUDA kernels,
predicted against measured): one cache directory."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the cache directory
CACHE_DIR_ENV = "IOS_TVM_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$IOS_TVM_CACHE_DIR``, else ``~/.cache/ios_tvm``."""
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "ios_tvm"))
