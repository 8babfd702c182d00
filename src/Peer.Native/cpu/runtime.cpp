// ABI version, per-thread error messages and the thread-count setting.
#include <cstdarg>
#include <cstdio>

#include "peer_internal.h"

#if defined(__linux__)
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

}  // namespace

namespace peer {

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

PEER_API int peer_abi_version(void) { return 2; }

PEER_API const char* peer_last_error(void) { return last_error; }

PEER_API void peer_set_num_threads(int threads) {
  // Capped so a bad value cannot start thousands of threads per call.
  requested_threads.store(threads > 0 ? std::min(threads, 256) : 0, std::memory_order_relaxed);
}

}  // extern "C"
