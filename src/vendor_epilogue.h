/*!
 * \file vendor_epilogue.h
 * \brief The one CUDA kernel of ios_tvm's own: a convolution's bias and activation.
 */
#ifndef IOS_TVM_VENDOR_EPILOGUE_H_
#define IOS_TVM_VENDOR_EPILOGUE_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace ios_tvm {
namespace vendor {

/*!
 * \brief ``out = act(in + bias)`` on ``stream`` (bias per channel, broadcast over the rest; ``in``
 * may be ``out``): the epilogue of a convolution whose bias and activation cuDNN could not fuse.
 * ``channels_last``: the channel is the innermost dimension (NHWC), else the second (NCHW, with
 * ``inner`` elements per channel). dtypes: 0 float32, 1 float16; ``activation``: 0 none, 1 relu;
 * ``bias`` may be null. Returns the launch's error.
 */
cudaError_t BiasActivation(const void* in, int in_dtype, void* out, int out_dtype, const void* bias, int bias_dtype,
                           int64_t outer, int64_t channels, int64_t inner, bool channels_last, int activation,
                           cudaStream_t stream);

}  // namespace vendor
}  // namespace ios_tvm

#endif  // IOS_TVM_VENDOR_EPILOGUE_H_
