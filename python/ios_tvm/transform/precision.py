"""``ConvertPrecision``: a float32 model in float16 or bfloat16, as a pass (the conversion itself
is :func:`ios_tvm.ir.precision.convert`: TVM's ``ToMixedPrecision``, weight casts folded into half
constants, one cast per tensor, bf16 retargeting)."""

from __future__ import annotations

import tvm

from ..ir.precision import canonical, convert


def ConvertPrecision(dtype: str) -> tvm.transform.Pass:
    """The model in ``dtype`` (``"float16"``, ``"bfloat16"``; ``"float32"`` leaves a float32 model
    as it is), converted by :func:`ios_tvm.ir.precision.convert`: float32 accumulation, weights
    bound as constants rounded once from their float32 values, ``main``'s inputs and outputs
    kept float32.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.ConvertPrecision``; it runs on the model as imported,
        before fusion.

    Raises
    ------
    PrecisionError
        An unknown dtype (when the pass is made), or a model that cannot be converted (when it
        runs).
    """
    dtype = canonical(dtype)

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.ConvertPrecision")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return convert(mod, dtype)

    return _pass
