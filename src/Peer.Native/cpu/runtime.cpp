// ABI version, per-thread error messages, the thread-count setting and the OpenMP runtime parallel_for may join.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "peer_internal.h"

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#endif

namespace {

thread_local char last_error[1024];  // zero-initialised: "" until a call fails on this thread
std::atomic<int> requested_threads{0};

// CPUs this process may run on: the affinity mask (containers, taskset) rather than all online CPUs.
int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

#if defined(__linux__)
// Path of a loaded GNU OpenMP runtime: libgomp.so.1, or the copy libtorch ships (libgomp-<hash>.so.1).
int find_libgomp(struct dl_phdr_info* info, size_t, void* data) {
  const char* path = info->dlpi_name;
  if (!path || !*path) return 0;
  const char* slash = std::strrchr(path, '/');
  const char* name = slash ? slash + 1 : path;
  if (std::strncmp(name, "libgomp", 7) != 0 || (name[7] != '.' && name[7] != '-')) return 0;
  *static_cast<const char**>(data) = path;
  return 1;
}
#endif

std::atomic<peer::GompParallel> openmp_parallel{nullptr};

}  // namespace

namespace peer {

GompParallel loaded_openmp_parallel() {
#if defined(__linux__)
  if (GompParallel found = openmp_parallel.load(std::memory_order_acquire)) return found;
  static const bool disabled = [] {
    const char* value = std::getenv("PEER_NATIVE_OPENMP");
    return value && std::strcmp(value, "0") == 0;
  }();
  if (disabled) return nullptr;
  // Looked for on each call until found (microseconds): the runtime may be loaded after this library. Never loaded
  // here: RTLD_NOLOAD only takes a reference to one that is already in the process, which also keeps it there.
  const char* path = nullptr;
  dl_iterate_phdr(find_libgomp, &path);
  if (!path) return nullptr;
  void* handle = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return nullptr;
  auto found = reinterpret_cast<GompParallel>(dlsym(handle, "GOMP_parallel"));
  if (!found) {
    dlclose(handle);
    return nullptr;
  }
  GompParallel expected = nullptr;
  if (!openmp_parallel.compare_exchange_strong(expected, found, std::memory_order_acq_rel)) dlclose(handle);
  return openmp_parallel.load(std::memory_order_acquire);
#else
  return nullptr;
#endif
}

int set_error(int status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(last_error, sizeof(last_error), format, args);
  va_end(args);
  return status;
}

int max_threads() {
  const int requested = requested_threads.load(std::memory_order_relaxed);
  if (requested > 0) return requested;
  static const int cpus = available_cpus();
  return cpus;
}

}  // namespace peer

extern "C" {

PEER_API int peer_abi_version(void) { return 3; }

PEER_API const char* peer_last_error(void) { return last_error; }

PEER_API void peer_set_num_threads(int threads) {
  // Capped so a bad value cannot start thousands of threads per call.
  requested_threads.store(threads > 0 ? std::min(threads, 256) : 0, std::memory_order_relaxed);
}

}  // extern "C"
