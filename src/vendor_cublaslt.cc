/*!
 * \file vendor_cublaslt.cc
 * \brief ``ios_tvm.vendor.matmul``: a matmul / dense layer (+ bias) (+ relu or gelu) with cuBLASLt.
 *
 * Row-major ``out[..., M, N] = a[..., M, K] @ b`` (``b``: ``[K, N]``, or ``[N, K]`` with
 * ``transpose_b``, or batched with ``a``'s batch) is computed as the column-major
 * ``out^T = op(b) * a^T``, so the bias (one value per column of ``out``) is cuBLASLt's bias
 * over the rows of its result, and relu / gelu (tanh form) its epilogues. Only functions present
 * in every cuBLASLt 13.x are used. Per shape and handle, the first (uncaptured) call makes the
 * descriptors and asks the heuristics for an algorithm within the call's planned workspace
 * (reductions that write through the output in place are excluded); later calls reuse it.
 * float32 computes in full float32 (``CUBLAS_COMPUTE_32F``) unless the call says ``tf32=1``;
 * float16 in float32 accumulation, its output (and bias) float16 or float32 (a converted model's
 * matmul whose bias is added in float32).
 */
#include <cublasLt.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "vendor_cuda.h"

namespace ios_tvm {
namespace vendor {

namespace ffi = tvm::ffi;

namespace {

struct LtApi {
  decltype(&::cublasLtCreate) Create;
  decltype(&::cublasLtGetStatusString) StatusString;
  decltype(&::cublasLtMatmul) Matmul;
  decltype(&::cublasLtMatmulDescCreate) DescCreate;
  decltype(&::cublasLtMatmulDescSetAttribute) DescSet;
  decltype(&::cublasLtMatrixLayoutCreate) LayoutCreate;
  decltype(&::cublasLtMatrixLayoutSetAttribute) LayoutSet;
  decltype(&::cublasLtMatmulPreferenceCreate) PrefCreate;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) PrefSet;
  decltype(&::cublasLtMatmulPreferenceDestroy) PrefDestroy;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) Heuristic;
};

#define IOS_LT_LOAD(field, fn) api.field = reinterpret_cast<decltype(&::fn)>(Symbol(Lib::kCuBLASLt, #fn))

const LtApi& Api() {
  static const LtApi api_ = [] {
    LtApi api;
    IOS_LT_LOAD(Create, cublasLtCreate);
    IOS_LT_LOAD(StatusString, cublasLtGetStatusString);
    IOS_LT_LOAD(Matmul, cublasLtMatmul);
    IOS_LT_LOAD(DescCreate, cublasLtMatmulDescCreate);
    IOS_LT_LOAD(DescSet, cublasLtMatmulDescSetAttribute);
    IOS_LT_LOAD(LayoutCreate, cublasLtMatrixLayoutCreate);
    IOS_LT_LOAD(LayoutSet, cublasLtMatrixLayoutSetAttribute);
    IOS_LT_LOAD(PrefCreate, cublasLtMatmulPreferenceCreate);
    IOS_LT_LOAD(PrefSet, cublasLtMatmulPreferenceSetAttribute);
    IOS_LT_LOAD(PrefDestroy, cublasLtMatmulPreferenceDestroy);
    IOS_LT_LOAD(Heuristic, cublasLtMatmulAlgoGetHeuristic);
    return api;
  }();
  return api_;
}

void Check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm.vendor.matmul: " << what << " failed: " << Api().StatusString(status);
  }
}

/*! \brief Descriptors and the algorithm of one problem (never destroyed: cached for the process). */
struct Problem {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo;
  size_t workspace = 0;
  bool bias = false;
};

cublasLtMatrixLayout_t Layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch,
                              int64_t batch_stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  Check(Api().LayoutCreate(&layout, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    Check(Api().LayoutSet(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)), "batch count");
    Check(Api().LayoutSet(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride, sizeof(batch_stride)),
          "batch stride");
  }
  return layout;
}

cublasLtHandle_t HandleFor(int device, cudaStream_t stream) {
  static thread_local HandleCache<cublasLtHandle_t>* cache = new HandleCache<cublasLtHandle_t>();
  return cache->Get(device, stream, [device] {
    DeviceScope scope(device);
    cublasLtHandle_t h = nullptr;
    Check(Api().Create(&h), "cublasLtCreate");
    return h;
  }, "ios_tvm.vendor.matmul");
}

void MatmulPacked(ffi::PackedArgs args, ffi::Any* rv) {
  const char* fn = "ios_tvm.vendor.matmul";
  constexpr int kInts = 3;
  const int nargs = args.size();
  if (nargs != 2 + kInts + 2 && nargs != 3 + kInts + 2) {
    TVM_FFI_THROW(TypeError) << fn << "(a, b, [bias], transpose_b, activation, tf32, out, workspace): got " << nargs
                             << " arguments";
  }
  const bool has_bias = nargs == 3 + kInts + 2;
  DLTensor* a = TensorArg(args, 0, fn, "a");
  DLTensor* b = TensorArg(args, 1, fn, "b");
  DLTensor* bias = has_bias ? TensorArg(args, 2, fn, "bias") : nullptr;
  const bool trans_b = args[2 + has_bias].cast<int64_t>() != 0;
  const int activation = static_cast<int>(args[3 + has_bias].cast<int64_t>());
  const bool tf32 = args[4 + has_bias].cast<int64_t>() != 0;
  DLTensor* out = TensorArg(args, nargs - 2, fn, "output");
  DLTensor* ws = TensorArg(args, nargs - 1, fn, "workspace");
  const int dtype = DtypeCode(a, fn);
  if (DtypeCode(b, fn) != dtype) TVM_FFI_THROW(TypeError) << fn << ": a and b must share one dtype";
  const int out_dtype = DtypeCode(out, fn);  // a converted model's unit may end in float32
  const int bias_dtype = bias ? DtypeCode(bias, fn) : out_dtype;
  if (dtype == 0 && (out_dtype != 0 || bias_dtype != 0)) {
    TVM_FFI_THROW(TypeError) << fn << ": float32 a and b give a float32 output and take a float32 bias";
  }
  if (a->ndim < 2 || b->ndim < 2) TVM_FFI_THROW(ValueError) << fn << ": a and b need 2 or more dimensions";
  const int64_t k = a->shape[a->ndim - 1];
  const int64_t n = trans_b ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
  const int64_t kb = trans_b ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
  int64_t batch = 1, m = 1;
  if (b->ndim == 2) {
    for (int i = 0; i < a->ndim - 1; ++i) m *= a->shape[i];  // [..., M, K] rows at once
  } else {
    int64_t batch_a = 1;
    for (int i = 0; i < b->ndim - 2; ++i) batch *= b->shape[i];
    for (int i = 0; i < a->ndim - 2; ++i) batch_a *= a->shape[i];
    if (batch != batch_a) TVM_FFI_THROW(ValueError) << fn << ": a and b must have the same batch";
    m = a->shape[a->ndim - 2];
  }
  if (k != kb || NumElements(out) != batch * m * n) {
    TVM_FFI_THROW(ValueError) << fn << ": shapes do not multiply (" << m << "x" << k << " by " << kb << "x" << n << ")";
  }
  if (bias != nullptr && NumElements(bias) != n) TVM_FFI_THROW(ValueError) << fn << ": bias must hold " << n << " values";
  if (activation < 0 || activation > 2) TVM_FFI_THROW(ValueError) << fn << ": activation 0, 1 or 2, got " << activation;

  const int device = a->device.device_id;
  cudaStream_t stream = CurrentStream(device);
  cublasLtHandle_t handle = HandleFor(device, stream);
  size_t usable = 0;
  void* work = AlignedWorkspace(ws, &usable);
  const int64_t align_a = Alignment(DataPtr(a)), align_b = Alignment(DataPtr(b)), align_d = Alignment(DataPtr(out));
  const int64_t align_bias = bias ? Alignment(DataPtr(bias)) : 256;
  std::string key = Key({reinterpret_cast<int64_t>(handle), dtype, out_dtype, bias_dtype, tf32, trans_b, activation,
                         has_bias, m, n, k, batch, static_cast<int64_t>(usable)},
                        {align_a, align_b, align_d, align_bias});
  static thread_local auto* problems = new std::unordered_map<std::string, std::shared_ptr<Problem>>();
  auto it = problems->find(key);
  if (it == problems->end()) {
    if (Capturing(stream)) {
      TVM_FFI_THROW(RuntimeError) << fn << ": no cuBLASLt algorithm for this matmul on this thread yet, and none can be "
                                  << "chosen inside a CUDA graph capture; run the model once without capture first";
    }
    DeviceScope scope(device);
    auto p = std::make_shared<Problem>();
    cudaDataType_t io = dtype == 1 ? CUDA_R_16F : CUDA_R_32F;
    cudaDataType_t io_d = out_dtype == 1 ? CUDA_R_16F : CUDA_R_32F;
    cublasComputeType_t compute = (dtype == 0 && tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    Check(Api().DescCreate(&p->desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
    cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = CUBLAS_OP_N;
    Check(Api().DescSet(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)), "transa");
    Check(Api().DescSet(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)), "transb");
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    if (activation == 0 && has_bias) epilogue = CUBLASLT_EPILOGUE_BIAS;
    if (activation == 1) epilogue = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    if (activation == 2) epilogue = has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    Check(Api().DescSet(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), "epilogue");
    if (has_bias) {  // the heuristics read the pointer's alignment; each call sets its own
      cudaDataType_t bias_type = bias_dtype == 1 ? CUDA_R_16F : CUDA_R_32F;
      Check(Api().DescSet(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)), "bias type");
      const void* bp = DataPtr(bias);
      Check(Api().DescSet(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)), "bias pointer");
    }
    // Lt's A is the model's b, Lt's B the model's a (column-major view of row-major data)
    p->a = trans_b ? Layout(io, k, n, k, static_cast<int32_t>(batch), n * k)
                   : Layout(io, n, k, n, static_cast<int32_t>(batch), n * k);
    p->b = Layout(io, k, m, k, static_cast<int32_t>(batch), m * k);
    p->d = Layout(io_d, n, m, n, static_cast<int32_t>(batch), m * n);
    cublasLtMatmulPreference_t pref = nullptr;
    Check(Api().PrefCreate(&pref), "cublasLtMatmulPreferenceCreate");
    uint64_t max_ws = usable;
    uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_MASK & ~static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_INPLACE);
    uint32_t al_a = static_cast<uint32_t>(align_b), al_b = static_cast<uint32_t>(align_a),
             al_d = static_cast<uint32_t>(align_d);
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof(max_ws)), "workspace pref");
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions, sizeof(reductions)),
          "reduction pref");
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)), "alignment pref");
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)), "alignment pref");
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)), "alignment pref");
    Check(Api().PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)), "alignment pref");
    cublasLtMatmulHeuristicResult_t results[8];
    int found = 0;
    cublasStatus_t st = Api().Heuristic(handle, p->desc, p->a, p->b, p->d, p->d, pref, 8, results, &found);
    Api().PrefDestroy(pref);
    int pick = -1;
    for (int i = 0; st == CUBLAS_STATUS_SUCCESS && i < found; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= usable) {
        pick = i;
        break;
      }
    }
    if (pick < 0) {
      TVM_FFI_THROW(RuntimeError) << fn << ": cuBLASLt has no algorithm for " << batch << " x (" << m << "x" << k
                                  << " by " << k << "x" << n << ") in " << (dtype ? "float16" : "float32")
                                  << " within " << usable << " bytes of workspace; build with kernels='tvm' or 'auto'";
    }
    p->algo = results[pick].algo;
    p->workspace = results[pick].workspaceSize;
    p->bias = has_bias;
    it = problems->emplace(key, p).first;
  }
  const Problem& p = *it->second;
  if (p.bias) {
    const void* bp = DataPtr(bias);
    Check(Api().DescSet(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)), "bias pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  Check(Api().Matmul(handle, p.desc, &alpha, DataPtr(b), p.a, DataPtr(a), p.b, &beta, DataPtr(out), p.d,
                     DataPtr(out), p.d, &p.algo, work, p.workspace, stream),
        "cublasLtMatmul");
  *rv = ffi::Any(nullptr);
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef().def_packed("ios_tvm.vendor.matmul", MatmulPacked);
}

}  // namespace vendor
}  // namespace ios_tvm
