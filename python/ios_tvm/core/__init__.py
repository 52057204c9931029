"""The pure core of ios_tvm: no TVM, no I/O beyond schedule files.

* :mod:`~ios_tvm.core.dag`: DAGs over bit sets;
* :mod:`~ios_tvm.core.blocks`: cut points, and the blocks the search solves one at a time;
* :mod:`~ios_tvm.core.stages`: the candidate stages (endings) of a DP state;
* :mod:`~ios_tvm.core.search`: the IOS dynamic program, the sequential and greedy schedules;
* :mod:`~ios_tvm.core.schedule`: :class:`~ios_tvm.core.schedule.Schedule`, its checks and its file;
* :mod:`~ios_tvm.core.descent`: the steepest descent that picks a stage's kernel variants.

``tests/test_layers.py`` checks that importing any of these loads no TVM.
"""
