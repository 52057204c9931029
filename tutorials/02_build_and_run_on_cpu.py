"""Tutorial 2: the whole flow on a CPU, in well under a minute.

optimize with stage costs *measured* on this machine -> lower the schedule into the compiled
module -> run it -> check it against the sequential build. On a CPU the groups of a stage run one
after another (the runtime keeps the stage structure), so expect no speed-up here; on a GPU the
same code launches them on concurrent CUDA streams. Run: ``python tutorials/02_build_and_run_on_cpu.py``.
"""

import tempfile

import numpy as np
import tvm
from tvm import relax

import ios_tvm
from ios_tvm import models
from ios_tvm.cost.measure import MeasureConfig, MeasuredCostModel
from ios_tvm.runtime.profiling import median, time_vm

# 1. A small GoogLeNet with deterministic random weights bound as constants.
mod = models.get("googlenet", image_size=64, width=0.25)
mod = models.bind_params(mod, models.random_params(mod, seed=0))
data = models.random_input(mod, seed=1)
target = "llvm"

# 2. Search with measured stage costs. Every candidate stage is timed once through the runtime's
#    fork/switch/join path and kept in a cache keyed by content (reused by later runs).
with tempfile.TemporaryDirectory() as cache:
    cost = MeasuredCostModel(target, MeasureConfig(warmup=1, repeat=3, cache_dir=cache, progress=False))
    schedule = ios_tvm.optimize(mod, target, cost_model=cost)
print(schedule.to_text(max_stages=8))
# Measured on this machine, so optimize ended by timing the sequential, greedy and IOS schedules
# end to end and kept the fastest beyond the noise of the timings (the simpler one on a tie):
# schedule.meta["strategy"] says which one `schedule` is.
kept = schedule.meta["strategy"]
e2e = schedule.meta["end_to_end"]
print(f"kept the {kept} schedule:", ", ".join(f"{label} {t * 1e3:.3f} ms (±{e2e['spread_s'][label] * 1e3:.3f})"
                                              for label, t in e2e["times_s"].items()))

# 3. Build: the schedule is lowered into the module (stages reordered, stream calls inserted,
#    tensors of a stage kept alive to its join); the memory plan is verified race-free first.
scheduled = ios_tvm.build(mod, target, schedule)
sequential = ios_tvm.build(mod, target)  # same pipeline, no schedule

# 4. Run both, compare.
dev = tvm.cpu()
got = relax.VirtualMachine(scheduled, dev)["main"](tvm.runtime.tensor(data)).numpy()
want = relax.VirtualMachine(sequential, dev)["main"](tvm.runtime.tensor(data)).numpy()
np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
print("outputs equal; concurrent stages joined so far:", ios_tvm.runtime.stages_run())

seq = median(time_vm(sequential, dev, [data], number=5, repeat=3))
ios = median(time_vm(scheduled, dev, [data], number=5, repeat=3))
print(f"sequential {seq * 1e3:.3f} ms, {kept} schedule {ios * 1e3:.3f} ms (CPU: groups run one after another)")
