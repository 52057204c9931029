"""Reading Relax: what ios_tvm knows of a model and of TVM, below any pass of its own.

* :mod:`~ios_tvm.ir.target`: targets and devices;
* :mod:`~ios_tvm.ir.backend`: TVM's backend pass lists, cut where ios_tvm steps in;
* :mod:`~ios_tvm.ir.graph`: the kernel graph (:class:`~ios_tvm.ir.graph.OpGraph`) of a fused model;
* :mod:`~ios_tvm.ir.bindings`: helpers over ``main``'s binding blocks;
* :mod:`~ios_tvm.ir.merge_plan`: which convolutions and matmuls merge (IOS-Merge's plan), over
  :mod:`~ios_tvm.ir.merge_units`: the units that merge, by kind;
* :mod:`~ios_tvm.ir.precision`: the dtype a model computes in, its fp16 / bf16 conversion, tolerances;
* :mod:`~ios_tvm.ir.tensors`: deterministic random inputs and kernel arguments;
* :mod:`~ios_tvm.ir.tvm_private`: every private TVM name ios_tvm relies on, checked in one place.
"""
