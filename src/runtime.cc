/*!
 * \file runtime.cc
 * \brief ios_tvm's runtime library: the calls a lowered model makes between kernel launches.
 *
 * A lowered Relax ``main`` brackets every stage with more than one group as
 *
 *   stage_fork(device_type, device_id, num_groups)
 *   stage_switch(device_type, device_id, g)     before the kernels of group g
 *   stage_join(device_type, device_id, ...)     the trailing tensors are the stage's keep-alive
 *
 * On CUDA (device_type 2) the groups run on a pool of non-blocking streams: fork makes every group
 * stream wait on an event recorded on the caller's stream, switch sets TVM's environment stream
 * (what TVM kernels launch on), join makes the caller's stream wait on one event per group stream
 * and restores it. No host synchronization happens inside a run. On CPU (device_type 1) the
 * calls check the same structure and the groups run one after another.
 *
 * Under CUDA-graph capture (ios_tvm.cuda_graph) the calls run once uncaptured and once while
 * capturing, then never again: replays are the graph alone. A stage opens and closes inside one
 * captured function, so no host state of a stage outlives the capture.
 *
 * Global functions live under ``ios_tvm.runtime.``; errors cross into Python as typed exceptions.
 */
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/tvm_ffi.h>

#include <atomic>
#include <sstream>
#include <chrono>
#include <string>
#include <vector>

#include "stage_state.h"

#ifndef IOS_TVM_VERSION
#define IOS_TVM_VERSION "0.0.0-dev"
#endif

namespace ios_tvm {
namespace runtime {

namespace ffi = tvm::ffi;

constexpr int32_t kCPU = 1;   // kDLCPU
constexpr int32_t kCUDA = 2;  // kDLCUDA

static std::atomic<int> g_pool_size{kDefaultPoolSize};
static thread_local StageState g_stage;
static thread_local int64_t g_stages_run = 0;
static thread_local int64_t g_stages_recovered = 0;

/*! \brief Ctrl-C reaches Python between the runs of a long timing, not only after it. */
static void CheckSignals() {
  if (TVMFFIEnvCheckSignals() != 0) throw ffi::EnvErrorAlreadySet();
}

static ffi::String Version() { return ffi::String(IOS_TVM_VERSION); }

static ffi::String BuildInfo() {
  std::string info = "version=" IOS_TVM_VERSION ";cuda=";
#ifdef IOS_TVM_WITH_CUDA
  info += "1";
#else
  info += "0";
#endif
  return ffi::String(info);
}

static int64_t CheckNumStreams(int64_t num_streams, int64_t pool_size) {
  if (num_streams < 1) {
    TVM_FFI_THROW(ValueError) << "num_streams must be >= 1, got " << num_streams;
  }
  if (num_streams > pool_size) {
    TVM_FFI_THROW(ValueError) << "a stage asks for " << num_streams
                              << " concurrent streams but the pool holds " << pool_size
                              << "; lower max_num_groups or call ios_tvm.runtime.set_pool_size";
  }
  return num_streams;
}

static int64_t PoolSize() { return g_pool_size.load(); }

static void SetPoolSize(int64_t n) {
  if (n < 1 || n > kMaxPoolSize) {
    TVM_FFI_THROW(ValueError) << "pool size must be in 1.." << kMaxPoolSize << ", got " << n;
  }
  g_pool_size.store(static_cast<int>(n));
}

static void CheckDevice(int64_t device_type) {
  if (device_type == kCPU) return;
  if (device_type == kCUDA) {
#ifdef IOS_TVM_WITH_CUDA
    if (CudaDeviceCount() <= 0) {
      TVM_FFI_THROW(RuntimeError) << "ios_tvm: no CUDA GPU is visible (no device, or no NVIDIA "
                                     "driver); run the CUDA build of the model on a GPU machine, "
                                     "or build it for the llvm target";
    }
    return;
#else
    TVM_FFI_THROW(RuntimeError) << "ios_tvm's runtime library was built without CUDA; reinstall "
                                   "ios_tvm on a machine with the CUDA toolkit to run CUDA models";
#endif
  }
  TVM_FFI_THROW(ValueError) << "ios_tvm: unsupported device type " << device_type
                            << " (1 = CPU, 2 = CUDA)";
}

static void JoinOpenStage();

static void StageFork(int64_t device_type, int64_t device_id, int64_t num_groups) {
  if (g_stage.open) {
    // A run stopped between fork and join (an exception in a kernel or a packed function,
    // Ctrl-C): close its stage here (the caller's stream waits for its groups and is restored),
    // or every later run on this thread would fail. A lowering that nested stages would still
    // fail, at its second join ("outside a stage").
    JoinOpenStage();
    ++g_stages_recovered;
  }
  CheckDevice(device_type);
  CheckNumStreams(num_groups, g_pool_size.load());
  StageState st;
  st.open = true;
  st.device_type = static_cast<int32_t>(device_type);
  st.device_id = static_cast<int32_t>(device_id);
  st.num_groups = static_cast<int>(num_groups);
#ifdef IOS_TVM_WITH_CUDA
  if (device_type == kCUDA) {
    st.device_id = CudaResolveDevice(st.device_id);
    CudaFork(&st);
  }
#endif
  g_stage = st;
}

static void StageSwitch(int64_t device_type, int64_t device_id, int64_t group) {
  (void)device_id;
  if (!g_stage.open) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: stage_switch outside a stage (missing stage_fork)";
  }
  if (device_type != g_stage.device_type) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: stage_switch for device type " << device_type
                                << " inside a stage of device type " << g_stage.device_type;
  }
  if (group < 0 || group >= g_stage.num_groups) {
    TVM_FFI_THROW(IndexError) << "ios_tvm: group " << group << " outside 0.." << g_stage.num_groups - 1;
  }
#ifdef IOS_TVM_WITH_CUDA
  if (device_type == kCUDA) CudaSwitch(&g_stage, static_cast<int>(group));
#endif
  g_stage.current_group = static_cast<int>(group);
}

static void JoinOpenStage() {
#ifdef IOS_TVM_WITH_CUDA
  if (g_stage.device_type == kCUDA) CudaJoin(&g_stage);
#endif
  g_stage = StageState();
  ++g_stages_run;
}

static void StageJoin(ffi::PackedArgs args, ffi::Any* rv) {
  if (args.size() < 2) {
    TVM_FFI_THROW(TypeError) << "ios_tvm: stage_join(device_type, device_id, *tensors)";
  }
  int64_t device_type = args[0].cast<int64_t>();
  if (!g_stage.open) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: stage_join outside a stage (missing stage_fork)";
  }
  if (device_type != g_stage.device_type) {
    TVM_FFI_THROW(RuntimeError) << "ios_tvm: stage_join for device type " << device_type
                                << " inside a stage of device type " << g_stage.device_type;
  }
  // args[2:] are the stage's tensors: taking them keeps them alive (and their memory unshared)
  // until here in the memory planner's view; nothing to do with them at run time.
  JoinOpenStage();
  *rv = ffi::Any(nullptr);
}

/*!
 * \brief Time a candidate stage exactly as a lowered model runs it.
 *
 * \param groups kernels per group (host functions of the compiled module, launching on the
 *        environment stream), \param args their arguments, same nesting.
 * \return seconds of each of ``repeat`` runs after ``warmup`` runs. One-group stages run
 *         without fork/join, as in the lowered model. CPU: wall clock; CUDA: events on the
 *         caller's stream (no host synchronization inside a run). With ``graph``: see
 *         time_stage_graph.
 */
static ffi::Array<double> TimeStageIn(bool graph, int64_t device_type, int64_t device_id,
                                      ffi::Array<ffi::Array<ffi::Function>> groups,
                                      ffi::Array<ffi::Array<ffi::Array<ffi::Any>>> args,
                                      int64_t warmup, int64_t repeat) {
  if (groups.size() != args.size()) {
    TVM_FFI_THROW(ValueError) << "time_stage: " << groups.size() << " groups but " << args.size()
                              << " argument groups";
  }
  if (groups.empty()) TVM_FFI_THROW(ValueError) << "time_stage: empty stage";
  if (repeat < 1 || warmup < 0) {
    TVM_FFI_THROW(ValueError) << "time_stage: need repeat >= 1 and warmup >= 0";
  }
  CheckDevice(device_type);
  std::vector<std::vector<std::vector<ffi::AnyView>>> views(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].size() != args[g].size()) {
      TVM_FFI_THROW(ValueError) << "time_stage: group " << g << " has " << groups[g].size()
                                << " kernels but " << args[g].size() << " argument lists";
    }
    for (const auto& call_args : args[g]) {
      std::vector<ffi::AnyView> v;
      for (const auto& a : call_args) v.emplace_back(a);
      views[g].push_back(std::move(v));
    }
  }
  const bool concurrent = groups.size() > 1;
  auto run_once = [&]() {
    if (concurrent) StageFork(device_type, device_id, static_cast<int64_t>(groups.size()));
    try {
      for (size_t g = 0; g < groups.size(); ++g) {
        if (concurrent) StageSwitch(device_type, device_id, static_cast<int64_t>(g));
        for (size_t k = 0; k < groups[g].size(); ++k) {
          ffi::Any rv;
          groups[g][k].CallPacked(views[g][k].data(), static_cast<int32_t>(views[g][k].size()), &rv);
        }
      }
    } catch (...) {
      if (concurrent && g_stage.open) JoinOpenStage();  // a failed kernel leaves no stage open
      throw;
    }
    if (concurrent) JoinOpenStage();
  };
  ffi::Array<double> out;
  if (graph) {
    if (device_type != kCUDA) {
      TVM_FFI_THROW(ValueError) << "time_stage_graph: CUDA graphs need a CUDA device (device type 2), got "
                                << device_type;
    }
#ifdef IOS_TVM_WITH_CUDA
    for (double t : CudaTimeGraph(static_cast<int32_t>(device_id), run_once, warmup, repeat)) out.push_back(t);
#endif
    return out;
  }
  for (int64_t i = 0; i < warmup; ++i) {
    CheckSignals();
    run_once();
  }
  for (int64_t i = 0; i < repeat; ++i) {
    CheckSignals();
#ifdef IOS_TVM_WITH_CUDA
    if (device_type == kCUDA) {
      out.push_back(CudaTime(static_cast<int32_t>(device_id), run_once));
      continue;
    }
#endif
    auto t0 = std::chrono::steady_clock::now();
    run_once();
    auto t1 = std::chrono::steady_clock::now();
    out.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  return out;
}

static ffi::Array<double> TimeStage(int64_t device_type, int64_t device_id,
                                    ffi::Array<ffi::Array<ffi::Function>> groups,
                                    ffi::Array<ffi::Array<ffi::Array<ffi::Any>>> args,
                                    int64_t warmup, int64_t repeat) {
  return TimeStageIn(false, device_type, device_id, groups, args, warmup, repeat);
}

/*!
 * \brief time_stage for a model built with ``cuda_graph=True``: the stage (fork, kernels on their
 * streams, join) is run once, captured as one CUDA graph, and its replays are timed (``warmup``
 * replays first). CUDA only.
 */
static ffi::Array<double> TimeStageGraph(int64_t device_type, int64_t device_id,
                                         ffi::Array<ffi::Array<ffi::Function>> groups,
                                         ffi::Array<ffi::Array<ffi::Array<ffi::Any>>> args,
                                         int64_t warmup, int64_t repeat) {
  return TimeStageIn(true, device_type, device_id, groups, args, warmup, repeat);
}

/*!
 * \brief time_stage for callers that can pass only flat arguments (RPC sessions):
 *   time_stage_named(device_type, device_id, warmup, repeat, module, spec, *tensors) -> "t0,t1,..."
 * ``spec`` lists the kernels group by group: groups separated by '|', kernels by ';', each
 * ``name:nargs``; the kernels are looked up in ``module`` (and its imports) and take the next
 * ``nargs`` tensors in order.
 */
static void TimeStageNamed(ffi::PackedArgs args, ffi::Any* rv) {
  if (args.size() < 6) {
    TVM_FFI_THROW(TypeError) << "time_stage_named(device_type, device_id, warmup, repeat, module, spec, *tensors)";
  }
  int64_t device_type = args[0].cast<int64_t>();
  int64_t device_id = args[1].cast<int64_t>();
  int64_t warmup = args[2].cast<int64_t>();
  int64_t repeat = args[3].cast<int64_t>();
  ffi::Module mod = args[4].cast<ffi::Module>();
  std::string spec = args[5].cast<ffi::String>();
  ffi::Array<ffi::Array<ffi::Function>> groups;
  ffi::Array<ffi::Array<ffi::Array<ffi::Any>>> gargs;
  int next = 6;
  std::stringstream gs(spec);
  std::string group;
  while (std::getline(gs, group, '|')) {
    ffi::Array<ffi::Function> fs;
    ffi::Array<ffi::Array<ffi::Any>> as;
    std::stringstream ks(group);
    std::string kernel;
    while (std::getline(ks, kernel, ';')) {
      auto colon = kernel.rfind(':');
      if (colon == std::string::npos) TVM_FFI_THROW(ValueError) << "time_stage_named: bad kernel spec " << kernel;
      std::string name = kernel.substr(0, colon);
      int nargs = std::stoi(kernel.substr(colon + 1));
      ffi::Optional<ffi::Function> f = mod->GetFunction(name, true);
      if (!f.has_value()) TVM_FFI_THROW(ValueError) << "time_stage_named: no kernel " << name << " in the module";
      if (next + nargs > args.size()) TVM_FFI_THROW(ValueError) << "time_stage_named: too few tensors";
      ffi::Array<ffi::Any> a;
      for (int i = 0; i < nargs; ++i) a.push_back(ffi::Any(args[next++]));
      fs.push_back(f.value());
      as.push_back(a);
    }
    groups.push_back(fs);
    gargs.push_back(as);
  }
  if (next != args.size()) TVM_FFI_THROW(ValueError) << "time_stage_named: " << args.size() - next << " unused tensors";
  ffi::Array<double> samples = TimeStage(device_type, device_id, groups, gargs, warmup, repeat);
  std::ostringstream os;
  os.precision(17);
  for (size_t i = 0; i < samples.size(); ++i) os << (i ? "," : "") << samples[i];
  *rv = ffi::String(os.str());
}

/*! \brief Concurrent stages joined on this thread since the library loaded (for tests); CUDA-graph
 * replays join none (the host does not run the stage calls). */
static int64_t StagesRun() { return g_stages_run; }

/*! \brief Stages left open by a run that stopped inside them, closed by the next stage_fork on
 * this thread. */
static int64_t StagesRecovered() { return g_stages_recovered; }

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("ios_tvm.runtime.version", Version)
      .def("ios_tvm.runtime.build_info", BuildInfo)
      .def("ios_tvm.runtime.check_num_streams", CheckNumStreams)
      .def("ios_tvm.runtime.pool_size", PoolSize)
      .def("ios_tvm.runtime.set_pool_size", SetPoolSize)
      .def("ios_tvm.runtime.stage_fork", StageFork)
      .def("ios_tvm.runtime.stage_switch", StageSwitch)
      .def_packed("ios_tvm.runtime.stage_join", StageJoin)
      .def("ios_tvm.runtime.stages_run", StagesRun)
      .def("ios_tvm.runtime.stages_recovered", StagesRecovered)
      .def("ios_tvm.runtime.time_stage", TimeStage)
      .def("ios_tvm.runtime.time_stage_graph", TimeStageGraph)
      .def_packed("ios_tvm.runtime.time_stage_named", TimeStageNamed);
}

}  // namespace runtime
}  // namespace ios_tvm
