"""Small helpers over the ``main`` function of a Relax module: its runtime inputs, its dataflow
block, replacing one of its binding blocks. Every IR-to-IR step of ios_tvm (schedule lowering,
merged kernels, kernel variants) rewrites ``main`` through :func:`replace_block`."""

from __future__ import annotations

import tvm
from tvm import relax


def num_input(fn: relax.Function) -> int:
    """How many leading parameters of ``fn`` are runtime inputs (TVM's ``num_input`` attribute:
    they change from call to call; the rest are weights). Without it, every parameter is one."""
    if fn.attrs is not None and "num_input" in fn.attrs:
        return int(fn.attrs["num_input"])
    return len(fn.params)


def dataflow_index(mod: tvm.IRModule, func: str = "main") -> int:
    """Index of the one dataflow block of ``mod[func]`` (callers have checked there is one)."""
    found = [i for i, b in enumerate(mod[func].body.blocks) if isinstance(b, relax.DataflowBlock)]
    assert len(found) == 1, f"{func} has {len(found)} dataflow blocks; the model was checked to have one"
    return found[0]


def replace_block(mod: tvm.IRModule, index: int, bindings: list[relax.Binding], *, dataflow: bool | None = None,
                  is_pure: bool | None = None, func: str = "main") -> tvm.IRModule:
    """A copy of ``mod`` whose ``func`` has block ``index`` replaced by ``bindings``.

    Parameters
    ----------
    dataflow
        Whether the new block is a dataflow block (default: the kind of the block it replaces).
    is_pure
        Purity of the new function (default: that of the old one).
    """
    fn = mod[func]
    blocks = list(fn.body.blocks)
    if dataflow is None:
        dataflow = isinstance(blocks[index], relax.DataflowBlock)
    blocks[index] = relax.DataflowBlock(bindings) if dataflow else relax.BindingBlock(bindings)
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out[func] = relax.Function(fn.params, relax.SeqExpr(blocks, fn.body.body), fn.ret_ty,
                               fn.is_pure if is_pure is None else is_pure, fn.attrs)
    return out
