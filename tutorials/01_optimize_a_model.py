"""Tutorial 1: find an IOS schedule for a model, look at it, save it.

Runs on any machine in a few seconds (no GPU needed): the analytic cost model predicts stage
latencies from the datasheet of the GPU the target names (sm_90: an H200; add ``"model": "h100"``
for an H100). Run it with ``python tutorials/01_optimize_a_model.py``.
"""

import tempfile
from pathlib import Path

import ios_tvm
from ios_tvm import models

# 1. A model. Any Relax module with static shapes works; here the zoo's Inception-v3 (299x299).
mod = models.get("inception_v3")

# 2. The graph IOS schedules: one node per kernel TVM will launch for this target.
target = {"kind": "cuda", "arch": "sm_90"}
graph = ios_tvm.extract_graph(mod, target)
print("graph:", graph.summary())

# 3. Search. r = kernels per stream per stage, s = streams per stage (the paper's defaults).
schedule = ios_tvm.optimize(mod, target, max_group_size=3, max_num_groups=8, graph=graph)
print(schedule.to_text(max_stages=12))

base = schedule.meta["baselines_s"]
print(f"predicted: sequential {base['sequential'] * 1e3:.3f} ms, greedy {base['greedy'] * 1e3:.3f} ms, "
      f"IOS {schedule.latency * 1e3:.3f} ms")

# 4. Save it; loading checks that it belongs to this model.
with tempfile.TemporaryDirectory() as tmp:
    path = schedule.save(Path(tmp) / "inception_v3.schedule.json")
    again = ios_tvm.Schedule.load(path, graph)
    assert again.as_lists() == schedule.as_lists()
    print("saved and reloaded", path.name)
