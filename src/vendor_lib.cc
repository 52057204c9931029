/*!
 * \file vendor_lib.cc
 * \brief Finding and opening the vendor libraries (cuDNN 9, cuBLASLt 13) at run time.
 *
 * Built always (it needs neither CUDA nor the libraries' headers), so the lookup and its
 * messages are the same on every machine and testable without a GPU. Without the vendor module
 * (no headers at build time) ``ios_tvm.vendor.conv2d`` / ``matmul`` are registered too, and say
 * how to get a runtime that has them.
 */
#include <dlfcn.h>
#include <tvm/ffi/tvm_ffi.h>

#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "vendor.h"

namespace ios_tvm {
namespace vendor {

namespace ffi = tvm::ffi;

namespace {

struct LibSpec {
  const char* name;        // for messages
  const char* soname;      // what dlopen looks for
  const char* version_fn;  // size_t (*)(void)
  long min_version;        // inclusive
  long max_version;        // exclusive
  const char* install;     // what to install
  const char* fallback;    // another soname taken when ``soname`` is nowhere (or null)
  long fallback_min;       // its versions: [fallback_min, min_version)
};

// cuBLASLt 12 (what PyTorch for CUDA 12 brings) has every function and enum value ios_tvm calls,
// with the same signatures: it is taken where no cuBLASLt 13 is found.
const LibSpec kSpecs[] = {
    {"cuDNN 9", "libcudnn.so.9", "cudnnGetVersion", 90000, 100000, "pip install nvidia-cudnn-cu13", nullptr, 0},
    {"cuBLASLt 13", "libcublasLt.so.13", "cublasLtGetVersion", 130000, 140000, "pip install nvidia-cublas",
     "libcublasLt.so.12", 120000},
};

struct Opened {
  void* handle = nullptr;
  std::string path;
  long version = 0;
};

std::mutex g_mutex;
std::vector<std::string> g_dirs;  // registered from Python: nvidia/*/lib folders of installed packages
Opened g_opened[2];

const LibSpec& SpecOf(Lib lib) { return kSpecs[static_cast<int>(lib)]; }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/*! \brief Candidate file for ``soname`` from a search entry: the file itself, or the entry as a folder. */
std::string Candidate(const std::string& entry, const char* soname) {
  if (EndsWith(entry, std::string("/") + soname) || entry == soname) return entry;
  return entry + (EndsWith(entry, "/") ? "" : "/") + soname;
}

void* TryOpen(const std::string& path, std::vector<std::string>* tried, std::string* why) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* err = dlerror();
    tried->push_back(path);
    std::string e = err ? err : "";
    // a file that exists but fails to load is worth reporting; "No such file" is the common case
    if (e.find("No such file") == std::string::npos && e.find("cannot open shared object") == std::string::npos) {
      *why += "\n  " + e;
    }
  }
  return h;
}

std::string PathOf(void* handle, const char* symbol, const std::string& fallback) {
  void* sym = dlsym(handle, symbol);
  Dl_info info;
  if (sym != nullptr && dladdr(sym, &info) != 0 && info.dli_fname != nullptr) return info.dli_fname;
  return fallback;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out.empty() ? "(none)" : out;
}

/*! \brief ``soname`` from the search order: the environment, a loaded copy, the packages, the system. */
void* Search(const char* soname, const char* env, std::vector<std::string>* tried, std::string* why) {
  void* h = nullptr;
  if (env != nullptr) {
    for (const auto& entry : Split(env, ':')) {
      if ((h = TryOpen(Candidate(entry, soname), tried, why)) != nullptr) return h;
    }
  }
  h = dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);  // a copy already in the process (PyTorch's)
  if (h != nullptr) return h;
  dlerror();
  for (const auto& dir : g_dirs) {
    if ((h = TryOpen(Candidate(dir, soname), tried, why)) != nullptr) return h;
  }
  return TryOpen(soname, tried, why);
}

Opened OpenLocked(Lib lib) {
  const LibSpec& spec = SpecOf(lib);
  std::vector<std::string> tried;
  std::string why;
  const char* env = std::getenv("IOS_TVM_VENDOR_LIB_PATH");
  void* h = Search(spec.soname, env, &tried, &why);
  long min_version = spec.min_version;
  if (h == nullptr && spec.fallback != nullptr) {
    h = Search(spec.fallback, env, &tried, &why);
    min_version = spec.fallback_min;
  }
  if (h == nullptr) {
    std::ostringstream os;
    os << spec.name << " (" << spec.soname << ") was not found; ios_tvm's vendor kernels (kernels='vendor' or "
       << "'auto') load it at run time. Looked in: $IOS_TVM_VENDOR_LIB_PATH ("
       << (env ? env : "unset") << "), the nvidia/ folders of installed Python packages (" << Join(g_dirs)
       << "), then the system's library path. Install it (" << spec.install
       << ", or pip install 'ios-tvm[vendor]'), set IOS_TVM_VENDOR_LIB_PATH to the folder holding "
       << spec.soname << ", or build the model with kernels='tvm'." << why;
    Throw("MissingDependencyError", os.str());
  }
  using VersionFn = size_t (*)();
  auto version_fn = reinterpret_cast<VersionFn>(dlsym(h, spec.version_fn));
  std::string path = PathOf(h, spec.version_fn, spec.soname);
  if (version_fn == nullptr) {
    dlerror();
    Throw("MissingDependencyError", std::string(path) + " is not " + spec.name + " (it has no " + spec.version_fn +
                                        "); " + spec.install + ", or point IOS_TVM_VENDOR_LIB_PATH at a real copy");
  }
  long version = static_cast<long>(version_fn());
  if (version < min_version || version >= spec.max_version) {
    std::ostringstream os;
    os << path << " is version " << version << ", and ios_tvm needs " << spec.name << " (versions "
       << min_version << " to " << spec.max_version - 1 << "): " << spec.install;
    Throw("MissingDependencyError", os.str());
  }
  return Opened{h, path, version};
}

}  // namespace

void Throw(const std::string& kind, const std::string& message) {
  throw ffi::Error("ios_tvm." + kind, "ios_tvm: " + message, TVMFFIBacktrace(__FILE__, __LINE__, "", 0));
}

void* Open(Lib lib) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Opened& slot = g_opened[static_cast<int>(lib)];
  if (slot.handle == nullptr) slot = OpenLocked(lib);
  return slot.handle;
}

void* Symbol(Lib lib, const char* name) {
  void* h = Open(lib);
  void* sym = dlsym(h, name);
  if (sym == nullptr) {
    dlerror();
    const LibSpec& spec = SpecOf(lib);
    Throw("MissingDependencyError", std::string(spec.name) + " at " + g_opened[static_cast<int>(lib)].path +
                                        " has no function " + name + ": install a current release (" +
                                        spec.install + ")");
  }
  return sym;
}

namespace {

Lib LibOf(int64_t which) {
  if (which != 0 && which != 1) {
    TVM_FFI_THROW(ValueError) << "ios_tvm.vendor: library 0 (cuDNN) or 1 (cuBLASLt), got " << which;
  }
  return static_cast<Lib>(which);
}

void SetSearchDirs(ffi::Array<ffi::String> dirs) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_dirs.clear();
  for (const auto& d : dirs) g_dirs.push_back(std::string(d));
}

ffi::Array<ffi::String> SearchDirs() {
  std::lock_guard<std::mutex> lock(g_mutex);
  ffi::Array<ffi::String> out;
  for (const auto& d : g_dirs) out.push_back(ffi::String(d));
  return out;
}

/*! \brief Open library ``which`` and return ``[path, version]`` (raises what to install). */
ffi::Array<ffi::Any> FindLibrary(int64_t which) {
  Lib lib = LibOf(which);
  Open(lib);
  std::lock_guard<std::mutex> lock(g_mutex);
  const Opened& o = g_opened[static_cast<int>(lib)];
  return ffi::Array<ffi::Any>{ffi::String(o.path), static_cast<int64_t>(o.version)};
}

bool Compiled() {
#ifdef IOS_TVM_WITH_VENDOR
  return true;
#else
  return false;
#endif
}

#ifndef IOS_TVM_WITH_VENDOR
void NotCompiled(ffi::PackedArgs, ffi::Any*) {
  Throw("MissingDependencyError",
        "this build of ios_tvm's runtime library has no vendor kernels (cuDNN / cuBLASLt headers and the CUDA "
        "toolkit were not found when it was built): pip install 'ios-tvm[vendor]' (the header packages "
        "nvidia-cudnn-cu13 and nvidia-cublas), then rebuild it (pip install . or cmake --build build), or build "
        "the model with kernels='tvm'");
}
#endif

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("ios_tvm.vendor.set_search_dirs", SetSearchDirs)
      .def("ios_tvm.vendor.search_dirs", SearchDirs)
      .def("ios_tvm.vendor.find_library", FindLibrary)
      .def("ios_tvm.vendor.compiled", Compiled);
#ifndef IOS_TVM_WITH_VENDOR
  refl::GlobalDef()
      .def_packed("ios_tvm.vendor.conv2d", NotCompiled)
      .def_packed("ios_tvm.vendor.matmul", NotCompiled);
#endif
}

}  // namespace vendor
}  // namespace ios_tvm
