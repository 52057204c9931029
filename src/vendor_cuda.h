/*!
 * \file vendor_cuda.h
 * \brief What the cuDNN and cuBLASLt calls share: the current stream, capture checks, handles
 * per (thread, device, stream), tensor checks and the planned workspace.
 *
 * Rules every vendor call keeps (so it is correct on concurrent streams and in a CUDA graph):
 * the stream is TVM's environment stream, read on every call (``TVMFFIEnvGetStream``: the
 * stage calls switch it); handles, descriptors, plans and algorithms are made in the first,
 * uncaptured run and cached per shape; nothing is allocated, searched or synchronized while the
 * stream is being captured (a miss there is an error that says to run once uncaptured first,
 * which TVM's capture does); the workspace is the call's own planned tensor.
 */
#ifndef IOS_TVM_VENDOR_CUDA_H_
#define IOS_TVM_VENDOR_CUDA_H_

#include <cuda_runtime.h>
#include <dlpack/dlpack.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/tvm_ffi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "stage_state.h"
#include "vendor.h"
#include "vendor_epilogue.h"

namespace ios_tvm {
namespace vendor {

/*! \brief Workspaces are used from this alignment on (the planner adds this much slack). */
constexpr size_t kWorkspaceAlign = 256;

inline cudaStream_t CurrentStream(int device_id) {
  return static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, device_id));
}

inline bool Capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;  // e.g. the legacy stream while another stream captures: treat as capturing
  }
  return status != cudaStreamCaptureStatusNone;
}

/*! \brief The device ``device_id`` current for the scope (handles and plans belong to one). */
class DeviceScope {
 public:
  explicit DeviceScope(int device_id) {
    cudaGetDevice(&prev_);
    if (prev_ != device_id) cudaSetDevice(device_id);
    restore_ = prev_ != device_id;
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(prev_);
  }

 private:
  int prev_ = 0;
  bool restore_ = false;
};

/*!
 * \brief Handles of one library per (device, stream) on this thread, made on first use outside
 * capture. A stream first seen while capturing is the fresh stream TVM captures on in place of
 * the stream the uncaptured run used outside concurrent stages: it gets the handle of the first
 * such stream (not a pool stream of the stage calls) this thread used, so the plans that handle
 * made in the uncaptured run serve the capture; the pool streams themselves were all seen then.
 */
template <typename H>
class HandleCache {
 public:
  H Get(int device, cudaStream_t stream, const std::function<H()>& create, const char* what) {
    auto it = handles_.find({device, stream});
    if (it != handles_.end()) return it->second;
    if (Capturing(stream)) {
      auto first = first_.find(device);
      if (first != first_.end()) return first->second;
      TVM_FFI_THROW(RuntimeError) << "ios_tvm: " << what << " was first called inside a CUDA graph capture, "
                                  << "where no handle can be made; run the model once without capture first "
                                  << "(TVM's cuda_graph run_or_capture does)";
    }
    H h = create();
    handles_[{device, stream}] = h;
    if (!runtime::CudaIsPoolStream(device, stream)) first_.emplace(device, h);
    return h;
  }

 private:
  std::map<std::pair<int, cudaStream_t>, H> handles_;  // never destroyed: CUDA may be gone at exit
  std::map<int, H> first_;
};

inline void* DataPtr(const DLTensor* t) { return static_cast<char*>(t->data) + t->byte_offset; }

inline int64_t NumElements(const DLTensor* t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}

inline bool Contiguous(const DLTensor* t) {
  if (t->strides == nullptr) return true;
  int64_t expect = 1;
  for (int i = t->ndim - 1; i >= 0; --i) {
    if (t->shape[i] != 1 && t->strides[i] != expect) return false;
    expect *= t->shape[i];
  }
  return true;
}

/*! \brief 0 for float32, 1 for float16; throws for anything else. */
inline int DtypeCode(const DLTensor* t, const char* what) {
  if (t->dtype.code == kDLFloat && t->dtype.bits == 32 && t->dtype.lanes == 1) return 0;
  if (t->dtype.code == kDLFloat && t->dtype.bits == 16 && t->dtype.lanes == 1) return 1;
  Throw("InvalidArgumentError", std::string(what) + ": vendor kernels take float32 or float16 tensors");
}

inline DLTensor* TensorArg(tvm::ffi::PackedArgs args, int i, const char* fn, const char* role) {
  auto t = args[i].try_cast<DLTensor*>();
  if (!t.has_value()) {
    TVM_FFI_THROW(TypeError) << fn << ": argument " << i << " (" << role << ") must be a tensor";
  }
  DLTensor* out = t.value();
  if (out->device.device_type != kDLCUDA) {
    Throw("TargetError", std::string(fn) + ": " + role + " is not on a CUDA device: vendor kernels run on NVIDIA "
                             "GPUs (build for a CUDA target, or with kernels='tvm')");
  }
  if (!Contiguous(out)) TVM_FFI_THROW(ValueError) << fn << ": " << role << " must be contiguous";
  return out;
}

/*! \brief The workspace from its first aligned byte, and the bytes usable from there. */
inline void* AlignedWorkspace(const DLTensor* ws, size_t* usable) {
  auto base = reinterpret_cast<uintptr_t>(DataPtr(ws));
  size_t bytes = static_cast<size_t>(NumElements(ws)) * ((ws->dtype.bits * ws->dtype.lanes + 7) / 8);
  uintptr_t aligned = (base + kWorkspaceAlign - 1) & ~(uintptr_t)(kWorkspaceAlign - 1);
  size_t lost = static_cast<size_t>(aligned - base);
  *usable = bytes > lost ? bytes - lost : 0;
  return reinterpret_cast<void*>(aligned);
}

/*! \brief Largest power of two (<= 256) dividing the address: what a plan may assume. */
inline int64_t Alignment(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  int64_t align = 256;
  while (align > 1 && (a % static_cast<uintptr_t>(align)) != 0) align /= 2;
  return align;
}

/*! \brief A cache key from integers. */
inline std::string Key(std::initializer_list<int64_t> values, const std::vector<int64_t>& more = {}) {
  std::ostringstream os;
  for (int64_t v : values) os << v << ',';
  os << '|';
  for (int64_t v : more) os << v << ',';
  return os.str();
}

/*! \brief CUDA errors of the vendor calls (kernel launches of the epilogue). */
inline void CheckCuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm.vendor: " << what << " failed: " << cudaGetErrorString(err);
  }
}

}  // namespace vendor
}  // namespace ios_tvm

#endif  // IOS_TVM_VENDOR_CUDA_H_
