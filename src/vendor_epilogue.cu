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

template <typename T>
__device__ __forceinline__ float Load(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}
template <>
__device__ __forceinline__ float Load<__half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
template <typename T>
__device__ __forceinline__ void Store(T* p, int64_t i, float v) {
  p[i] = static_cast<T>(v);
}
template <>
__device__ __forceinline__ void Store<__half>(__half* p, int64_t i, float v) {
  p[i] = __float2half(v);
}

template <typename T>
__global__ void BiasActKernel(T* y, const T* bias, int64_t total, int64_t channels, int64_t inner,
                              bool channels_last, int activation) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = Load(y, i);
    if (bias != nullptr) {
      int64_t c = channels_last ? i % channels : (i / inner) % channels;
      v += Load(bias, c);
    }
    if (activation == 1) v = v > 0.0f ? v : 0.0f;
    Store(y, i, v);
  }
}

}  // namespace

cudaError_t BiasActivation(void* y, const void* bias, int64_t outer, int64_t channels, int64_t inner,
                           bool channels_last, int dtype, int activation, cudaStream_t stream) {
  int64_t total = outer * channels * inner;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  if (dtype == 1) {
    BiasActKernel<__half><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        static_cast<__half*>(y), static_cast<const __half*>(bias), total, channels, inner, channels_last, activation);
  } else {
    BiasActKernel<float><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        static_cast<float*>(y), static_cast<const float*>(bias), total, channels, inner, channels_last, activation);
  }
  return cudaGetLastError();
}

}  // namespace vendor
}  // namespace ios_tvm
