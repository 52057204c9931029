"""Vendor kernels, the plan: which kernels of a model's graph cuDNN or cuBLASLt can run, and how
to call them (the rewrite that puts the calls into a build is :mod:`ios_tvm.transform.vendor`).

A *vendor unit* is a chain of the model as given (before lowering)::

    conv2d(x, w)   [-> astype(half)]   [-> add(., bias)]   [-> relu]
    matmul(x, w)   [-> astype(half)]   [-> add(., bias)]   [-> relu | gelu_tanh]

each intermediate used only by the next, in float32 or float16 (a converted model's
``conv2d(out_dtype=float32) -> astype(float16)`` is cuDNN's float16 convolution with float32
accumulation; :func:`ios_tvm.ir.precision.convert` also casts it back up to add a float32 bias
and apply relu in float32, and down again for the next half operator: the vendor call then takes
a float32 bias and writes the unit's output dtype, leaving out the conv result's rounding to
half in between, an error within half precision's), convolutions in NCHW data with OIHW weights or NHWC with OHWI, any strides,
padding, dilation and groups; the bias one value per output channel, broadcast along the
channel axis; matmul weights 2-D ``[K, N]`` or batched like the data (a transposed weight stays
TVM's transpose kernel, or is folded away when it is a constant). ``gelu_tanh`` is cuBLASLt's
GELU; ``gelu`` (erf) is not folded.

Which graph node computes a unit is decided by *structure*, not by names: every distinct unit
is lowered alone (:func:`ios_tvm.ir.backend.fusion_passes`, the very passes the model goes
through to its graph) and a node whose kernel is structurally equal to a unit's kernel computes exactly that
unit (same shapes, strides, padding, epilogue), its arguments in the same roles. A kernel into
which fusion pulled more (a residual add, a scale) is not equal to any unit and stays TVM's.

:func:`plan_sites` returns one :class:`VendorSite` per such node: the packed function, which of
the node's call arguments are its data, weight and bias, the integer attributes, and the size of
its workspace (a planned tensor of the call: see :mod:`ios_tvm.transform.vendor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import tvm
import tvm_ffi
from tvm import relax

from .backend import fusion_passes
from .graph import OpGraph, call_args, is_kernel_call
from .target import as_target

#: the packed functions of the runtime library (``src/vendor_*.cc``)
CONV2D = "ios_tvm.vendor.conv2d"
MATMUL = "ios_tvm.vendor.matmul"
VENDOR_FUNCTIONS = (CONV2D, MATMUL)

#: bytes of every vendor call's workspace (a planned uint8 tensor; 256 more for alignment).
#: 32 MiB is what NVIDIA recommends for cuBLASLt on Hopper; a plan needing more is not chosen.
WORKSPACE_BYTES = 32 << 20
WORKSPACE_ALIGN = 256

KERNEL_MODES = ("tvm", "vendor", "auto")
ACTIVATIONS = {"none": 0, "relu": 1, "gelu_tanh": 2}
_LAYOUTS = {("NCHW", "OIHW"): 0, ("NHWC", "OHWI"): 1}
_HALF = ("float16",)


@dataclass(frozen=True)
class VendorSite:
    """How one kernel call of a graph becomes a vendor call.

    Attributes
    ----------
    node
        The graph node (its kernel call is the ``node``-th of the dataflow block).
    func
        :data:`CONV2D` or :data:`MATMUL`.
    roles
        Positions, in the node's call arguments, of the data, the weight and the bias (``-1``:
        none).
    ints
        The integer attributes after the tensors, less the trailing ``tf32`` (see ``src/vendor.h``).
    workspace
        Bytes of the workspace tensor.
    """

    node: int
    func: str
    roles: tuple[int, int, int]
    ints: tuple[int, ...]
    workspace: int = WORKSPACE_BYTES + WORKSPACE_ALIGN

    @property
    def kind(self) -> str:
        return "conv2d" if self.func == CONV2D else "matmul"

    def arg_count(self) -> int:
        """Tensor arguments of the node's own kernel call."""
        return 2 + (self.roles[2] >= 0)


@dataclass(frozen=True)
class _Unit:
    func: str
    mini: relax.Function  #: the unit alone: main(x, w[, b])
    ints: tuple[int, ...]


def _op(value: Any) -> str | None:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else None


def _ty(expr: Any) -> relax.TensorType | None:
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values):
        return None
    return ty


def _shape(expr: Any) -> tuple[int, ...] | None:
    ty = _ty(expr)
    return None if ty is None else tuple(int(d) for d in ty.shape.values)


def _dtype(expr: Any) -> str | None:
    ty = _ty(expr)
    return None if ty is None else str(ty.dtype)


class _Uses:
    """How many bindings (and the result) use each var, and the last binding using it."""

    def __init__(self, bindings: Sequence[Any], result: Any) -> None:
        self.count: dict[Any, int] = {}
        self.user: dict[Any, Any] = {}
        for b in bindings:
            for v in relax.analysis.free_vars(b.value):
                self.count[v] = self.count.get(v, 0) + 1
                self.user[v] = b
        for v in relax.analysis.free_vars(result):
            self.count[v] = self.count.get(v, 0) + 1

    def only(self, var: Any, *ops: str) -> Any:
        nxt = self.user.get(var)
        if self.count.get(var) == 1 and nxt is not None and _op(nxt.value) in ops:
            return nxt
        return None


def _bias_ok(expr: Any, channels: int, axis: int, rank: int) -> bool:
    """One value per channel, broadcast along ``axis`` (negative: from the end) of a rank-``rank`` result."""
    shape = _shape(expr)
    if shape is None or len(shape) > rank or shape.count(channels) < 1:
        return False
    full = (1,) * (rank - len(shape)) + shape
    return all(d == (channels if i == axis % rank else 1) for i, d in enumerate(full))


def _unit_at(b: Any, uses: _Uses) -> tuple[str, list[Any], tuple[int, ...]] | None:
    """``(func, chain of bindings, ints)`` of the vendor unit starting at ``b``, if any."""
    call = b.value
    op = _op(call)
    x, w = call.args
    dtype, out_shape = _dtype(x), _shape(b.var)
    if dtype not in ("float32", "float16") or _dtype(w) != dtype or out_shape is None or _shape(x) is None:
        return None
    out_dtype = str(call.attrs.out_dtype) if call.attrs.out_dtype is not None else ""
    chain = [b]
    if out_dtype not in ("", "void", dtype):  # float16 data, float32 result: a cast back must follow
        nxt = uses.only(b.var, "relax.astype")
        if not (dtype in _HALF and out_dtype == "float32" and nxt is not None and str(nxt.value.attrs.dtype) == dtype):
            return None
        chain.append(nxt)
        nxt = uses.only(nxt.var, "relax.astype")  # ToMixedPrecision's epilogue in float32: cast up again
        if nxt is not None and str(nxt.value.attrs.dtype) == "float32":
            chain.append(nxt)
    if op == "relax.nn.conv2d":
        a = call.attrs
        layout = _LAYOUTS.get((str(a.data_layout), str(a.kernel_layout)))
        if layout is None or str(a.out_layout) != str(a.data_layout) or len(out_shape) != 4:
            return None
        channels, axis = out_shape[3 if layout else 1], (3 if layout else 1)
        pad = [int(p) for p in a.padding]
        ints = [layout, *(int(s) for s in a.strides), pad[0], pad[1], pad[2], pad[3],
                *(int(d) for d in a.dilation), int(a.groups)]
        func = CONV2D
    else:
        ws, xs = _shape(w), _shape(x)
        if len(ws) != 2 and (len(ws) != len(xs) or ws[:-2] != xs[:-2]):
            return None  # broadcast batches: left to TVM
        channels, axis = out_shape[-1], -1
        ints = [0]  # transpose_b
        func = MATMUL
    activation = 0
    nxt = uses.only(chain[-1].var, "relax.add")
    if nxt is not None:
        lhs, rhs = nxt.value.args
        other = rhs if lhs.same_as(chain[-1].var) else lhs
        if _bias_ok(other, channels, axis, len(out_shape)) and _dtype(other) == _dtype(chain[-1].var):
            chain.append(nxt)
    acts = ("relax.nn.relu",) if func == CONV2D else ("relax.nn.relu", "relax.nn.gelu_tanh")
    nxt = uses.only(chain[-1].var, *acts)
    if nxt is not None:
        activation = ACTIVATIONS["relu" if _op(nxt.value) == "relax.nn.relu" else "gelu_tanh"]
        chain.append(nxt)
    nxt = uses.only(chain[-1].var, "relax.astype")
    if len(chain) > 1 and _dtype(chain[-1].var) != dtype and nxt is not None and str(nxt.value.attrs.dtype) == dtype:
        chain.append(nxt)  # ... and back to half for the next half operator
    return func, chain, (*ints, activation)


def _mini(chain: list[Any]) -> relax.Function:
    """The unit alone, as ``main(x, w[, bias])`` rebuilt with the model's own ops and attributes."""
    first = chain[0].value
    x = relax.Var("x", first.args[0].ty)
    w = relax.Var("w", first.args[1].ty)
    params = [x, w]
    bb = relax.BlockBuilder()
    with bb.function("main"):
        with bb.dataflow():
            y = bb.emit(relax.Call(first.op, [x, w], first.attrs))
            prev = chain[0].var
            for b in chain[1:]:
                v = b.value
                if _op(v) == "relax.add":
                    lhs, rhs = v.args
                    other = rhs if lhs.same_as(prev) else lhs
                    bias = relax.Var("b", other.ty)
                    params.append(bias)
                    y = bb.emit(relax.Call(v.op, [y, bias] if lhs.same_as(prev) else [bias, y], v.attrs))
                else:
                    y = bb.emit(relax.Call(v.op, [y], v.attrs))
                prev = b.var
            out = bb.emit_output(y)
        bb.emit_func_output(out, params=params)
    return bb.get()["main"]


def find_units(mod: tvm.IRModule, func: str = "main") -> list[_Unit]:
    """Every distinct vendor unit of ``mod[func]`` (before lowering), as a function of its own."""
    fn = mod[func]
    block = next((b for b in fn.body.blocks if isinstance(b, relax.DataflowBlock)), None)
    if block is None:
        return []
    bindings = list(block.bindings)
    uses = _Uses(bindings, fn.body.body)
    out: dict[Any, _Unit] = {}
    for b in bindings:
        if _op(b.value) not in ("relax.nn.conv2d", "relax.matmul"):
            continue
        found = _unit_at(b, uses)
        if found is None:
            continue
        func_name, chain, ints = found
        mini = _mini(chain)
        key = (func_name, ints, tvm_ffi.structural_hash(mini))
        out.setdefault(key, _Unit(func_name, mini, ints))
    return list(out.values())


def _kernel_key(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    return func.without_attr("global_symbol")


def plan_sites(source: tvm.IRModule, graph: OpGraph, target: Any) -> dict[int, VendorSite]:
    """The vendor call of every node of ``graph`` (``extract_graph(source, target)``) that
    computes exactly a vendor unit of ``source``: node id -> :class:`VendorSite`."""
    units = find_units(source)
    if not units or graph.mod is None:
        return {}
    mini = tvm.IRModule({f"u{i}": u.mini.with_attr("global_symbol", f"u{i}") for i, u in enumerate(units)})
    tgt = as_target(target)
    with tgt:  # the passes extract_graph lowers the model with
        lowered = tvm.transform.Sequential(fusion_passes(tgt))(mini)
    by_hash: dict[int, list[tuple[tvm.tirx.PrimFunc, _Unit, tuple[int, int, int]]]] = {}
    for i, u in enumerate(units):
        fn = lowered[f"u{i}"]
        calls = [b.value for blk in fn.body.blocks for b in blk.bindings if is_kernel_call(b.value)]
        if len(calls) != 1 or not isinstance(calls[0].args[0], tvm.ir.GlobalVar):
            continue  # fusion split the unit: no single kernel to replace
        args = call_args(calls[0])
        params = list(fn.params)
        if len(args) != len(params) or not all(any(a.same_as(p) for a in args) for p in params):
            continue  # the kernel takes something else than the unit's inputs (a folded constant)
        roles = tuple(next(i for i, a in enumerate(args) if a.same_as(p)) for p in params) + (-1,) * (3 - len(params))
        kernel = _kernel_key(lowered[calls[0].args[0]])
        by_hash.setdefault(int(tvm_ffi.structural_hash(kernel)), []).append((kernel, u, roles))  # type: ignore[arg-type]
    sites: dict[int, VendorSite] = {}
    for v, (node, b) in enumerate(zip(graph.nodes, graph.bindings)):
        callee = b.value.args[0]
        if node.op != "relax.call_tir" or not isinstance(callee, tvm.ir.GlobalVar):
            continue
        kernel = _kernel_key(graph.mod[callee])
        for cand, u, roles in by_hash.get(int(tvm_ffi.structural_hash(kernel)), ()):
            if len(call_args(b.value)) == len(u.mini.params) and tvm_ffi.structural_equal(kernel, cand):
                sites[v] = VendorSite(v, u.func, roles, u.ints)  # type: ignore[arg-type]
                break
    return sites


def check_kernels(kernels: str) -> str:
    """``kernels`` if it is one of :data:`KERNEL_MODES`, else a typed error saying the choices."""
    from ..errors import InvalidArgumentError

    if kernels not in KERNEL_MODES:
        raise InvalidArgumentError(f"kernels must be one of {KERNEL_MODES}, got {kernels!r}: 'tvm' (TVM's own kernels), "
                                   "'vendor' (cuDNN / cuBLASLt wherever they apply) or 'auto' (the faster of the two "
                                   "per call, by measurement)")
    return kernels


def check_vendor_target(target: Any, kernels: str) -> tvm.target.Target:
    """The target as a ``tvm.target.Target``; a :class:`~ios_tvm.errors.TargetError` saying what
    to do when ``kernels`` asks for vendor kernels and it is not CUDA."""
    from ..errors import TargetError

    tgt = as_target(target)
    if check_kernels(kernels) != "tvm" and tgt.kind.name != "cuda":
        raise TargetError(f"kernels={kernels!r} runs cuDNN and cuBLASLt kernels, which need a CUDA target, not "
                          f"{tgt.kind.name!r}: use a CUDA target, or kernels='tvm'")
    return tgt


def recorded_kernels(schedule: Any) -> dict[str, Any]:
    """What ``schedule.meta["kernels"]`` says about the kernels it was made with:
    ``{"mode", "tf32", "vendor"}`` (``mode`` ``"tvm"`` for schedules from before vendor kernels)."""
    rec = dict(schedule.meta.get("kernels") or {}) if schedule is not None else {}
    return {"mode": rec.get("mode", "tvm"), "tf32": bool(rec.get("tf32", False)),
            "vendor": [int(v) for v in rec.get("vendor", [])]}


def build_sites(mod: tvm.IRModule, graph: OpGraph, target: Any, schedule: Any, kernels: str | None,
                tf32: bool | None) -> tuple[dict[int, VendorSite], bool]:
    """``(sites, tf32)`` of a build: which kernel calls become vendor calls.

    ``kernels=None`` builds what ``schedule`` recorded (``"tvm"`` without a schedule);
    ``"vendor"``: every kernel a vendor unit of ``mod`` computes; ``"auto"``: the ones the
    schedule chose (``optimize(..., kernels="auto")``); ``"tvm"``: none. Nodes of merge stages keep
    their merged kernel. ``tf32=None``: the schedule's record (else ``False``).

    Raises
    ------
    TargetError
        Vendor kernels for a target that is not CUDA.
    InvalidArgumentError
        ``kernels="auto"`` without a schedule that chose.
    ScheduleMismatchError
        The schedule chose vendor kernels for nodes that cannot run one.
    """
    from ..errors import InvalidArgumentError, ScheduleMismatchError

    rec = recorded_kernels(schedule)
    mode = check_kernels(rec["mode"] if kernels is None else kernels)
    use_tf32 = rec["tf32"] if tf32 is None else bool(tf32)
    if mode == "tvm":
        return {}, use_tf32
    tgt = check_vendor_target(target, mode)
    eligible = plan_sites(mod, graph, tgt)
    if mode == "vendor":
        chosen = dict(eligible)
    else:
        if schedule is None or rec["mode"] != "auto":
            raise InvalidArgumentError("kernels='auto' builds the per-call choice a schedule made by measurement: "
                                       "optimize(mod, target, kernels='auto') first (CLI: ios-tvm optimize --kernels "
                                       "auto), or build with kernels='vendor' or 'tvm'")
        bad = [v for v in rec["vendor"] if v not in eligible]
        if bad:
            raise ScheduleMismatchError(f"the schedule runs vendor kernels at nodes {bad[:8]}, which compute no vendor "
                                        "unit of this model: re-create the schedule for it with kernels='auto'")
        chosen = {v: eligible[v] for v in rec["vendor"]}
    if schedule is not None:
        for nodes in schedule.merges:
            for v in nodes:
                chosen.pop(v, None)
    return chosen, use_tf32
