/*!
 * \file vendor_cudnn.cc
 * \brief ``ios_tvm.vendor.conv2d``: a 2-D convolution (+ bias) (+ relu) with cuDNN 9's graph API.
 *
 * Only cuDNN 9.0 functions are used (``cudnnBackend*``, ``cudnnCreate``, ``cudnnSetStream``,
 * the error strings), looked up with dlsym in the library vendor_lib.cc opened. Per shape and
 * handle, the first (uncaptured) call builds an operation graph (conv, then the bias add and
 * relu when cuDNN has an engine fusing them, else the conv alone and ios_tvm's epilogue kernel,
 * reading the conv's result from the workspace when the output dtype differs from the data's),
 * asks heuristics mode A for engine configurations, and keeps the first that finalizes, needs
 * no more workspace than the call's planned workspace, and is deterministic (no engine noted
 * nondeterministic, so CUDA-graph replays are bit-identical); for float32 data, engines noted
 * to use tensor cores or down-convert inputs (TF32) only when the call says ``tf32=1``. Later
 * calls execute the cached plan: no search, allocation or synchronization.
 */
#include <cudnn.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "vendor_cuda.h"

namespace ios_tvm {
namespace vendor {

namespace ffi = tvm::ffi;

namespace {

struct CudnnApi {
  decltype(&::cudnnCreate) Create;
  decltype(&::cudnnSetStream) SetStream;
  decltype(&::cudnnGetErrorString) GetErrorString;
  decltype(&::cudnnGetLastErrorString) GetLastErrorString;
  decltype(&::cudnnBackendCreateDescriptor) CreateDescriptor;
  decltype(&::cudnnBackendDestroyDescriptor) DestroyDescriptor;
  decltype(&::cudnnBackendSetAttribute) SetAttribute;
  decltype(&::cudnnBackendGetAttribute) GetAttribute;
  decltype(&::cudnnBackendFinalize) Finalize;
  decltype(&::cudnnBackendExecute) Execute;
};

#define IOS_CUDNN_LOAD(field, fn) api.field = reinterpret_cast<decltype(&::fn)>(Symbol(Lib::kCuDNN, #fn))

const CudnnApi& Api() {
  static const CudnnApi api_ = [] {
    CudnnApi api;
    IOS_CUDNN_LOAD(Create, cudnnCreate);
    IOS_CUDNN_LOAD(SetStream, cudnnSetStream);
    IOS_CUDNN_LOAD(GetErrorString, cudnnGetErrorString);
    IOS_CUDNN_LOAD(GetLastErrorString, cudnnGetLastErrorString);
    IOS_CUDNN_LOAD(CreateDescriptor, cudnnBackendCreateDescriptor);
    IOS_CUDNN_LOAD(DestroyDescriptor, cudnnBackendDestroyDescriptor);
    IOS_CUDNN_LOAD(SetAttribute, cudnnBackendSetAttribute);
    IOS_CUDNN_LOAD(GetAttribute, cudnnBackendGetAttribute);
    IOS_CUDNN_LOAD(Finalize, cudnnBackendFinalize);
    IOS_CUDNN_LOAD(Execute, cudnnBackendExecute);
    return api;
  }();
  return api_;
}

void Check(cudnnStatus_t status, const char* what) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char detail[512] = {0};
  Api().GetLastErrorString(detail, sizeof(detail));
  TVM_FFI_THROW(RuntimeError) << "ios_tvm.vendor.conv2d: " << what << " failed: " << Api().GetErrorString(status)
                              << (detail[0] ? " (" : "") << detail << (detail[0] ? ")" : "");
}

/*! \brief A backend descriptor, destroyed with its owner. */
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { Check(Api().CreateDescriptor(type, &d_), "creating a descriptor"); }
  ~Desc() {
    if (d_ != nullptr) Api().DestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnBackendDescriptor_t* ptr() { return &d_; }

  void Set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* value,
           const char* what) {
    Check(Api().SetAttribute(d_, name, type, count, value), what);
  }
  void Int(cudnnBackendAttributeName_t name, std::vector<int64_t> values, const char* what) {
    Set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data(), what);
  }
  void Ref(cudnnBackendAttributeName_t name, const Desc& other, const char* what) {
    cudnnBackendDescriptor_t d = other.get();
    Set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, what);
  }
  /*! \brief Finalize; false (not an error) where cuDNN says this configuration is not supported. */
  bool TryFinalize() { return Api().Finalize(d_) == CUDNN_STATUS_SUCCESS; }
  void Finalize(const char* what) { Check(Api().Finalize(d_), what); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

using DescPtr = std::shared_ptr<Desc>;

struct Conv {
  int dtype;       // data and weight: 0 float32, 1 float16
  int out_dtype;   // output (a converted model's unit may end in float32)
  int bias_dtype;  // bias (float32 where the model adds it in float32)
  bool nhwc;
  int64_t n, c, h, w, k, cg, r, s, p, q;
  int64_t stride[2], pre[2], post[2], dilation[2];
  bool bias;
  int activation;
  bool tf32;
};

constexpr int64_t kX = 1, kW = 2, kY = 3, kB = 4, kConvOut = 5, kAddOut = 6;

/*! \brief Strides of logical [N, C, H, W] dims stored NCHW or NHWC. */
std::vector<int64_t> StridesOf(int64_t c, int64_t h, int64_t w, bool nhwc) {
  if (nhwc) return {h * w * c, 1, w * c, c};
  return {c * h * w, h * w, w, 1};
}

DescPtr TensorDesc(int64_t uid, cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides,
                   bool is_virtual, int64_t align) {
  auto t = std::make_shared<Desc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  t->Set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor dtype");
  t->Int(CUDNN_ATTR_TENSOR_DIMENSIONS, dims, "tensor dims");
  t->Int(CUDNN_ATTR_TENSOR_STRIDES, strides, "tensor strides");
  t->Int(CUDNN_ATTR_TENSOR_UNIQUE_ID, {uid}, "tensor uid");
  t->Int(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, {align}, "tensor alignment");
  bool v = is_virtual;
  t->Set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "tensor virtual");
  t->Finalize("a tensor descriptor");
  return t;
}

DescPtr Pointwise(cudnnPointwiseMode_t mode) {
  auto pw = std::make_shared<Desc>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  pw->Set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
  pw->Set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
  pw->Finalize("a pointwise descriptor");
  return pw;
}

DescPtr PointwiseOp(const DescPtr& pw, const DescPtr& x, const DescPtr& b, const DescPtr& y) {
  auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op->Ref(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, *pw, "pointwise op");
  op->Ref(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *x, "pointwise x");
  if (b) op->Ref(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b, "pointwise b");
  op->Ref(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, *y, "pointwise y");
  op->Finalize("a pointwise operation");
  return op;
}

/*! \brief A finalized plan and everything it refers to. */
struct Plan {
  std::vector<DescPtr> keep;
  DescPtr plan;
  int64_t workspace = 0;
  bool fused = false;  // the plan computes the whole call (else ios_tvm's epilogue kernel finishes it)
};

bool Allowed(const Desc& cfg, const Conv& cv) {
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t count = 0;
  cudnnBackendDescriptor_t e = engine.get();
  if (Api().GetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &e) !=
      CUDNN_STATUS_SUCCESS) {
    return false;
  }
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  if (Api().GetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                         CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes) != CUDNN_STATUS_SUCCESS) {
    return false;
  }
  for (int64_t i = 0; i < count; ++i) {
    switch (notes[i]) {
      case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC:
      case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION:
        return false;
      case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
      case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
        if (cv.dtype == 0 && !cv.tf32) return false;  // float32 in TF32: only when asked
        break;
      default:
        break;
    }
  }
  return true;
}

cudnnDataType_t TypeOf(int dtype) { return dtype == 1 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT; }

/*!
 * \brief Plan the conv, with its epilogue when ``fuse`` (its output then of the call's output
 * dtype), else alone (its output of the data's dtype: the call's output, or a buffer in the
 * workspace the epilogue kernel reads when the output dtype differs); null when no engine takes it.
 */
std::shared_ptr<Plan> TryPlan(cudnnHandle_t handle, const Conv& cv, bool fuse, size_t workspace,
                              const int64_t align[4]) {
  auto out = std::make_shared<Plan>();
  cudnnDataType_t io = TypeOf(cv.dtype);
  bool epilogue = fuse && (cv.bias || cv.activation != 0);
  cudnnDataType_t y_type = fuse ? TypeOf(cv.out_dtype) : io;
  auto x = TensorDesc(kX, io, {cv.n, cv.c, cv.h, cv.w}, StridesOf(cv.c, cv.h, cv.w, cv.nhwc), false, align[0]);
  auto w = TensorDesc(kW, io, {cv.k, cv.cg, cv.r, cv.s}, StridesOf(cv.cg, cv.r, cv.s, cv.nhwc), false, align[1]);
  auto y = TensorDesc(kY, y_type, {cv.n, cv.k, cv.p, cv.q}, StridesOf(cv.k, cv.p, cv.q, cv.nhwc), false, align[2]);
  auto conv_y = epilogue ? TensorDesc(kConvOut, CUDNN_DATA_FLOAT, {cv.n, cv.k, cv.p, cv.q},
                                      StridesOf(cv.k, cv.p, cv.q, cv.nhwc), true, align[2])
                         : y;
  auto conv = std::make_shared<Desc>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  conv->Set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "conv compute type");
  conv->Set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "conv mode");
  conv->Int(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, {2}, "conv spatial dims");
  conv->Int(CUDNN_ATTR_CONVOLUTION_DILATIONS, {cv.dilation[0], cv.dilation[1]}, "conv dilation");
  conv->Int(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, {cv.stride[0], cv.stride[1]}, "conv strides");
  conv->Int(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, {cv.pre[0], cv.pre[1]}, "conv padding");
  conv->Int(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, {cv.post[0], cv.post[1]}, "conv padding");
  conv->Finalize("the convolution descriptor");
  auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  float alpha = 1.0f, beta = 0.0f;
  op->Set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "conv alpha");
  op->Set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "conv beta");
  op->Ref(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, *conv, "conv op");
  op->Ref(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, *x, "conv x");
  op->Ref(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, *w, "conv w");
  op->Ref(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, *conv_y, "conv y");
  op->Finalize("the convolution operation");
  out->keep = {x, w, y, conv_y, conv, op};
  std::vector<cudnnBackendDescriptor_t> ops = {op->get()};
  if (epilogue) {
    DescPtr last = conv_y;
    if (cv.bias) {
      auto b = TensorDesc(kB, TypeOf(cv.bias_dtype), {1, cv.k, 1, 1}, StridesOf(cv.k, 1, 1, cv.nhwc), false, align[3]);
      auto add_y = cv.activation != 0 ? TensorDesc(kAddOut, CUDNN_DATA_FLOAT, {cv.n, cv.k, cv.p, cv.q},
                                                   StridesOf(cv.k, cv.p, cv.q, cv.nhwc), true, align[2])
                                      : y;
      auto add = Pointwise(CUDNN_POINTWISE_ADD);
      auto add_op = PointwiseOp(add, last, b, add_y);
      out->keep.insert(out->keep.end(), {b, add_y, add, add_op});
      ops.push_back(add_op->get());
      last = add_y;
    }
    if (cv.activation == 1) {
      auto relu = Pointwise(CUDNN_POINTWISE_RELU_FWD);
      auto relu_op = PointwiseOp(relu, last, nullptr, y);
      out->keep.insert(out->keep.end(), {relu, relu_op});
      ops.push_back(relu_op->get());
    }
  }
  auto graph = std::make_shared<Desc>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph->Set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
             ops.data(), "graph ops");
  graph->Set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
  if (!graph->TryFinalize()) return nullptr;
  out->keep.push_back(graph);
  for (cudnnBackendHeurMode_t heur_mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    auto heur = std::make_shared<Desc>(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur->Ref(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph, "heuristics graph");
    heur->Set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode, "heuristics mode");
    if (!heur->TryFinalize()) continue;
    int64_t count = 0;
    if (Api().GetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                           nullptr) != CUDNN_STATUS_SUCCESS || count <= 0) {
      continue;
    }
    std::vector<DescPtr> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.push_back(std::make_shared<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
      raw.push_back(cfgs.back()->get());
    }
    int64_t got = 0;
    if (Api().GetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                           raw.data()) != CUDNN_STATUS_SUCCESS) {
      continue;
    }
    for (int64_t i = 0; i < got; ++i) {
      if (!Allowed(*cfgs[i], cv)) continue;
      auto plan = std::make_shared<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      plan->Set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
      plan->Ref(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *cfgs[i], "plan engine config");
      if (!plan->TryFinalize()) continue;
      int64_t ws = 0, n = 0;
      Check(Api().GetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
            "reading a plan's workspace size");
      if (ws < 0 || static_cast<size_t>(ws) > workspace) continue;
      out->keep.push_back(heur);
      out->keep.push_back(cfgs[i]);
      out->plan = plan;
      out->workspace = ws;
      out->fused = fuse;  // the plan writes the call's output itself (else the epilogue kernel does)
      return out;
    }
  }
  return nullptr;
}

cudnnHandle_t HandleFor(int device, cudaStream_t stream) {
  static thread_local HandleCache<cudnnHandle_t>* cache = new HandleCache<cudnnHandle_t>();
  return cache->Get(device, stream, [device] {
    DeviceScope scope(device);
    cudnnHandle_t h = nullptr;
    Check(Api().Create(&h), "cudnnCreate");
    return h;
  }, "ios_tvm.vendor.conv2d");
}

void Conv2d(ffi::PackedArgs args, ffi::Any* rv) {
  const char* fn = "ios_tvm.vendor.conv2d";
  constexpr int kInts = 12;
  const int nargs = args.size();
  if (nargs != 2 + kInts + 2 && nargs != 3 + kInts + 2) {
    TVM_FFI_THROW(TypeError) << fn << "(x, w, [bias], 12 ints, y, workspace): got " << nargs << " arguments";
  }
  const bool has_bias = nargs == 3 + kInts + 2;
  DLTensor* x = TensorArg(args, 0, fn, "data");
  DLTensor* w = TensorArg(args, 1, fn, "weight");
  DLTensor* b = has_bias ? TensorArg(args, 2, fn, "bias") : nullptr;
  int64_t v[kInts];
  for (int i = 0; i < kInts; ++i) v[i] = args[2 + has_bias + i].cast<int64_t>();
  DLTensor* y = TensorArg(args, nargs - 2, fn, "output");
  DLTensor* ws = TensorArg(args, nargs - 1, fn, "workspace");
  if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4) TVM_FFI_THROW(ValueError) << fn << ": 4-D tensors only";
  Conv cv;
  cv.dtype = DtypeCode(x, fn);
  if (DtypeCode(w, fn) != cv.dtype) TVM_FFI_THROW(TypeError) << fn << ": data and weight must share one dtype";
  cv.out_dtype = DtypeCode(y, fn);
  cv.bias_dtype = b ? DtypeCode(b, fn) : cv.out_dtype;
  cv.nhwc = v[0] == 1;
  const int64_t* xs = x->shape;
  const int64_t* wsh = w->shape;
  const int64_t* ys = y->shape;
  cv.n = xs[0];
  cv.c = cv.nhwc ? xs[3] : xs[1];
  cv.h = cv.nhwc ? xs[1] : xs[2];
  cv.w = cv.nhwc ? xs[2] : xs[3];
  cv.k = wsh[0];
  cv.cg = cv.nhwc ? wsh[3] : wsh[1];
  cv.r = cv.nhwc ? wsh[1] : wsh[2];
  cv.s = cv.nhwc ? wsh[2] : wsh[3];
  cv.p = cv.nhwc ? ys[1] : ys[2];
  cv.q = cv.nhwc ? ys[2] : ys[3];
  cv.stride[0] = v[1], cv.stride[1] = v[2];
  cv.pre[0] = v[3], cv.pre[1] = v[4], cv.post[0] = v[5], cv.post[1] = v[6];
  cv.dilation[0] = v[7], cv.dilation[1] = v[8];
  if (v[9] < 1 || cv.c != cv.cg * v[9]) {
    TVM_FFI_THROW(ValueError) << fn << ": " << cv.c << " input channels do not make " << v[9] << " groups of " << cv.cg;
  }
  cv.bias = has_bias;
  cv.activation = static_cast<int>(v[10]);
  cv.tf32 = v[11] != 0;
  if (b != nullptr && NumElements(b) != cv.k) TVM_FFI_THROW(ValueError) << fn << ": bias must hold one value per channel";

  const int device = x->device.device_id;
  cudaStream_t stream = CurrentStream(device);
  cudnnHandle_t handle = HandleFor(device, stream);
  size_t usable = 0;
  void* work = AlignedWorkspace(ws, &usable);
  // unfused with another output dtype: the conv writes into the workspace first (``temp`` bytes)
  const size_t temp = ((static_cast<size_t>(cv.n * cv.k * cv.p * cv.q) * (cv.dtype ? 2 : 4)) + kWorkspaceAlign - 1) &
                      ~(kWorkspaceAlign - 1);
  const int64_t align[4] = {Alignment(DataPtr(x)), Alignment(DataPtr(w)), Alignment(DataPtr(y)),
                            b ? Alignment(DataPtr(b)) : 256};
  std::string key = Key({reinterpret_cast<int64_t>(handle), cv.dtype, cv.nhwc, cv.n, cv.c, cv.h, cv.w, cv.k, cv.cg,
                         cv.r, cv.s, cv.p, cv.q, cv.stride[0], cv.stride[1], cv.pre[0], cv.pre[1], cv.post[0],
                         cv.post[1], cv.dilation[0], cv.dilation[1], cv.bias, cv.activation, cv.tf32,
                         cv.out_dtype, cv.bias_dtype, static_cast<int64_t>(usable)},
                        {align[0], align[1], align[2], align[3]});
  static thread_local auto* plans = new std::unordered_map<std::string, std::shared_ptr<Plan>>();
  auto it = plans->find(key);
  if (it == plans->end()) {
    if (Capturing(stream)) {
      TVM_FFI_THROW(RuntimeError) << fn << ": no cuDNN plan for this convolution on this thread yet, and plans cannot "
                                  << "be made inside a CUDA graph capture; run the model once without capture first";
    }
    DeviceScope scope(device);
    std::shared_ptr<Plan> plan = TryPlan(handle, cv, true, usable, align);
    if (!plan && (cv.bias || cv.activation != 0 || cv.out_dtype != cv.dtype)) {
      const bool staged = cv.out_dtype != cv.dtype;
      if (!staged || temp < usable) plan = TryPlan(handle, cv, false, staged ? usable - temp : usable, align);
    }
    if (!plan) {
      TVM_FFI_THROW(RuntimeError) << fn << ": cuDNN has no deterministic engine for this convolution (data "
                                  << (cv.nhwc ? "NHWC " : "NCHW ") << cv.n << "x" << cv.c << "x" << cv.h << "x" << cv.w
                                  << ", " << cv.k << " filters " << cv.r << "x" << cv.s << ", "
                                  << (cv.dtype ? "float16" : "float32") << (cv.tf32 ? ", TF32" : "") << ") within "
                                  << usable << " bytes of workspace; build it with kernels='tvm' or 'auto'";
    }
    it = plans->emplace(key, plan).first;
  }
  const Plan& plan = *it->second;
  Check(Api().SetStream(handle, stream), "cudnnSetStream");
  const bool staged = !plan.fused && cv.out_dtype != cv.dtype;
  void* conv_out = staged ? work : DataPtr(y);
  void* cudnn_work = staged ? static_cast<char*>(work) + temp : work;
  std::vector<int64_t> uids = {kX, kW, kY};
  std::vector<void*> ptrs = {DataPtr(x), DataPtr(w), conv_out};
  if (plan.fused && b != nullptr) {
    uids.push_back(kB);
    ptrs.push_back(DataPtr(b));
  }
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.Set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(),
           "variant pack uids");
  pack.Set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()), ptrs.data(),
           "variant pack pointers");
  pack.Set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &cudnn_work, "variant pack workspace");
  pack.Finalize("the variant pack");
  Check(Api().Execute(handle, plan.plan->get(), pack.get()), "cudnnBackendExecute");
  if (!plan.fused) {
    CheckCuda(BiasActivation(conv_out, cv.dtype, DataPtr(y), cv.out_dtype, b ? DataPtr(b) : nullptr, cv.bias_dtype,
                             cv.nhwc ? cv.n * cv.p * cv.q : cv.n, cv.k, cv.nhwc ? 1 : cv.p * cv.q, cv.nhwc,
                             cv.activation, stream),
              "the bias/activation epilogue");
  }
  *rv = ffi::Any(nullptr);
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef().def_packed("ios_tvm.vendor.conv2d", Conv2d);
}

}  // namespace vendor
}  // namespace ios_tvm
