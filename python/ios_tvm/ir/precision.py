"""Half precision: the fp16 and bf16 versions of a float32 model, and the dtype a model computes in.

>>> import ios_tvm
>>> half = ios_tvm.precision.convert(mod, "float16")       # or "bfloat16"
>>> ios_tvm.precision.model_dtype(half)
'float16'

:func:`convert` is the one place ios_tvm converts a model (``optimize(..., dtype=)``,
``build(..., dtype=)`` and the CLI's ``--dtype`` call it; tune the converted module:
``ios_tvm.tune(convert(mod, "float16"), target, work_dir)``). It runs TVM's own mixed-precision
pass, ``relax.transform.ToMixedPrecision(out_dtype="float32")``:

* convolutions and matmuls take half inputs and accumulate in float32 (``out_dtype="float32"``),
  their result cast back to half; what follows them (bias, relu, pools, concats, ...) computes in
  half when all its inputs are half;
* operators TVM marks as unsafe in half (softmax, batch norm, reductions and every operator
  without a mixed-precision policy) compute in float32, their inputs cast up;
* ``main``'s inputs and outputs keep their float32 type (cast at the boundary), so a converted
  model is called as the original was.

Three steps follow the pass, all in one mutator here:

1. the weights it casts (``astype(constant, "float16")``) are folded into half constants, with
   NumPy's round-to-nearest-even from the float32 originals. Without this, merges would not find
   their weights (IOS-Merge concatenates constants, in the model's dtype) and every build would
   fold them again in ``FoldConstant``, which compiles one kernel per weight. A float32 weight
   beyond float16's range (65504) becomes inf, as the device's cast would make it; ``convert``
   warns;
2. a float32 tensor the pass casts once per convolution or matmul reading it (an input also read
   by an operator kept in float32) is cast once, also where each reads it through its own
   ``reshape`` to one shape (PyTorch's importer reshapes the input of every linear layer): operators
   reading one input merge, copies do not;
3. for ``bfloat16`` (the pass knows only float16) every ``float16`` cast it made is retargeted
   to ``bfloat16`` and the types are inferred again; weights are converted from their float32
   originals, never from float16 values (``ml_dtypes``' round-to-nearest-even, as TVM's own
   casts round). The operators the pass keeps in float32 for float16 stay so for bfloat16,
   which has float32's range but fewer significant bits than float16.

A model given in half precision (an ONNX file with float16 initializers, a model converted
before) is used as it is: :func:`convert` returns it unchanged for its own dtype and refuses any
other (:class:`~ios_tvm.errors.PrecisionError`): ios_tvm converts float32 models only.

Accuracy (``tests/test_precision.py``): outputs of the converted zoo models and ONNX models
differ from the float32 build by a relative error (of the output's norm) of a few units of the
half type's rounding error ``u`` (``2**-11`` for float16, ``2**-8`` for bfloat16).

Building and tuning tuned half kernels for CUDA needs ``StorageRewrite`` off in TVM 0.27: see
:mod:`ios_tvm.compiler.context` (builds) and :func:`ios_tvm.tuning.builder.tensor_core_builder`
(tuning).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..core.schedule import Schedule
from ..errors import PrecisionError, ScheduleMismatchError
from .graph import check_model

logger = logging.getLogger("ios_tvm")

PRECISIONS = ("float32", "float16", "bfloat16")  #: what :func:`convert` takes
HALF = ("float16", "bfloat16")
_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
#: ops whose data input decides the dtype a model computes in (TVM's "always half" ops)
_COMPUTE_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv1d_transpose",
                "relax.nn.conv2d_transpose", "relax.matmul", "relax.linear")
#: the accumulation dtype of converted convolutions and matmuls
ACCUMULATE = "float32"

#: Tensor-core intrinsics of MetaSchedule's ``cuda-tensorcore`` rules (chosen for ``arch``
#: ``sm_75`` and newer, so for ``sm_90``; ``src/s_tir/meta_schedule/schedule_rule/schedule_rule.cc``,
#: ``ScheduleRule::DefaultCUDATensorCore``), for what :func:`convert` makes (float16 inputs,
#: float32 accumulation). The ``wmma`` rule comes first; for the float16 convolutions tried
#: (``tests/test_precision.py``) every sketch of the design space is a ``wmma`` one (plain and
#: ``_trans`` B operand), the ``mma`` rule (``m16n8k8``, software-pipelined) adding none. The
#: other groups of those rules are float16 += float16 x float16 and int8. There is no bfloat16
#: group: bf16 kernels get the default CUDA rules (``MultiLevelTiling`` on CUDA cores).
TENSOR_CORE_INTRINSICS = {
    "wmma": ("wmma_fill_16x16x16_f32", "wmma_load_16x16x16_f16_a_shared_dyn",
             "wmma_load_16x16x16_f16_b_shared_dyn", "wmma_load_16x16x16_f16_b_trans_shared_dyn",
             "wmma_sync_16x16x16_f16f16f32", "wmma_sync_16x16x16_f16f16f32_trans",
             "wmma_store_16x16x16_f32_shared_dyn"),
    "mma": ("mma_init_m16n8k8_f32", "mma_load_m16n8k8_f16_A_shared_dyn", "mma_load_m16n8k8_f16_B_shared_dyn",
            "mma_sync_m16n8k8_f16f16f32", "mma_store_m16n8k8_f32_global"),
}


def canonical(dtype: str) -> str:
    """``"float32"``, ``"float16"`` or ``"bfloat16"`` for a precision name (``fp16``, ``half``
    and ``bf16`` too).

    Raises
    ------
    PrecisionError
        Any other name.
    """
    name = _ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in PRECISIONS:
        raise PrecisionError(f"ios_tvm converts models to {', '.join(PRECISIONS[1:])} (or leaves them in float32), "
                             f"not {dtype!r}")
    return name


def _tensor_dtype(expr: Any) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def _is_float(dtype: str | None) -> bool:
    return dtype is not None and (dtype.startswith("float") or dtype.startswith("bfloat"))


def model_dtype(mod: tvm.IRModule, func: str = "main") -> str:
    """The floating-point dtype ``mod[func]`` computes in: that of the data its convolutions and
    matmuls read, or, in a model without any, the most common dtype of its floating tensors.

    ``"float32"`` for a model as TVM's importers give it, ``"float16"`` or ``"bfloat16"`` after
    :func:`convert` (which keeps float32 inputs and outputs) or for a model given in half.

    Raises
    ------
    PrecisionError
        The model computes in both float16 and bfloat16.
    UnsupportedModelError
        Not a model ios_tvm can schedule (see :func:`ios_tvm.ir.graph.check_model`).
    """
    fn = check_model(mod, func)
    compute: dict[str, int] = {}
    tensors: dict[str, int] = {}
    for block in fn.body.blocks:
        for b in block.bindings:
            dtype = _tensor_dtype(b.var)
            if _is_float(dtype):
                tensors[dtype] = tensors.get(dtype, 0) + 1
            value = b.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _COMPUTE_OPS:
                data = _tensor_dtype(value.args[0])
                if _is_float(data):
                    compute[data] = compute.get(data, 0) + 1
    halves = [d for d in HALF if d in compute]
    if len(halves) > 1:
        raise PrecisionError(f"{func} computes in both float16 and bfloat16 ({compute}); ios_tvm takes models "
                             "in one precision")
    if halves:
        return halves[0]
    counts = compute or tensors
    if not counts:
        return "float32"
    return max(counts, key=lambda d: counts[d])


@mutator
class _HalfCasts(PyExprMutator):  # type: ignore[misc]
    """After ``ToMixedPrecision``: fold ``astype(constant, half)`` into half constants (from the
    float32 values), used in place (merges find a kernel by its weight constant); keep one cast
    of each tensor (or of its reshapes to one shape) to each half type (the pass casts a float32
    tensor again for every convolution or matmul reading it, and operators reading copies of
    one input cannot merge); and, for ``bfloat16``, retarget every other ``float16`` cast to
    ``bfloat16``."""

    def __init__(self, dtype: str, mod: tvm.IRModule | None = None) -> None:
        super().__init__(mod)
        self.dtype = dtype
        self.folded: dict[Any, relax.Expr] = {}  #: dataflow var of a folded cast -> its constant
        self.overflows = 0  #: constants with finite values that became infinite
        self.first_cast: dict[tuple[Any, str], Any] = {}  #: (tensor, half dtype) -> var of its first cast
        self.aliases: dict[Any, Any] = {}  #: var of a repeated cast -> var of the first one
        self.views: dict[Any, tuple[Any, str]] = {}  #: var of a reshape -> (the tensor it views, its shape)

    def _target(self, call: Any) -> str | None:
        """The half dtype a cast makes (``float16`` retargeted), ``None`` for anything else."""
        if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype"):
            return None
        to = str(call.attrs.dtype)
        return None if to not in HALF else self.dtype if to == "float16" else to

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: D102 - PyExprMutator hook
        to = self._target(binding.value)
        arg = binding.value.args[0] if to is not None else None
        if (isinstance(binding.var, relax.DataflowVar) and isinstance(arg, tvm.ir.expr.GenericConst)
                and isinstance(arg.value, tvm.runtime.Tensor)):
            values = arg.value.numpy()
            half = half_array(values, to)
            self.overflows += bool(np.isinf(half.astype(np.float32)).any() and np.isfinite(values).all())
            self.folded[binding.var] = relax.const(half, to)
            return  # the constant takes the variable's place in every use
        value = binding.value
        if (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.reshape"
                and isinstance(value.args[0], relax.Var)):  # a view: casts of equal views are one cast
            src = value.args[0]
            self.views[binding.var] = (self.views.get(src, (src, ""))[0], str(binding.var.ty.shape))
        if isinstance(binding.var, relax.DataflowVar) and isinstance(arg, relax.Var):
            first = self.first_cast.setdefault((self.views.get(arg, arg), to), binding.var)
            if not first.same_as(binding.var):
                self.aliases[binding.var] = first
                return  # the first cast serves every use
        super().visit_var_binding_(binding)

    def visit_dataflow_var_(self, op: relax.DataflowVar) -> relax.Expr:  # noqa: D102 - PyExprMutator hook
        if op in self.folded:
            return self.folded[op]
        return super().visit_dataflow_var_(self.aliases.get(op, op))

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.BindingBlock:  # noqa: D102
        self.first_cast = {}  # dataflow variables live in their block
        self.views = {}
        return super().visit_dataflow_block_(block)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102 - PyExprMutator hook
        call = super().visit_call_(call)
        to = self._target(call)
        if to is None or to == str(call.attrs.dtype):
            return call
        return relax.op.astype(call.args[0], to)


def half_array(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` (``float16`` or ``bfloat16``), to nearest even, as NumPy
    (float16) and ``ml_dtypes`` (bfloat16, the type TVM hands NumPy for bf16 tensors) round."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(values).astype(ml_dtypes.bfloat16)
    with np.errstate(over="ignore"):  # beyond float16's range: inf, as a cast on the device gives; see convert
        return np.asarray(values).astype(dtype)


def numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a TVM dtype name (``bfloat16`` is ``ml_dtypes.bfloat16``)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def unit_roundoff(dtype: str) -> float:
    """``u``, half the distance from 1 to the next number of ``dtype``: ``2**-24`` (float32),
    ``2**-11`` (float16, 11-bit significand), ``2**-8`` (bfloat16, 8-bit significand)."""
    return {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}[canonical(dtype)]


def output_tolerance(dtype: str) -> tuple[float, float]:
    """``(rtol, atol)`` within which two builds of one model computing in ``dtype`` (sequential,
    scheduled, merged) must agree: float32 ``(1e-4, 1e-5)``; half precision ``16 u`` for both
    (outputs of order 1), because kernels that sum in another order (a merged convolution, another
    tuned schedule) round some half results the other way, by one unit in the last place, and those
    differences travel through the following layers."""
    dtype = canonical(dtype)
    if dtype == "float32":
        return 1e-4, 1e-5
    u = unit_roundoff(dtype)
    return 16 * u, 16 * u


def _dtypes_in(fn: relax.Function) -> set[str]:
    """Every tensor dtype bound in ``fn``."""
    found: set[str] = set()
    for block in fn.body.blocks:
        for b in block.bindings:
            ty = b.var.ty
            fields = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
            found.update(str(t.dtype) for t in fields if isinstance(t, relax.TensorType))
    return found


def convert(mod: tvm.IRModule, dtype: str) -> tvm.IRModule:
    """``mod`` in half precision (``"float16"`` / ``"bfloat16"``; see the module docstring), or
    ``mod`` itself when it already computes in ``dtype`` (``"float32"`` for a float32 model).

    Weights bound as constants become half constants (merges need them so); weights that are
    parameters of ``main`` stay float32 parameters, cast at each run.

    Raises
    ------
    PrecisionError
        An unknown precision, a model in another half type (or a half model asked for float32),
        or a model with nothing to convert (no convolution or matmul on float32 data).
    UnsupportedModelError
        Not a model ios_tvm can schedule (see :func:`ios_tvm.ir.graph.check_model`).
    """
    dtype = canonical(dtype)
    current = model_dtype(mod)
    if current == dtype:
        return mod
    if current != "float32":
        raise PrecisionError(f"the model computes in {current}; ios_tvm converts float32 models only (to "
                             f"{' or '.join(HALF)}): give the float32 model, or use this one as it is "
                             f"(dtype {current!r}, or no dtype)")
    out = relax.transform.ToMixedPrecision(out_dtype=ACCUMULATE)(mod)
    funcs = {gv: f for gv, f in out.functions.items() if isinstance(f, relax.Function)}
    overflows = 0
    for gv, f in funcs.items():
        casts = _HalfCasts(dtype, out)
        out[gv] = casts.visit_expr(f)
        overflows += casts.overflows
    if overflows:
        logger.warning("ios_tvm: %d weight tensors of the model hold values beyond %s's range (65504), which became "
                       "inf: bfloat16 keeps float32's range", overflows, dtype)
    out = relax.transform.Normalize()(out)
    got = model_dtype(out)
    if got != dtype:
        raise PrecisionError(f"the model has no convolution or matmul on float32 data for TVM's mixed-precision "
                             f"pass to convert to {dtype} (it still computes in {got})")
    if dtype == "bfloat16":
        left = [str(gv.name_hint) for gv, f in out.functions.items()
                if isinstance(f, relax.Function) and "float16" in _dtypes_in(f)]
        assert not left, f"float16 tensors left in {left} after the bfloat16 conversion"
    return out


def check_schedule_dtype(schedule: Schedule, mod: tvm.IRModule) -> None:
    """Refuse a schedule made for the model in another precision (``schedule.meta["precision"]``,
    written by ``ios_tvm.optimize``), with what to do.

    Raises
    ------
    ScheduleMismatchError
        ``mod`` computes in another dtype than the model the schedule was made for.
    """
    made_for = (schedule.meta.get("precision") or {}).get("dtype")
    have = model_dtype(mod)
    if made_for is None or made_for == have:
        return
    how = (f"build with dtype={made_for!r} (CLI: --dtype {made_for}), as it was optimized" if made_for in HALF
           else "build the float32 model it was made for, without dtype (CLI: without --dtype)")
    raise ScheduleMismatchError(f"the schedule was made for the model in {made_for} and this one computes in {have}: "
                                f"{how}")
