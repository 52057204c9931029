/*!
 * \file vendor_epilogue.cu
 * \brief ``y = act(y + bias)`` in place: the epilogue of a convolution whose bias and activation
 * cuDNN could not fuse into its own kernel (one launch on the caller's stream, capturable).
 */
#include <cuda_fp16.h>

#include "vendor_epilogue.h"

namespace ios_tvm {
namespace vendor {

namespace {

__device__ __forceinline__ float Load(const void* p, int dtype, int64_t i) {
  return dtype == 1 ? __half2float(static_cast<const __half*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void Store(void* p, int dtype, int64_t i, float v) {
  if (dtype == 1) {
    static_cast<__half*>(p)[i] = __float2half(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

__global__ void BiasActKernel(const void* in, int in_dtype, void* out, int out_dtype, const void* bias,
                              int bias_dtype, int64_t total, int64_t channels, int64_t inner, bool channels_last,
                              int activation) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = Load(in, in_dtype, i);
    if (bias != nullptr) v += Load(bias, bias_dtype, channels_last ? i % channels : (i / inner) % channels);
    if (activation == 1) v = v > 0.0f ? v : 0.0f;
    Store(out, out_dtype, i, v);
  }
}

}  // namespace

cudaError_t BiasActivation(const void* in, int in_dtype, void* out, int out_dtype, const void* bias, int bias_dtype,
                           int64_t outer, int64_t channels, int64_t inner, bool channels_last, int activation,
                           cudaStream_t stream) {
  int64_t total = outer * channels * inner;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  BiasActKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(in, in_dtype, out, out_dtype, bias, bias_dtype,
                                                                       total, channels, inner, channels_last,
                                                                       activation);
  return cudaGetLastError();
}

}  // namespace vendor
}  // namespace ios_tvm
