/*!
 * \file cuda_streams.cc
 * \brief CUDA stream pool and events for concurrent stages (built when CMake finds CUDA).
 *
 * Streams (non-blocking) and events (cudaEventDisableTiming) are created once per device and
 * reused by every run. Only the CUDA runtime API is used; kernels are TVM's.
 *
 * CUDA graphs: inside a stream capture (TVM's vm.builtin.cuda_graph.run_or_capture) the calls
 * below only record events, wait on them and switch TVM's environment stream, all legal in a
 * global-mode capture; a group stream that waits on the fork event joins the capture, and the
 * join makes the capturing stream wait on every group stream, which joins them back. The pool
 * itself is created outside any capture (TVM runs a captured function once uncaptured first);
 * creating streams or events while the caller's stream is capturing is refused.
 */
#include <cuda_runtime.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/tvm_ffi.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "stage_state.h"

namespace ios_tvm {
namespace runtime {

namespace {

constexpr int32_t kCUDA = 2;

#define IOS_CUDA_CALL(expr)                                                        \
  do {                                                                             \
    cudaError_t err_ = (expr);                                                     \
    if (err_ != cudaSuccess) {                                                     \
      TVM_FFI_THROW(RuntimeError) << "ios_tvm: " #expr " failed: " << cudaGetErrorString(err_); \
    }                                                                              \
  } while (0)

struct DevicePool {
  std::vector<cudaStream_t> streams;
  std::vector<cudaEvent_t> join_events;
  cudaEvent_t fork_event = nullptr;
  cudaEvent_t timer_start = nullptr;  // timing events (the others have timing disabled)
  cudaEvent_t timer_end = nullptr;
  cudaStream_t capture = nullptr;  // where CudaTimeGraph captures a stage
};

std::mutex g_mutex;
std::unordered_map<int32_t, std::unique_ptr<DevicePool>> g_pools;

/*! \brief Refuse to create streams or events while ``caller`` is being captured into a CUDA graph. */
void CheckNotCapturing(cudaStream_t caller, int num_streams, size_t have) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaError_t err = cudaStreamIsCapturing(caller, &status);
  if (err == cudaSuccess && status == cudaStreamCaptureStatusNone) return;
  if (err != cudaSuccess) cudaGetLastError();  // e.g. the legacy stream while another stream captures
  TVM_FFI_THROW(RuntimeError) << "ios_tvm: a stage needs " << num_streams << " streams but the pool holds "
                              << have << ", and streams cannot be created during a CUDA graph capture; "
                              << "run the model once without capture first (TVM's run_or_capture does)";
}

DevicePool* GetPool(int32_t device_id, int num_streams, cudaStream_t caller) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = g_pools[device_id];
  if (!slot) slot = std::make_unique<DevicePool>();
  DevicePool* pool = slot.get();
  if (pool->fork_event != nullptr && static_cast<int>(pool->streams.size()) >= num_streams) {
    return pool;  // the common case: nothing to create, no device switch
  }
  CheckNotCapturing(caller, num_streams, pool->streams.size());
  int prev_device = 0;
  IOS_CUDA_CALL(cudaGetDevice(&prev_device));
  IOS_CUDA_CALL(cudaSetDevice(device_id));  // streams and events belong to the current device
  if (pool->fork_event == nullptr) {
    IOS_CUDA_CALL(cudaEventCreateWithFlags(&pool->fork_event, cudaEventDisableTiming));
    IOS_CUDA_CALL(cudaEventCreate(&pool->timer_start));
    IOS_CUDA_CALL(cudaEventCreate(&pool->timer_end));
    IOS_CUDA_CALL(cudaStreamCreateWithFlags(&pool->capture, cudaStreamNonBlocking));
  }
  while (static_cast<int>(pool->streams.size()) < num_streams) {
    cudaStream_t s;
    cudaEvent_t e;
    IOS_CUDA_CALL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    IOS_CUDA_CALL(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    pool->streams.push_back(s);
    pool->join_events.push_back(e);
  }
  IOS_CUDA_CALL(cudaSetDevice(prev_device));
  return pool;
}

}  // namespace

bool CudaIsPoolStream(int32_t device_id, void* stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_pools.find(device_id);
  if (it == g_pools.end() || !it->second) return false;
  const auto& streams = it->second->streams;
  return std::find(streams.begin(), streams.end(), static_cast<cudaStream_t>(stream)) != streams.end();
}

int CudaDeviceCount() {
  static std::atomic<int> cached{-1};  // a GPU does not come and go; ask the driver once
  int known = cached.load();
  if (known > 0) return known;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  cached.store(n);
  return n;
}

int32_t CudaResolveDevice(int32_t device_id) {
  if (device_id >= 0) return device_id;
  int dev = 0;
  IOS_CUDA_CALL(cudaGetDevice(&dev));
  return dev;
}

void CudaFork(StageState* st) {
  // the caller's stream: under capture, the capturing stream, restored by CudaJoin
  auto main = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kCUDA, st->device_id));
  DevicePool* pool = GetPool(st->device_id, st->num_groups, main);
  st->pool = pool;
  st->main_stream = main;
  IOS_CUDA_CALL(cudaEventRecord(pool->fork_event, main));
  for (int i = 0; i < st->num_groups; ++i) {
    IOS_CUDA_CALL(cudaStreamWaitEvent(pool->streams[i], pool->fork_event, 0));
  }
}

void CudaSwitch(StageState* st, int group) {
  auto* pool = static_cast<DevicePool*>(st->pool);
  if (TVMFFIEnvSetStream(kCUDA, st->device_id, pool->streams[group], nullptr) != 0) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: TVMFFIEnvSetStream failed";
  }
}

void CudaJoin(StageState* st) {
  auto* pool = static_cast<DevicePool*>(st->pool);
  auto main = static_cast<cudaStream_t>(st->main_stream);
  for (int i = 0; i < st->num_groups; ++i) {
    IOS_CUDA_CALL(cudaEventRecord(pool->join_events[i], pool->streams[i]));
    IOS_CUDA_CALL(cudaStreamWaitEvent(main, pool->join_events[i], 0));
  }
  if (TVMFFIEnvSetStream(kCUDA, st->device_id, main, nullptr) != 0) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: TVMFFIEnvSetStream failed";
  }
}

double CudaTime(int32_t device_id, const std::function<void()>& body) {
  device_id = CudaResolveDevice(device_id);
  auto main = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kCUDA, device_id));
  DevicePool* pool = GetPool(device_id, 1, main);
  IOS_CUDA_CALL(cudaEventRecord(pool->timer_start, main));
  body();
  IOS_CUDA_CALL(cudaEventRecord(pool->timer_end, main));
  IOS_CUDA_CALL(cudaEventSynchronize(pool->timer_end));
  float ms = 0.0f;
  IOS_CUDA_CALL(cudaEventElapsedTime(&ms, pool->timer_start, pool->timer_end));
  return static_cast<double>(ms) * 1e-3;
}

namespace {

void SetEnvStream(int32_t device_id, cudaStream_t stream) {
  if (TVMFFIEnvSetStream(kCUDA, device_id, stream, nullptr) != 0) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: TVMFFIEnvSetStream failed";
  }
}

/*! \brief Seconds of one launch of ``exec`` on ``main``, timed with the pool's events. */
double TimeLaunch(DevicePool* pool, cudaGraphExec_t exec, cudaStream_t main) {
  IOS_CUDA_CALL(cudaEventRecord(pool->timer_start, main));
  IOS_CUDA_CALL(cudaGraphLaunch(exec, main));
  IOS_CUDA_CALL(cudaEventRecord(pool->timer_end, main));
  IOS_CUDA_CALL(cudaEventSynchronize(pool->timer_end));
  float ms = 0.0f;
  IOS_CUDA_CALL(cudaEventElapsedTime(&ms, pool->timer_start, pool->timer_end));
  return static_cast<double>(ms) * 1e-3;
}

}  // namespace

std::vector<double> CudaTimeGraph(int32_t device_id, const std::function<void()>& body, int64_t warmup,
                                  int64_t repeat) {
  device_id = CudaResolveDevice(device_id);
  auto main = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kCUDA, device_id));
  DevicePool* pool = GetPool(device_id, 1, main);
  body();  // uncaptured first: TVM loads kernels and the pool makes its streams outside any capture
  IOS_CUDA_CALL(cudaStreamSynchronize(main));
  cudaGraph_t graph = nullptr;
  SetEnvStream(device_id, pool->capture);  // the stage launches on the capture stream, as in a captured model
  IOS_CUDA_CALL(cudaStreamBeginCapture(pool->capture, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(pool->capture, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    SetEnvStream(device_id, main);
    throw;
  }
  cudaError_t ended = cudaStreamEndCapture(pool->capture, &graph);
  SetEnvStream(device_id, main);
  IOS_CUDA_CALL(ended);
  cudaGraphExec_t exec = nullptr;
  cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  IOS_CUDA_CALL(made);
  std::vector<double> out;
  try {
    for (int64_t i = 0; i < warmup; ++i) IOS_CUDA_CALL(cudaGraphLaunch(exec, main));
    for (int64_t i = 0; i < repeat; ++i) out.push_back(TimeLaunch(pool, exec, main));
  } catch (...) {
    cudaGraphExecDestroy(exec);
    throw;
  }
  IOS_CUDA_CALL(cudaGraphExecDestroy(exec));
  return out;
}

}  // namespace runtime
}  // namespace ios_tvm
