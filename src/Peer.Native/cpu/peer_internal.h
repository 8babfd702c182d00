// Internal helpers shared by the CPU kernels: error reporting, the exception boundary, argument checks and a small
// parallel_for. Not linked against OpenMP on purpose: libtorch in the same process ships its own libgomp, and two
// OpenMP runtimes in one process oversubscribe or clash; parallel_for joins libtorch's when it is loaded.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "peer_native.h"

namespace peer {

// Formats the calling thread's peer_last_error() message and returns `status`. Never allocates, so it is safe while
// handling std::bad_alloc.
int set_error(int status, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Threads a call may use (peer_set_num_threads, else the CPUs this process may run on); always >= 1.
int max_threads();

// Runs `body` (returning a PEER_* status); any C++ exception becomes PEER_INTERNAL_ERROR, so none crosses the C ABI.
template <class Body>
int guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return set_error(PEER_INTERNAL_ERROR, "%s: out of memory (std::bad_alloc)", function);
  } catch (const std::exception& e) {
    return set_error(PEER_INTERNAL_ERROR, "%s: %s", function, e.what());
  } catch (...) {
    return set_error(PEER_INTERNAL_ERROR, "%s: unknown C++ exception", function);
  }
}

#define PEER_REQUIRE(condition, ...)                                                \
  do {                                                                              \
    if (!(condition)) return ::peer::set_error(PEER_INVALID_ARGUMENT, __VA_ARGS__); \
  } while (0)

// a * b without int64 overflow, also bounded so that byte sizes of float/int64 arrays fit; false when too large.
inline bool checked_mul(int64_t a, int64_t b, int64_t* product) {
  int64_t p;
  if (__builtin_mul_overflow(a, b, &p) || p > (INT64_MAX / 16)) return false;
  *product = p;
  return true;
}

// Workers worth starting for `count` items handed out in chunks of `grain`.
inline int worker_count(int64_t count, int64_t grain) {
  const int64_t chunks = (count + grain - 1) / std::max<int64_t>(grain, 1);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), chunks)));
}

// GOMP_parallel(fn, data, num_threads, flags) of a GNU OpenMP runtime that something else (libtorch) has already loaded
// into this process, or null when there is none or PEER_NATIVE_OPENMP=0. See parallel_for.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
GompParallel loaded_openmp_parallel();

// Calls fn(lo, hi, worker) over [0, count) in chunks of `grain`, handed out dynamically to `workers` threads (the
// caller is worker 0). Each chunk's result must not depend on which worker runs it, so results are the same for any
// thread count; `worker` (unique per thread, < workers) only selects per-thread scratch. The first exception is
// rethrown on the caller.
//
// Where libtorch's libgomp is loaded (the .NET process), the chunks run on its thread team: after each torch op its
// workers spin-wait for the next parallel region (libgomp's default wait policy) and would otherwise keep a core from
// threads of our own for milliseconds; joining the region they wait for puts them to work instead. This loads no
// OpenMP runtime of its own, so there are never two in the process. Elsewhere threads are started per call (a few
// tens of microseconds, small next to these kernels), so nothing outlives the call or needs shutting down at exit;
// if a thread cannot be started the others pick up its chunks.
template <class Fn>
void parallel_for(int64_t count, int64_t grain, int workers, Fn&& fn) {
  if (count <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (workers <= 1 || count <= grain) {
    fn(int64_t{0}, count, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (;;) {
        const int64_t lo = next.fetch_add(grain, std::memory_order_relaxed);
        if (lo >= count) break;
        fn(lo, std::min(lo + grain, count), worker);
      }
    } catch (...) {
      errors[static_cast<size_t>(worker)] = std::current_exception();
      next.store(count, std::memory_order_relaxed);  // stop handing out work
    }
  };
  if (GompParallel gomp_parallel = loaded_openmp_parallel()) {
    // The team may be smaller than asked for; ids come from a counter so each thread's is unique and < workers.
    using Run = decltype(run);
    struct Region {
      Run* body;
      std::atomic<int> next_worker;
    } region{&run, {0}};
    gomp_parallel(
        [](void* data) {
          auto* r = static_cast<Region*>(data);
          (*r->body)(r->next_worker.fetch_add(1, std::memory_order_relaxed));
        },
        &region, static_cast<unsigned>(workers), 0);
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    try {
      threads.emplace_back(run, w);
    } catch (const std::system_error&) {
      break;  // out of threads: fewer workers share the same chunks
    }
  }
  run(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Dot product with 32 independent partial sums: GCC vectorises this without -ffast-math (no reassociation needed),
// and the fixed combination order keeps results deterministic.
inline float dot(const float* __restrict a, const float* __restrict b, int64_t d) {
  constexpr int L = 32;
  float acc[L] = {};
  int64_t i = 0;
  for (; i + L <= d; i += L)
    for (int l = 0; l < L; ++l) acc[l] += a[i + l] * b[i + l];
  for (int l = 0; i < d; ++i, ++l) acc[l] += a[i] * b[i];
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// y += alpha * v
inline void axpy(float* __restrict y, float alpha, const float* __restrict v, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] += alpha * v[i];
}

// bfloat16 is the upper half of an IEEE float: widening is exact, so a bf16 row gives the same products and sums as
// the fp32 row holding the same values, in the same order (the bf16 kernels equal the fp32 ones on widened tables).
inline float bf16_to_float(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// 32-bit integer hash (Wellons' two-multiply xorshift finaliser, "lowbias32"): cheap, vectorisable (uint32
// multiplies) and well mixed, so consecutive inputs give independent-looking outputs. Stochastic rounding's noise.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Key of one row's update for stochastic rounding: a function of (seed, row, step) only, so a run is reproducible given
// the seed whatever the thread count, and each step of each row draws fresh noise. Element noise is then
// h = mix32(key ^ column), split three ways (see the bf16 update_row in optimizer.cpp).
inline uint32_t stochastic_row_key(uint64_t seed, int64_t row, int64_t step) {
  return mix32(static_cast<uint32_t>(seed) ^
               mix32(static_cast<uint32_t>(seed >> 32) ^
                     mix32(static_cast<uint32_t>(row) ^ mix32(static_cast<uint32_t>(step)))));
}

// fp32 -> bf16 with stochastic rounding, given 16 random bits r in [0, 65535]: adding r to the bit pattern carries
// into the kept half with probability (discarded bits) / 2^16, so a finite value's magnitude rounds up with
// probability equal to the discarded fraction and the result is unbiased (round-to-nearest would wipe out updates
// smaller than half a bf16 ulp, which AdamW's are for most weights). Inf stays Inf (no carry out of a zero fraction);
// NaN becomes the quiet NaN 0x7FC0 with its sign, since the carry could turn it into Inf or wrap it to zero.
// Branch-free (the NaN pattern, sign | 0x7FC00000, takes no carry from r; f != f holds as no -ffast-math is used) so
// that row loops vectorise.
inline uint16_t float_to_bf16_stochastic(float f, uint32_t r) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t quiet_nan = (bits | 0x7FC00000u) & 0xFFC00000u;
  return static_cast<uint16_t>(((f != f ? quiet_nan : bits) + r) >> 16);
}

// dot() with a bf16 first operand, accumulated in fp32 in dot()'s order.
inline float dot(const uint16_t* __restrict a, const float* __restrict b, int64_t d) {
  constexpr int L = 32;
  float acc[L] = {};
  int64_t i = 0;
  for (; i + L <= d; i += L)
    for (int l = 0; l < L; ++l) acc[l] += bf16_to_float(a[i + l]) * b[i + l];
  for (int l = 0; i < d; ++i, ++l) acc[l] += bf16_to_float(a[i]) * b[i];
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// y += alpha * v, v in bf16
inline void axpy(float* __restrict y, float alpha, const uint16_t* __restrict v, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] += alpha * bf16_to_float(v[i]);
}

// Prefetches the `bytes` at p. Expert rows are random, so the hardware prefetcher cannot see them coming, and each
// is read once per use: non-temporal, to keep caches for what is reused (measured ~15% faster than prefetcht0 here).
inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 0);
}

// Same for a row about to be updated in place (fetched for writing).
inline void prefetch_row_for_write(void* p, int64_t bytes) {
  char* c = static_cast<char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 1, 3);
}

}  // namespace peer
