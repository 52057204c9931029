/*!
 * \file stage_state.h
 * \brief The per-thread state of an open stage, shared by the CPU and CUDA paths.
 */
#ifndef IOS_TVM_STAGE_STATE_H_
#define IOS_TVM_STAGE_STATE_H_

#include <cstdint>
#include <functional>
#include <vector>

namespace ios_tvm {
namespace runtime {

/*! \brief Most streams a stage may use unless raised with set_pool_size. */
constexpr int kDefaultPoolSize = 8;
/*! \brief Hard limit of the pool size. */
constexpr int kMaxPoolSize = 64;

/*! \brief What is known between stage_fork and stage_join on this thread. */
struct StageState {
  bool open = false;
  int32_t device_type = 0;
  int32_t device_id = 0;
  int num_groups = 0;
  int current_group = -1;
  void* main_stream = nullptr;
  void* pool = nullptr;  // the device's stream pool (CUDA), looked up once per stage at fork
};

#ifdef IOS_TVM_WITH_CUDA
/*! \brief CUDA path: record/wait events and switch the environment stream. */
void CudaFork(StageState* st);
void CudaSwitch(StageState* st, int group);
void CudaJoin(StageState* st);
int32_t CudaResolveDevice(int32_t device_id);
/*! \brief Whether ``stream`` is one of the device's pool streams (the streams stage groups run on). */
bool CudaIsPoolStream(int32_t device_id, void* stream);
int CudaDeviceCount();
/*! \brief Seconds ``body`` takes on the device's current stream, timed with CUDA events. */
double CudaTime(int32_t device_id, const std::function<void()>& body);
/*! \brief Seconds of ``repeat`` replays (after ``warmup``) of ``body`` captured as one CUDA graph
 * (after one uncaptured run), as a model built with ``cuda_graph=True`` replays its stages. */
std::vector<double> CudaTimeGraph(int32_t device_id, const std::function<void()>& body, int64_t warmup,
                                  int64_t repeat);
#endif

}  // namespace runtime
}  // namespace ios_tvm

#endif  // IOS_TVM_STAGE_STATE_H_
