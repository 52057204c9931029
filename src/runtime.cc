/*!
 * \file runtime.cc
 * \brief ios_tvm's runtime library: what the lowered models call between kernel launches.
 *
 * Global functions are registered under the ``ios_tvm.runtime.`` namespace and are reached from
 * Python through ``ios_tvm._ffi_api`` (and from Relax through ``R.call_packed``).
 */
#include <tvm/ffi/tvm_ffi.h>

#include <string>

#ifndef IOS_TVM_VERSION
#define IOS_TVM_VERSION "0.0.0-dev"
#endif

namespace ios_tvm {
namespace runtime {

namespace ffi = tvm::ffi;

/*! \brief The version of this library (it must match the Python package). */
static ffi::String Version() { return ffi::String(IOS_TVM_VERSION); }

/*! \brief Build facts of this library, as "key=value" pairs separated by ';'. */
static ffi::String BuildInfo() {
  std::string info = "version=" IOS_TVM_VERSION ";cuda=";
#ifdef IOS_TVM_WITH_CUDA
  info += "1";
#else
  info += "0";
#endif
  return ffi::String(info);
}

/*! \brief Check a stream count against a pool size; a typed error crosses into Python. */
static int64_t CheckNumStreams(int64_t num_streams, int64_t pool_size) {
  if (num_streams < 1) {
    TVM_FFI_THROW(ValueError) << "num_streams must be >= 1, got " << num_streams;
  }
  if (num_streams > pool_size) {
    TVM_FFI_THROW(ValueError) << "a stage asks for " << num_streams
                              << " concurrent streams but the pool holds " << pool_size
                              << "; lower max_num_groups or enlarge the pool";
  }
  return num_streams;
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("ios_tvm.runtime.version", Version)
      .def("ios_tvm.runtime.build_info", BuildInfo)
      .def("ios_tvm.runtime.check_num_streams", CheckNumStreams);
}

}  // namespace runtime
}  // namespace ios_tvm
