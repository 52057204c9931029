"""The memory plan of a scheduled module, checked: concurrent groups must not share storage.

Relax's static memory planner frees a tensor after its last use *in binding order*. Once the
groups of a stage run concurrently, a buffer last read by group 0 could be handed to a kernel of
group 1 of the same stage while group 0 still runs. Lowering passes every tensor a stage touches
to the stage's join (a keep-alive) so that cannot happen; :func:`verify_memory` checks the planned
module for exactly that, and :func:`VerifyMemory` runs it inside a build, right after planning.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

from ..errors import MemoryPlanError
from ..ir.tvm_private import is_vm_builtin
from ..runtime import FORK, JOIN, RUNTIME_CALLS, SWITCH


def VerifyMemory() -> tvm.transform.Pass:
    """Check a scheduled module's static memory plan for storage shared by concurrent groups.

    Returns
    -------
    tvm.transform.Pass
        A module pass named ``ios_tvm.VerifyMemory`` that returns the module unchanged, or
        raises :class:`~ios_tvm.errors.MemoryPlanError` listing what :func:`verify_memory`
        found. It runs right after ``StaticPlanBlockMemory``.
    """

    @tvm.transform.module_pass(opt_level=0, name="ios_tvm.VerifyMemory")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        problems = verify_memory(mod)
        if problems:
            raise MemoryPlanError("ios_tvm: the lowered schedule is not safe to run concurrently:\n  "
                                  + "\n  ".join(problems[:20]))
        return mod

    return _pass


def _extern_name(value: Any) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
        return str(value.op.global_symbol)
    return None


def verify_memory(planned: tvm.IRModule) -> list[str]:
    """Check a module after ``StaticPlanBlockMemory`` for races between concurrent groups.

    Returns the problems found (empty: safe): two groups of one stage touching the same storage
    while one of them writes it, a kernel outside a group inside a stage, or a tensor written by
    one group and read by another group of the same stage.
    """
    fn = planned["main"]
    storage_of: dict[Any, Any] = {}  # tensor var -> storage var
    written: set[Any] = set()
    problems: list[str] = []
    stage = -1
    group = -1
    in_stage = False
    # per open stage: storage -> {group: wrote?}
    touched: dict[Any, dict[int, bool]] = {}
    producer_group: dict[Any, int] = {}

    def storage(v: Any) -> Any:
        return storage_of.get(v, v)

    for block in fn.body.blocks:
        for b in block.bindings:
            value = b.value
            name = _extern_name(value)
            if name == FORK:
                stage += 1
                in_stage, group, touched, producer_group = True, -1, {}, {}
                continue
            if name == SWITCH:
                group = int(value.args[2].value)
                continue
            if name == JOIN:
                for st, groups in touched.items():
                    writers = [g for g, w in groups.items() if w]
                    if writers and len(groups) > 1:
                        problems.append(f"stage {stage}: storage {st.name} is used by groups "
                                        f"{sorted(groups)} and written by {sorted(writers)}")
                in_stage, group = False, -1
                continue
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                op = value.op.name
                if op == "relax.memory.alloc_tensor":
                    storage_of[b.var] = value.args[0]
                    continue
                if op in ("relax.memory.view", "relax.reshape"):
                    src = value.args[0]
                    storage_of[b.var] = storage(src)
                    if src not in storage_of or src in written:  # a view of an input or of written data
                        written.add(b.var)  # is read, not written, by its first kernel
                    continue
            if not isinstance(value, relax.Call):
                continue
            is_kernel = isinstance(value.op, tvm.ir.GlobalVar) or (
                name is not None and name not in RUNTIME_CALLS and not is_vm_builtin(name))
            if not (is_kernel and in_stage):
                for a in value.args:
                    if isinstance(a, relax.Var):
                        written.add(a)
                continue
            if group < 0:
                problems.append(f"stage {stage}: kernel {b.var.name} runs before any stage_switch")
                continue
            for a in value.args:
                if not isinstance(a, relax.Var) or not isinstance(a.ty, relax.TensorType):
                    continue
                writes = a in storage_of and a not in written  # first use of a fresh tensor
                if writes:
                    written.add(a)
                    producer_group[a] = group
                elif producer_group.get(a, group) != group:
                    problems.append(f"stage {stage}: {a.name} is written by group {producer_group[a]} "
                                    f"and read by group {group} without a join between them")
                st = storage(a)
                if st is a and a not in storage_of:
                    continue  # a parameter or a tensor the planner did not place
                g = touched.setdefault(st, {})
                g[group] = g.get(group, False) or writes
    return problems


def planned_bytes(planned: tvm.IRModule) -> int:
    """Bytes of storage the static memory plan of ``planned`` (a module after
    ``StaticPlanBlockMemory``, e.g. from :func:`ios_tvm.compiler.plan_memory`) allocates for
    ``main``'s tensors: activations and outputs, not weights or inputs. Concurrency has a price
    here: the buffers of concurrent groups, and what a stage keeps alive to its join, cannot
    share storage."""
    total = 0
    for block in planned["main"].body.blocks:
        for b in block.bindings:
            value = b.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) \
                    and value.op.name == "relax.memory.alloc_storage":
                total += int(value.args[0].values[0])
    return total
