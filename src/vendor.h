/*!
 * \file vendor.h
 * \brief Vendor kernels (cuDNN, cuBLASLt) as fixed-name packed functions a compiled model calls.
 *
 * A model built with ``kernels="vendor"`` (or ``"auto"``) calls, through ``R.call_dps_packed``,
 *
 *   ios_tvm.vendor.conv2d(x, w, [bias], layout, stride_h, stride_w, pad_top, pad_left, pad_bottom,
 *                         pad_right, dilation_h, dilation_w, groups, activation, tf32, y, workspace)
 *   ios_tvm.vendor.matmul(a, b, [bias], transpose_b, activation, tf32, out, workspace)
 *
 * ``layout``: 0 = NCHW data with OIHW weights, 1 = NHWC data with OHWI weights; ``activation``:
 * 0 none, 1 relu, 2 gelu (tanh approximation; matmul only); ``tf32``: 1 lets float32 kernels
 * compute in TF32 on tensor cores (0: full float32, as TVM's own kernels). ``workspace`` is a
 * uint8 tensor the memory planner placed (a destination of the call), so concurrent groups
 * never share one and a captured CUDA graph always sees the same one.
 *
 * The libraries are never linked: they are opened with dlopen on the first call
 * (vendor_lib.cc) and their functions looked up by name.
 */
#ifndef IOS_TVM_VENDOR_H_
#define IOS_TVM_VENDOR_H_

#include <string>

namespace ios_tvm {
namespace vendor {

/*! \brief The libraries ios_tvm may open. */
enum class Lib : int { kCuDNN = 0, kCuBLASLt = 1 };

/*!
 * \brief The handle of library ``lib``, opened on first use; throws
 * ``ios_tvm.MissingDependencyError`` saying what to install when it is not found or too old.
 * Search order: $IOS_TVM_VENDOR_LIB_PATH (folders or files, ':'-separated), a copy the process
 * already loaded (e.g. by PyTorch), the ``nvidia/`` folders of installed Python packages
 * (registered from Python with ``ios_tvm.vendor.set_search_dirs``), then the system's library path.
 * Where no ``libcublasLt.so.13`` is found, ``libcublasLt.so.12`` (PyTorch for CUDA 12's) is looked
 * for the same way: it has every function and value ios_tvm calls.
 */
void* Open(Lib lib);

/*! \brief Function ``name`` of library ``lib`` (opened if needed); throws if it is absent. */
void* Symbol(Lib lib, const char* name);

/*! \brief Throw ``ios_tvm.<kind>`` with ``message`` (a typed error in Python). */
[[noreturn]] void Throw(const std::string& kind, const std::string& message);

}  // namespace vendor
}  // namespace ios_tvm

#endif  // IOS_TVM_VENDOR_H_
