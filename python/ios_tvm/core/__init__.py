"""The pure core of ios_tvm: no TVM, no I/O beyond schedule files.

* :mod:`~ios_tvm.core.dag`: DAGs over bit sets;
* :mod:`~ios_tvm.core.blocks`: cut points, and the blocks the search solves one at a time;
* :mod:`~ios_tvm.core.stages`: the candidate stages (endings) of a DP state, by definition;
* :mod:`~ios_tvm.core.plan`: a DAG's states and endings enumerated once, as arrays (what the
  search looks at);
* :mod:`~ios_tvm.core.search`: the IOS dynamic program (over plans, optionally under a memory
  budget), the sequential and greedy schedules;
* :mod:`~ios_tvm.core.reference`: the dynamic program written the direct way, which the fast one
  is checked against;
* :mod:`~ios_tvm.core.memory`: the search's model of activation memory, and TVM's static memory
  plan replayed;
* :mod:`~ios_tvm.core.schedule`: :class:`~ios_tvm.core.schedule.Schedule`, its checks and its file;
* :mod:`~ios_tvm.core.schedule_format`: the schedule file's format, read field by field;
* :mod:`~ios_tvm.core.files`: files written whole or not at all;
* :mod:`~ios_tvm.core.descent`: the steepest descent that picks a stage's kernel variants.

``tests/test_layers.py`` checks that importing any of these loads no TVM.
"""
