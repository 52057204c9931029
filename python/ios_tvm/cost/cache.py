"""A persistent cache of measured stage latencies, keyed by content.

One JSON file per (target, device, TVM version) in a cache directory (default
``~/.cache/ios_tvm``, or ``$IOS_TVM_CACHE_DIR``). An entry's key is a hash of the stage's kernels
(structural hash of each PrimFunc plus argument shapes and dtypes, per group, in order) and the
measurement settings, so identical blocks of one model and of other models share entries. Files
are written atomically (temporary file + rename); a corrupt or foreign file is reported, moved
aside (``*.corrupt-<time>``) and ignored, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..compiler.paths import default_cache_dir  # noqa: F401 - where stage caches live by default

logger = logging.getLogger("ios_tvm")

CACHE_FORMAT = "ios_tvm.stage_cache"
# 2: tuned stage costs were measured with untuned kernels before (the lowered module was rebuilt)
CACHE_VERSION = 2


def content_key(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (the cache key of a stage or of a file)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


class StageCache:
    """``{stage key: [seconds per repeat]}`` for one measuring context, persisted as JSON."""

    def __init__(self, directory: str | os.PathLike | None, context: dict[str, Any]) -> None:
        self.context = dict(context)
        self.path: Path | None = None
        self.entries: dict[str, list[float]] = {}
        self._dirty = False
        if directory is not None:
            self.path = Path(directory) / f"stages-{content_key(CACHE_VERSION, self.context)}.json"
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            if data.get("context") != self.context:
                raise ValueError("it was written for another target/device/TVM version")
            entries = data["entries"]
            if not isinstance(entries, dict) or not all(
                    isinstance(v, list) and v and all(isinstance(x, (int, float)) and x >= 0 for x in v)
                    for v in entries.values()):
                raise ValueError("malformed entries")
            self.entries = {str(k): [float(x) for x in v] for k, v in entries.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            logger.warning("ios_tvm: ignoring stage cache %s (%s); kept it as %s and starting afresh",
                           self.path, err, aside)
            self.entries = {}

    def get(self, key: str) -> list[float] | None:
        return self.entries.get(key)

    def put(self, key: str, samples: list[float]) -> None:
        self.entries[key] = [float(x) for x in samples]
        self._dirty = True

    def save(self) -> None:
        """Write atomically if anything changed (entries of other processes since our load are
        merged in first, ours win)."""
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = dict(self.entries)
        if self.path.exists():
            try:
                other = json.loads(self.path.read_text())
                if other.get("context") == self.context and other.get("version") == CACHE_VERSION:
                    merged = {**other.get("entries", {}), **self.entries}
            except (OSError, ValueError, AttributeError):
                pass
        payload = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "context": self.context, "entries": merged}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
