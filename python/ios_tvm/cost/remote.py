"""Measuring stages on other machines through TVM's RPC tracker.

Each RPC server must load ios_tvm's runtime library, which holds the stage timer::

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190
    python -m tvm.exec.rpc_server --tracker HOST:9190 --key h100 \\
        --load-library $(python -c "import ios_tvm.runtime as r; print(r.library_path())")

``MeasureConfig(rpc=RPCConfig("HOST", 9190, "h100", sessions=4))`` then builds the model here,
uploads it to ``sessions`` servers of that key, and spreads the candidate stages over them
(one thread per session). The servers time each stage with ``ios_tvm.runtime.time_stage_named``:
the same fork / switch / join path as a local measurement. MetaSchedule tuning goes remote the
same way by passing its ``ms.runner.RPCRunner`` to :func:`ios_tvm.tune`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import tvm

from ..errors import DeviceNotFoundError
from ..ir.target import CPU
from .cache import content_key
from .timers import flush_buffers, node_arrays, sampled


@dataclass(frozen=True)
class RPCConfig:
    """Where to measure: a tracker, the key of the devices, how many sessions to use."""

    tracker_host: str
    tracker_port: int
    key: str
    sessions: int = 1
    priority: int = 1
    session_timeout: int = 0

    def __post_init__(self) -> None:
        if self.sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {self.sessions}")


class RemoteSession:
    """One RPC session with the model's library loaded and every kernel's arguments allocated."""

    def __init__(self, sess: Any, device_type: int, device_id: int) -> None:
        self.sess = sess
        self.device_type = device_type
        self.device_id = device_id
        self.device = sess.cpu(0) if device_type == CPU else sess.cuda(device_id)
        self.timer = sess.get_function("ios_tvm.runtime.time_stage_named")
        self.modules: dict[str, Any] = {}
        self.lock = threading.Lock()

    def load(self, name: str, executable: Any) -> Any:
        """Upload ``executable`` (exported as a shared library) once under ``name``."""
        if name not in self.modules:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{name}.so")
                executable.export_library(path)
                self.sess.upload(path)
            self.modules[name] = self.sess.load_module(f"{name}.so")
        return self.modules[name]

    def tensors(self, arrays: Sequence[np.ndarray]) -> list[Any]:
        return [tvm.runtime.tensor(a, self.device) for a in arrays]

    def time(self, module: Any, kernels: Sequence[Sequence[tuple[str, list[Any]]]], warmup: int, repeat: int) -> list[float]:
        """Time one stage: ``kernels[g]`` is group ``g`` as ``(kernel name, remote tensors)``."""
        spec = "|".join(";".join(f"{name}:{len(args)}" for name, args in group) for group in kernels)
        flat = [a for group in kernels for _, args in group for a in args]
        with self.lock:
            out = self.timer(self.device_type, self.device_id, warmup, repeat, module, spec, *flat)
        return [float(x) for x in str(out).split(",")]


def connect(config: RPCConfig, device_type: int, device_id: int) -> list[RemoteSession]:
    """Request ``config.sessions`` sessions from the tracker."""
    import socket

    from tvm import rpc

    try:  # fail fast: TVM's own connect retries for a minute
        socket.create_connection((config.tracker_host, config.tracker_port), timeout=10).close()
        tracker = rpc.connect_tracker(config.tracker_host, config.tracker_port)
    except Exception as err:  # noqa: BLE001 - TVM raises several types for a dead tracker
        raise DeviceNotFoundError(f"cannot reach the RPC tracker at {config.tracker_host}:{config.tracker_port}: "
                                  f"{str(err).splitlines()[-1]}; start it (python -m tvm.exec.rpc_tracker) or "
                                  "fix RPCConfig's host and port") from None
    sessions = []
    for _ in range(config.sessions):
        sess = tracker.request(config.key, priority=config.priority, session_timeout=config.session_timeout)
        try:
            sessions.append(RemoteSession(sess, device_type, device_id))
        except Exception as err:  # noqa: BLE001
            raise DeviceNotFoundError(
                f"the RPC server for key {config.key!r} does not have ios_tvm's runtime: start it with "
                "--load-library pointing to libios_tvm_runtime.so (ios_tvm.runtime.library_path())"
                f" ({str(err).splitlines()[-1]})") from None
    return sessions


class RPCTimer:
    """A :class:`ios_tvm.cost.timers.StageTimer` on ``config.sessions`` remote devices: connects
    on the first use, uploads the model to every session, one stage at a time per session."""

    def __init__(self, config: RPCConfig, device_type: int, device_id: int, warmup: int, repeat: int) -> None:
        self.config = config
        self.device_type, self.device_id = device_type, device_id
        self.warmup, self.repeat = warmup, repeat
        self.device_name = f"rpc:{config.key}"
        self.workers = config.sessions
        self.sessions: list[RemoteSession] = []
        self._model: list[Any] = []  # the loaded model, per session
        self._args: list[list[list[Any]]] = []  # its kernels' arguments, per session and node
        self._nodes: Sequence[Any] = ()
        self._flush_bytes = 0
        self._flush_fns: dict[int, Any] = {}  # per session, made on its first timing that flushes

    def _connect(self) -> list[RemoteSession]:
        if not self.sessions:
            self.sessions = connect(self.config, self.device_type, self.device_id)
        return self.sessions

    def load(self, executable: Any, nodes: Sequence[Any]) -> None:
        self._nodes = nodes
        name = "ios_model_" + content_key([[n.kernel, n.inputs, n.outputs] for n in nodes])[:16]
        self._model = [sess.load(name, executable) for sess in self._connect()]
        arrays = node_arrays(nodes)
        self._args = [[sess.tensors(a) for a in arrays] for sess in self.sessions]

    def flush_before_samples(self, nbytes: int) -> None:
        self._flush_bytes = max(nbytes, 0)
        self._flush_fns = {}

    def _sampled(self, worker: int, module: Any, kernels: Any) -> list[float]:
        sess = self.sessions[worker]
        flush = None
        if self._flush_bytes:
            if worker not in self._flush_fns:
                self._flush_fns[worker] = flush_buffers(self._flush_bytes, sess.device)
            flush = self._flush_fns[worker]
        return sampled(lambda warmup, repeat: sess.time(module, kernels, warmup, repeat), flush,
                       self.warmup, self.repeat)

    def time(self, groups: Any, worker: int = 0, replace: Any = None) -> list[float]:
        if replace:
            raise NotImplementedError("kernel replacements are timed on this machine's device, not over RPC")
        kernels = [[(self._nodes[v].kernel, self._args[worker][v]) for v in g] for g in groups]
        return self._sampled(worker, self._model[worker], kernels)

    def time_once(self, executable: Any, nodes: Sequence[Any], name: str) -> list[float]:
        sess = self._connect()[0]
        module = sess.load(name, executable)
        kernels = [[(n.kernel, sess.tensors(a)) for n, a in zip(nodes, node_arrays(nodes))]]
        return self._sampled(0, module, kernels)
